//! The gateway's configuration: flags for local runs, `GATEWAY_*` environment variables in the
//! cluster, every default visible here; and the [`Settings`] validated from it once, before any
//! port is bound, holding every parsed and derived value the gateway uses.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use authn::tls::ClientTls;
use axum::http::{HeaderValue, Uri};
use clap::Parser;
use ipnet::IpNet;
use secrecy::{ExposeSecret as _, SecretString};
use settings::ConfigError;
use tonic::metadata::AsciiMetadataValue;

use crate::{backend::Target, client_addr::ForwardedHeader};

#[derive(Clone, Debug, Parser)]
#[command(
    name = "gateway",
    about = "HTTP/JSON gateway in front of auth-service and resource-service"
)]
pub struct Config {
    /// Where the HTTP server listens.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Where Prometheus scrapes `/metrics` (its own port, never the API's); unset: no metrics.
    #[arg(long, env = "GATEWAY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Threads that run the HTTP server and its calls to the backends (tokio workers); unset: one
    /// per CPU the process may use (affinity mask and cgroup CPU quota); 1 runs everything on the
    /// main thread. Fewer cost less CPU per request where other busy processes share the CPUs;
    /// deploy/ sets one per CPU the pod requests.
    #[arg(
        long,
        env = "GATEWAY_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(settings::MAX_WORKER_THREADS))
    )]
    pub worker_threads: Option<u16>,

    /// auth-service replicas: comma-separated URLs; a host name is re-resolved periodically and
    /// each address it yields is one replica (a Kubernetes headless Service).
    #[arg(
        long,
        env = "GATEWAY_AUTH_URL",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub auth_urls: Vec<String>,

    /// resource-service replicas, in the same form as the auth-service URLs.
    #[arg(
        long,
        env = "GATEWAY_RESOURCE_URL",
        default_value = "http://127.0.0.1:50052",
        value_delimiter = ','
    )]
    pub resource_urls: Vec<String>,

    /// The PEM CA certificates that `https://` auth-service and resource-service URLs'
    /// certificates must come from (checked against the URL's host name). Needed by `https://`
    /// URLs.
    #[arg(long, env = "GATEWAY_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// Origins allowed to call the API from a browser (comma-separated; `*` for any). Empty means
    /// same-origin only, which is all the bundled page needs.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Origins, besides the gateway's own, whose pages may spend the refresh-token cookie
    /// (comma-separated, like the CORS origins; `*` is refused). The gateway's own origin is the
    /// one whose host and port are the request's `Host`.
    #[arg(long, env = "GATEWAY_COOKIE_ORIGINS", value_delimiter = ',')]
    pub cookie_origins: Vec<String>,

    /// Proxies whose forwarded-client header is believed (comma-separated IPs or CIDRs). Empty
    /// means none: the client address is always the TCP peer.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// A secret sent with every client address the gateway forwards to auth-service and
    /// resource-service (as `x-forwarding-secret`), proving it is the gateway: set the same in
    /// their `AUTH_FORWARDING_SECRET` and `RESOURCE_FORWARDING_SECRET`. At least 32 printable
    /// ASCII characters.
    #[arg(long, env = "GATEWAY_FORWARDING_SECRET", hide_env_values = true)]
    pub forwarding_secret: Option<SecretString>,

    /// A file holding the forwarding secret, instead of `GATEWAY_FORWARDING_SECRET`.
    #[arg(long, env = "GATEWAY_FORWARDING_SECRET_FILE")]
    pub forwarding_secret_file: Option<PathBuf>,

    /// The one header those proxies maintain: `x-forwarded-for` or `forwarded` (RFC 7239).
    /// The other is never read, since a proxy passes it through as the client wrote it.
    #[arg(
        long,
        env = "GATEWAY_FORWARDED_HEADER",
        value_enum,
        default_value = "x-forwarded-for"
    )]
    pub forwarded_header: ForwardedHeader,

    /// Longest time a request may take end to end, backend retries included.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "GATEWAY_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// How often each replica's grpc.health.v1 status is checked and host names re-resolved.
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// How long to wait for a connection to a replica before trying another.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Largest total size of a request's headers (names and values), in bytes; beyond it the
    /// answer is 431. Access tokens have their own, smaller limit.
    #[arg(long, env = "GATEWAY_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// How long a client may take to send a request's headers, and to start the next request on
    /// a kept-alive connection; then the connection is closed.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Most client connections open at once; further ones wait in the listen backlog.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// The tokens' issuer (`iss`), which is also this gateway's public base URL: the OAuth 2.0
    /// metadata names it and puts the token, introspection and key endpoints under it. Set it to
    /// auth-service's AUTH_TOKEN_ISSUER. An absolute http(s) URL without query or fragment.
    #[arg(long, env = "GATEWAY_TOKEN_ISSUER", default_value_t = token::Audience::default().issuer)]
    pub token_issuer: String,
}

#[cfg(any(test, feature = "test-util"))]
impl Config {
    /// A gateway on a random local port in front of the given replicas, checking health often so
    /// tests see a stopped replica dropped quickly.
    pub fn for_tests(auth_urls: Vec<String>, resource_urls: Vec<String>) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            worker_threads: None,
            auth_urls,
            resource_urls,
            tls_ca_file: None,
            cors_origins: Vec::new(),
            cookie_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarding_secret: None,
            forwarding_secret_file: None,
            forwarded_header: ForwardedHeader::XForwardedFor,
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            health_interval: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            token_issuer: token::Audience::default().issuer,
        }
    }
}

/// The configuration once validated: what the gateway runs on.
#[derive(Clone, Debug)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Never empty.
    pub auth_targets: Vec<Target>,
    /// Never empty.
    pub resource_targets: Vec<Target>,
    /// The CA of `https://` targets; set when any target is `https://`.
    pub tls: Option<ClientTls>,
    pub cors: Cors,
    /// Besides the request's own origin, the origins that may spend the refresh cookie.
    pub cookie_origins: Vec<HeaderValue>,
    pub trusted_proxies: Vec<IpNet>,
    /// `x-forwarding-secret`, marked sensitive: redacted in Debug output and never put in
    /// HTTP/2's header compression table.
    pub forwarding_secret: Option<AsciiMetadataValue>,
    pub forwarded_header: ForwardedHeader,
    /// Never zero.
    pub request_timeout: Duration,
    /// Never zero.
    pub body_limit: usize,
    /// Never zero.
    pub health_interval: Duration,
    /// Never zero.
    pub connect_timeout: Duration,
    /// At least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Never zero.
    pub header_read_timeout: Duration,
    /// Never zero.
    pub max_connections: usize,
    /// An absolute http(s) URL without query or fragment, exactly as configured (it must equal
    /// the tokens' `iss`).
    pub token_issuer: String,
}

/// `GATEWAY_FORWARDING_SECRET` as the metadata value every forwarded client address goes with.
fn forwarding_secret(
    value: Option<SecretString>,
    file: Option<&std::path::Path>,
) -> Result<Option<AsciiMetadataValue>, ConfigError> {
    let Some(secret) = settings::forwarding_secret(
        value,
        file,
        "GATEWAY_FORWARDING_SECRET",
        "GATEWAY_FORWARDING_SECRET_FILE",
    )?
    else {
        return Ok(None);
    };
    // Printable ASCII (checked above) is always a valid metadata value.
    let mut value: AsciiMetadataValue = secret.expose_secret().parse().map_err(|_| {
        ConfigError::new(
            "GATEWAY_FORWARDING_SECRET",
            "is not a valid gRPC metadata value",
        )
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A header limit below this would refuse ordinary browser requests carrying a full-size token.
pub const MIN_HEADER_BYTES: usize = 12 * 1024;

/// Which browser origins may call the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all: only the gateway's own page calls the API.
    SameOrigin,
    Any,
    /// Exactly these `scheme://host[:port]` origins, as browsers send them.
    Origins(Vec<HeaderValue>),
}

impl settings::WorkerThreads for Config {
    fn worker_threads(&self) -> Option<std::num::NonZeroUsize> {
        self.worker_threads
            .and_then(|n| std::num::NonZeroUsize::new(n.into()))
    }
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        let tls = config
            .tls_ca_file
            .as_deref()
            .map(ClientTls::from_ca_file)
            .transpose()
            .map_err(|problem| ConfigError::new("GATEWAY_TLS_CA_FILE", problem))?;
        let cors = cors(&config.cors_origins)?;
        let cookie_origins = cookie_origins(&config.cookie_origins)?;
        // A cookie origin is a page on another origin that sends the cookie with
        // `credentials: 'include'`, which browsers refuse beside `Access-Control-Allow-Origin: *`.
        if cors == Cors::Any && !cookie_origins.is_empty() {
            return Err(ConfigError::new(
                "GATEWAY_CORS_ORIGINS",
                "`*` cannot go with GATEWAY_COOKIE_ORIGINS (browsers refuse credentials beside \
                 Access-Control-Allow-Origin: *); list the cookie origins in GATEWAY_CORS_ORIGINS \
                 instead",
            ));
        }
        Ok(Self {
            http_addr: config.http_addr,
            metrics_addr: config.metrics_addr,
            auth_targets: targets(&config.auth_urls, "GATEWAY_AUTH_URL", tls.as_ref())?,
            resource_targets: targets(&config.resource_urls, "GATEWAY_RESOURCE_URL", tls.as_ref())?,
            tls,
            cors,
            cookie_origins,
            trusted_proxies: settings::networks(
                &config.trusted_proxies,
                "GATEWAY_TRUSTED_PROXIES",
            )?,
            forwarding_secret: forwarding_secret(
                config.forwarding_secret,
                config.forwarding_secret_file.as_deref(),
            )?,
            forwarded_header: config.forwarded_header,
            request_timeout: non_zero(config.request_timeout, "GATEWAY_REQUEST_TIMEOUT")?,
            body_limit: match config.body_limit {
                0 => return Err(ConfigError::new("GATEWAY_BODY_LIMIT", "must be above 0")),
                limit => limit,
            },
            health_interval: non_zero(config.health_interval, "GATEWAY_HEALTH_INTERVAL")?,
            connect_timeout: non_zero(config.connect_timeout, "GATEWAY_CONNECT_TIMEOUT")?,
            max_header_bytes: match config.max_header_bytes {
                bytes if bytes < MIN_HEADER_BYTES => {
                    return Err(ConfigError::new(
                        "GATEWAY_MAX_HEADER_BYTES",
                        format!("must be at least {MIN_HEADER_BYTES}"),
                    ));
                }
                bytes => bytes,
            },
            header_read_timeout: non_zero(
                config.header_read_timeout,
                "GATEWAY_HEADER_READ_TIMEOUT",
            )?,
            max_connections: match config.max_connections {
                0 => {
                    return Err(ConfigError::new(
                        "GATEWAY_MAX_CONNECTIONS",
                        "must be above 0",
                    ));
                }
                limit => limit,
            },
            token_issuer: issuer(config.token_issuer)?,
        })
    }
}

/// RFC 8414 §2: the issuer is a URL without query or fragment (http is allowed for local runs).
/// Kept as written, since clients compare it with the tokens' `iss` character for character.
fn issuer(text: String) -> Result<String, ConfigError> {
    let invalid = |why: &str| {
        ConfigError::new(
            "GATEWAY_TOKEN_ISSUER",
            format!("{text:?} {why}; expected an absolute URL like https://api.example"),
        )
    };
    let url = url::Url::parse(&text).map_err(|_| invalid("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid("is not an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("has credentials in it"));
    }
    if text.trim() != text {
        return Err(invalid("has surrounding whitespace"));
    }
    Ok(text)
}

fn targets(
    urls: &[String],
    setting: &'static str,
    tls: Option<&ClientTls>,
) -> Result<Vec<Target>, ConfigError> {
    let targets = urls
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| Target::parse(u).map_err(|e| ConfigError::new(setting, format!("{e:#}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(ConfigError::new(setting, "no URL given"));
    }
    if tls.is_none() && targets.iter().any(Target::is_https) {
        return Err(ConfigError::new(
            "GATEWAY_TLS_CA_FILE",
            format!(
                "{setting} has an https:// URL, and no CA file is set to check its certificate"
            ),
        ));
    }
    Ok(targets)
}

fn cors(origins: &[String]) -> Result<Cors, ConfigError> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(Cors::SameOrigin);
    }
    if origins.contains(&"*") {
        return Ok(Cors::Any);
    }
    origins
        .into_iter()
        .map(|o| origin(o, "GATEWAY_CORS_ORIGINS"))
        .collect::<Result<_, _>>()
        .map(Cors::Origins)
}

/// Exact origins only: a page from any origin spending the cookie is what the check prevents.
fn cookie_origins(origins: &[String]) -> Result<Vec<HeaderValue>, ConfigError> {
    origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| origin(o, "GATEWAY_COOKIE_ORIGINS"))
        .collect()
}

/// A browser's `Origin` is `scheme://host[:port]` with nothing after it, so anything else could
/// never match and is a mistake worth stopping for.
fn origin(text: &str, setting: &'static str) -> Result<HeaderValue, ConfigError> {
    let invalid = || {
        ConfigError::new(
            setting,
            format!("{text:?} is not an origin like https://app.example"),
        )
    };
    let uri: Uri = text.parse().map_err(|_| invalid())?;
    let bare = uri.scheme().is_some()
        && uri.authority().is_some()
        && uri.path() == "/"
        && uri.query().is_none()
        && !text.ends_with('/');
    if !bare {
        return Err(invalid());
    }
    HeaderValue::from_str(text).map_err(|_| invalid())
}

fn non_zero(duration: Duration, setting: &'static str) -> Result<Duration, ConfigError> {
    if duration.is_zero() {
        return Err(ConfigError::new(setting, "must be longer than 0s"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let args = std::iter::once("gateway").chain(args.iter().copied());
        Settings::try_from(Config::try_parse_from(args).unwrap())
    }

    #[test]
    fn defaults_match_the_documented_ports() {
        let config = Config::try_parse_from(["gateway"]).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.auth_urls, ["http://127.0.0.1:50051"]);
        assert_eq!(config.resource_urls, ["http://127.0.0.1:50052"]);
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn url_lists_split_on_commas() {
        let config = Config::try_parse_from([
            "gateway",
            "--resource-urls",
            "http://127.0.0.1:50052,http://127.0.0.1:50062",
            "--request-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(config.resource_urls.len(), 2);
        assert_eq!(config.request_timeout, Duration::from_secs(3));
    }

    #[test]
    fn the_defaults_are_valid_settings() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.auth_targets.len(), 1);
        assert_eq!(settings.cors, Cors::SameOrigin);
        assert!(settings.trusted_proxies.is_empty());
    }

    #[test]
    fn a_bad_backend_url_names_its_setting() {
        let error = settings(&["--resource-urls", "ftp://x:1"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_RESOURCE_URL");
        let error = settings(&["--auth-urls", " , "]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_AUTH_URL");
    }

    #[test]
    fn an_https_url_needs_a_readable_ca_file() {
        let error = settings(&["--auth-urls", "https://auth:50051"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_TLS_CA_FILE");
        let args = [
            "--auth-urls",
            "https://auth:50051",
            "--tls-ca-file",
            "/nonexistent/ca.pem",
        ];
        let error = settings(&args).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_TLS_CA_FILE");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let parsed = settings(&["--trusted-proxies", "10.0.0.0/8, 192.0.2.1,::1"]).unwrap();
        let expected: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(parsed.trusted_proxies, expected);
        let error = settings(&["--trusted-proxies", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_TRUSTED_PROXIES");
    }

    #[test]
    fn the_forwarding_secret_is_checked_and_never_printed() {
        let secret = "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0";
        let parsed = settings(&["--forwarding-secret", secret]).unwrap();
        assert_eq!(parsed.forwarding_secret.as_ref().unwrap(), secret);
        assert!(!format!("{parsed:?}").contains(secret));
        let error = settings(&["--forwarding-secret", "short"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_FORWARDING_SECRET");
        assert!(!error.to_string().contains("short"), "{error}");
    }

    #[test]
    fn cors_origins_are_any_or_exact_origins() {
        assert_eq!(settings(&["--cors-origins", "*"]).unwrap().cors, Cors::Any);
        let listed = settings(&[
            "--cors-origins",
            "https://app.example,http://localhost:3000",
        ]);
        assert_eq!(
            listed.unwrap().cors,
            Cors::Origins(vec![
                HeaderValue::from_static("https://app.example"),
                HeaderValue::from_static("http://localhost:3000"),
            ])
        );
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/x",
        ] {
            let error = settings(&["--cors-origins", bad]).unwrap_err();
            assert_eq!(error.setting, "GATEWAY_CORS_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn cookie_origins_are_exact_origins() {
        assert!(settings(&[]).unwrap().cookie_origins.is_empty());
        let listed = settings(&["--cookie-origins", "https://app.example"]).unwrap();
        assert_eq!(listed.cookie_origins, ["https://app.example"]);
        for bad in ["*", "app.example", "https://app.example/"] {
            let error = settings(&["--cookie-origins", bad]).unwrap_err();
            assert_eq!(error.setting, "GATEWAY_COOKIE_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn any_cors_origin_is_refused_beside_cookie_origins() {
        let error = settings(&[
            "--cors-origins",
            "*",
            "--cookie-origins",
            "https://app.example",
        ])
        .unwrap_err();
        assert_eq!(error.setting, "GATEWAY_CORS_ORIGINS");
        assert!(
            error.to_string().contains("GATEWAY_COOKIE_ORIGINS"),
            "{error}"
        );
        let listed = settings(&[
            "--cors-origins",
            "https://app.example",
            "--cookie-origins",
            "https://app.example",
        ]);
        assert!(listed.is_ok());
    }

    #[test]
    fn zero_limits_are_refused() {
        let error = settings(&["--request-timeout", "0s"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_REQUEST_TIMEOUT");
        let error = settings(&["--body-limit", "0"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_BODY_LIMIT");
        let error = settings(&["--header-read-timeout", "0s"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_HEADER_READ_TIMEOUT");
        let error = settings(&["--max-connections", "0"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_MAX_CONNECTIONS");
    }

    #[test]
    fn the_token_issuer_is_an_absolute_http_url_kept_as_written() {
        assert_eq!(
            settings(&[]).unwrap().token_issuer,
            token::Audience::default().issuer
        );
        for good in [
            "https://api.example",
            "https://api.example/",
            "http://127.0.0.1:8080",
            "https://api.example/auth",
        ] {
            let parsed = settings(&["--token-issuer", good]).unwrap();
            assert_eq!(parsed.token_issuer, good);
        }
        for bad in [
            "auth-service",
            "ftp://api.example",
            "https://api.example/?a=b",
            "https://api.example/#x",
            "https://user:pw@api.example",
            " https://api.example",
            "/relative",
        ] {
            let error = settings(&["--token-issuer", bad]).unwrap_err();
            assert_eq!(error.setting, "GATEWAY_TOKEN_ISSUER", "{bad}");
        }
    }

    #[test]
    fn a_header_limit_too_small_for_a_token_is_refused() {
        let error = settings(&["--max-header-bytes", "1024"]).unwrap_err();
        assert_eq!(error.setting, "GATEWAY_MAX_HEADER_BYTES");
        assert_eq!(settings(&[]).unwrap().max_header_bytes, 16 * 1024);
    }
}
