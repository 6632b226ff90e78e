//! Everything the service is told from outside, read from flags or `RESOURCE_*` environment
//! variables and turned once into validated [`Settings`] before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use authn::tls::{ClientTls, EndpointProblem};
use clap::{ArgAction, Parser, builder::BoolishValueParser};
use database::Database;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use settings::{ConfigError, secret};
use token::{Algorithm, Audience, Hs256Secret};

#[derive(Parser, Clone, Debug)]
#[command(
    name = "resource-service",
    version,
    about = "Person records over gRPC; every token checked locally."
)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "RESOURCE_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,

    /// Where Prometheus scrapes `/metrics` (its own port, never the API's); unset: no metrics.
    #[arg(long, env = "RESOURCE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Threads that run the gRPC server and its database calls (tokio workers); unset: one per CPU
    /// the process may use (affinity mask and cgroup CPU quota); 1 runs everything on the main
    /// thread. Fewer cost less CPU per request where other busy processes share the CPUs; deploy/
    /// sets one per CPU the pod requests.
    #[arg(
        long,
        env = "RESOURCE_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(settings::MAX_WORKER_THREADS))
    )]
    pub worker_threads: Option<u16>,

    /// A PEM certificate chain (the server's certificate first): with `RESOURCE_TLS_KEY_FILE`, the
    /// gRPC port serves only TLS. Read at start; a renewed certificate needs a restart.
    #[arg(long, env = "RESOURCE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of `RESOURCE_TLS_CERT_FILE`.
    #[arg(long, env = "RESOURCE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Where grpc.health.v1 alone is served in plain text, for probes that cannot speak TLS;
    /// unset: no such port.
    #[arg(long, env = "RESOURCE_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// `postgres://…` or `sqlite:…`. Unset: the SQLite file `resource.db` in the data directory.
    #[arg(long, env = "RESOURCE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// A file holding the database URL (a mounted Secret), instead of `RESOURCE_DATABASE_URL`.
    #[arg(long, env = "RESOURCE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Where the embedded SQLite database lives when no database URL is given.
    #[arg(long, env = "RESOURCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Connections in the PostgreSQL pool of each replica (SQLite has its own fixed pool).
    #[arg(long, env = "RESOURCE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// auth-service replicas to fetch the token keys (JWKS) from and follow the revocation feed
    /// of, comma-separated. With HS256 an empty value follows no feed (revoked tokens stay
    /// valid until they expire).
    #[arg(
        long,
        env = "RESOURCE_AUTH_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: Vec<String>,

    /// The PEM CA certificates an `https://` auth-service URL's certificate must come from
    /// (checked against the URL's host name). Needed by `https://` URLs.
    #[arg(long, env = "RESOURCE_AUTH_TLS_CA_FILE")]
    pub auth_tls_ca_file: Option<PathBuf>,

    /// EdDSA (keys from auth-service's JWKS) or HS256 (a shared secret; single-binary set-ups).
    #[arg(long, env = "RESOURCE_TOKEN_ALG", default_value = "EdDSA")]
    pub token_alg: Algorithm,

    /// The HS256 secret, at least 32 bytes; required with HS256 and refused otherwise.
    #[arg(long, env = "RESOURCE_HS256_SECRET", hide_env_values = true)]
    pub hs256_secret: Option<SecretString>,

    /// A file holding the HS256 secret, instead of `RESOURCE_HS256_SECRET`.
    #[arg(long, env = "RESOURCE_HS256_SECRET_FILE")]
    pub hs256_secret_file: Option<PathBuf>,

    /// The `iss` every accepted token must carry.
    #[arg(long, env = "RESOURCE_TOKEN_ISSUER", default_value_t = Audience::default().issuer)]
    pub token_issuer: String,

    /// The `aud` every accepted token must carry.
    #[arg(long, env = "RESOURCE_TOKEN_AUDIENCE", default_value_t = Audience::default().audience)]
    pub token_audience: String,

    /// How many verified tokens to remember (about 1 KiB each); 0 verifies every call.
    #[arg(long, env = "RESOURCE_TOKEN_CACHE_CAPACITY", default_value_t = 10_000)]
    pub token_cache_capacity: u64,

    /// How often the token keys are refreshed in the background, e.g. `60s` [default: 60s].
    #[arg(long, env = "RESOURCE_JWKS_REFRESH", value_parser = humantime::parse_duration)]
    pub jwks_refresh: Option<Duration>,

    /// Deprecated: seconds between key refreshes; use `RESOURCE_JWKS_REFRESH=60s`.
    #[arg(long, env = "RESOURCE_JWKS_REFRESH_SECS", hide = true)]
    pub jwks_refresh_secs: Option<u64>,

    /// Load the tutorials' persons into an empty database.
    #[arg(
        long,
        env = "RESOURCE_SAMPLE_DATA",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub sample_data: bool,

    /// Peers (the gateway) whose `x-forwarded-for` metadata names the client; IPs or CIDRs,
    /// comma-separated. Any other caller is known by its own address.
    #[arg(
        long,
        env = "RESOURCE_TRUSTED_PEERS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1"
    )]
    pub trusted_peers: Vec<String>,

    /// A secret the trusted peers must also send (as `x-forwarding-secret`) for their
    /// `x-forwarded-for` to count: the gateway's `GATEWAY_FORWARDING_SECRET`. At least 32
    /// printable ASCII characters. Unset: any trusted peer names the client.
    #[arg(long, env = "RESOURCE_FORWARDING_SECRET", hide_env_values = true)]
    pub forwarding_secret: Option<SecretString>,

    /// A file holding the forwarding secret, instead of `RESOURCE_FORWARDING_SECRET`.
    #[arg(long, env = "RESOURCE_FORWARDING_SECRET_FILE")]
    pub forwarding_secret_file: Option<PathBuf>,

    /// How long without an update from the revocation feed before the view counts as stale
    /// (a warning, the `authn.revocation` health entry NOT_SERVING, and with fail-closed,
    /// refusals), e.g. `30s`.
    #[arg(long, env = "RESOURCE_REVOCATION_MAX_STALENESS", default_value = "30s", value_parser = humantime::parse_duration)]
    pub revocation_max_staleness: Duration,

    /// When the revocation view is stale, refuse tokens issued before its last good update
    /// instead of accepting them (fail-open, the default). Tokens issued after that update are
    /// still accepted, even if revoked during the outage, until they expire.
    #[arg(
        long,
        env = "RESOURCE_REVOCATION_FAIL_CLOSED",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub revocation_fail_closed: bool,
}

/// How often the token keys are refreshed when nothing says otherwise.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(60);

/// Everything the service was told, checked and in the form it uses.
#[derive(Debug)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// `Some`: the gRPC port serves only TLS.
    pub tls: Option<telemetry::tls::ServerTls>,
    /// The plain-text grpc.health.v1 port, if any.
    pub health_addr: Option<SocketAddr>,
    pub database: Database,
    pub db_max_connections: u32,
    pub token_keys: TokenKeys,
    pub audience: Audience,
    pub token_cache_capacity: u64,
    pub jwks_refresh: Duration,
    pub sample_data: bool,
    pub trusted_peers: Vec<IpNet>,
    pub forwarding_secret: Option<SecretString>,
    /// The CA of `https://` auth-service URLs.
    pub auth_tls: Option<ClientTls>,
    /// `None`: no revocation feed is followed (HS256 with no auth-service URL).
    pub revocation: Option<RevocationFeed>,
}

/// Where and how the revocation feed is followed.
#[derive(Clone, Debug)]
pub struct RevocationFeed {
    pub auth_urls: Vec<String>,
    pub max_staleness: Duration,
    pub fail_closed: bool,
}

/// How tokens are checked.
#[derive(Clone, Debug)]
pub enum TokenKeys {
    /// Ed25519 keys fetched from these auth-service replicas.
    Jwks(Vec<String>),
    Hs256(Hs256Secret),
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
        if config.token_issuer.is_empty() || config.token_audience.is_empty() {
            return Err(ConfigError::new(
                "RESOURCE_TOKEN_ISSUER",
                "RESOURCE_TOKEN_ISSUER and RESOURCE_TOKEN_AUDIENCE must not be empty",
            ));
        }
        if config.db_max_connections == 0 {
            return Err(ConfigError::new(
                "RESOURCE_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        let database_url = secret(
            config.database_url,
            config.database_url_file.as_deref(),
            "RESOURCE_DATABASE_URL",
            "RESOURCE_DATABASE_URL_FILE",
        )?;
        let hs256_secret = secret(
            config.hs256_secret,
            config.hs256_secret_file.as_deref(),
            "RESOURCE_HS256_SECRET",
            "RESOURCE_HS256_SECRET_FILE",
        )?;
        let auth_tls = config
            .auth_tls_ca_file
            .as_deref()
            .map(ClientTls::from_ca_file)
            .transpose()
            .map_err(|problem| ConfigError::new("RESOURCE_AUTH_TLS_CA_FILE", problem))?;
        let auth_urls = auth_urls(&config.auth_url, auth_tls.as_ref())?;
        let token_keys = token_keys(config.token_alg, hs256_secret, auth_urls.clone())?;
        let revocation = revocation_feed(
            auth_urls,
            config.revocation_max_staleness,
            config.revocation_fail_closed,
        )?;
        Ok(Self {
            grpc_addr: config.grpc_addr,
            metrics_addr: config.metrics_addr,
            tls: telemetry::tls::ServerTls::load(
                config.tls_cert_file.as_deref(),
                config.tls_key_file.as_deref(),
                telemetry::tls::ServerTlsSettings {
                    cert_file: "RESOURCE_TLS_CERT_FILE",
                    key_file: "RESOURCE_TLS_KEY_FILE",
                },
            )?,
            health_addr: config.health_addr,
            database: Database::new(
                database_url,
                config.data_dir.join("resource.db"),
                "RESOURCE_DATABASE_URL",
            )?,
            db_max_connections: config.db_max_connections,
            token_keys,
            audience: Audience {
                issuer: config.token_issuer,
                audience: config.token_audience,
            },
            token_cache_capacity: config.token_cache_capacity,
            jwks_refresh: jwks_refresh(config.jwks_refresh, config.jwks_refresh_secs)?,
            sample_data: config.sample_data,
            trusted_peers: settings::networks(&config.trusted_peers, "RESOURCE_TRUSTED_PEERS")?,
            forwarding_secret: settings::forwarding_secret(
                config.forwarding_secret,
                config.forwarding_secret_file.as_deref(),
                "RESOURCE_FORWARDING_SECRET",
                "RESOURCE_FORWARDING_SECRET_FILE",
            )?,
            auth_tls,
            revocation,
        })
    }
}

/// `RESOURCE_AUTH_URL`: trimmed, empty entries dropped, each an http:// URL or an https:// one
/// with `RESOURCE_AUTH_TLS_CA_FILE` set.
fn auth_urls(urls: &[String], tls: Option<&ClientTls>) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = urls
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    for url in &urls {
        authn::tls::endpoint(url, tls).map_err(|e| {
            let setting = match e.problem {
                EndpointProblem::NoCa => "RESOURCE_AUTH_TLS_CA_FILE",
                _ => "RESOURCE_AUTH_URL",
            };
            ConfigError::new(setting, e.to_string())
        })?;
    }
    Ok(urls)
}

fn revocation_feed(
    auth_urls: Vec<String>,
    max_staleness: Duration,
    fail_closed: bool,
) -> Result<Option<RevocationFeed>, ConfigError> {
    if max_staleness < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "RESOURCE_REVOCATION_MAX_STALENESS",
            "must be at least 1s",
        ));
    }
    if auth_urls.is_empty() {
        if fail_closed {
            return Err(ConfigError::new(
                "RESOURCE_REVOCATION_FAIL_CLOSED",
                "needs a revocation feed to follow: set RESOURCE_AUTH_URL",
            ));
        }
        return Ok(None);
    }
    Ok(Some(RevocationFeed {
        auth_urls,
        max_staleness,
        fail_closed,
    }))
}

fn token_keys(
    alg: Algorithm,
    hs256_secret: Option<SecretString>,
    urls: Vec<String>,
) -> Result<TokenKeys, ConfigError> {
    match (alg, hs256_secret) {
        (Algorithm::HS256, None) => Err(ConfigError::new(
            "RESOURCE_HS256_SECRET",
            "RESOURCE_TOKEN_ALG=HS256 needs RESOURCE_HS256_SECRET",
        )),
        (Algorithm::HS256, Some(secret)) => Ok(TokenKeys::Hs256(
            Hs256Secret::new(secret.expose_secret().as_bytes())
                .map_err(|e| ConfigError::new("RESOURCE_HS256_SECRET", e.to_string()))?,
        )),
        (alg, Some(_)) => Err(ConfigError::new(
            "RESOURCE_HS256_SECRET",
            format!("is set but RESOURCE_TOKEN_ALG is {alg}; set one or the other"),
        )),
        (Algorithm::EdDSA, None) => {
            if urls.is_empty() {
                return Err(ConfigError::new(
                    "RESOURCE_AUTH_URL",
                    "must name at least one auth-service URL",
                ));
            }
            Ok(TokenKeys::Jwks(urls))
        }
    }
}

/// `RESOURCE_JWKS_REFRESH`, or the deprecated `RESOURCE_JWKS_REFRESH_SECS` for one more release.
fn jwks_refresh(
    refresh: Option<Duration>,
    deprecated_secs: Option<u64>,
) -> Result<Duration, ConfigError> {
    let refresh = match (refresh, deprecated_secs) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "RESOURCE_JWKS_REFRESH",
                "set RESOURCE_JWKS_REFRESH only; RESOURCE_JWKS_REFRESH_SECS is its deprecated old name",
            ));
        }
        (Some(refresh), None) => refresh,
        (None, Some(secs)) => {
            tracing::warn!(
                "RESOURCE_JWKS_REFRESH_SECS is deprecated and will be removed; set RESOURCE_JWKS_REFRESH={secs}s instead"
            );
            Duration::from_secs(secs)
        }
        (None, None) => DEFAULT_JWKS_REFRESH,
    };
    if refresh < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "RESOURCE_JWKS_REFRESH",
            "must be at least 1s",
        ));
    }
    Ok(refresh)
}

/// The HS256 secret of [`Config::for_tests`]; never use it anywhere else.
#[cfg(any(test, feature = "test-util"))]
pub const TEST_HS256_SECRET: &str = "test-only-secret-0123456789abcdefghij";

#[cfg(any(test, feature = "test-util"))]
impl Config {
    /// A configuration for tests: port 0, a fresh SQLite file in the temp directory, HS256 with
    /// a fixed test secret, no auth-service (so no revocation feed), no sample data. Tests
    /// change fields as they need.
    pub fn for_tests() -> Self {
        let dir = std::env::temp_dir().join("resource-service-tests");
        // If this fails, opening the database reports it with the path.
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}.db", uuid::Uuid::new_v4()));
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            worker_threads: None,
            tls_cert_file: None,
            tls_key_file: None,
            health_addr: None,
            database_url: Some(format!("sqlite://{}", file.display()).into()),
            database_url_file: None,
            data_dir: dir,
            db_max_connections: 5,
            auth_url: Vec::new(),
            auth_tls_ca_file: None,
            token_alg: Algorithm::HS256,
            hs256_secret: Some(TEST_HS256_SECRET.into()),
            hs256_secret_file: None,
            token_issuer: Audience::default().issuer,
            token_audience: Audience::default().audience,
            token_cache_capacity: 1_000,
            jwks_refresh: None,
            jwks_refresh_secs: None,
            sample_data: false,
            trusted_peers: vec!["127.0.0.1".to_owned()],
            forwarding_secret: None,
            forwarding_secret_file: None,
            revocation_max_staleness: Duration::from_secs(30),
            revocation_fail_closed: false,
        }
    }

    /// Switches to EdDSA keys from these auth-service URLs.
    pub fn with_jwks(mut self, urls: Vec<String>) -> Self {
        self.token_alg = Algorithm::EdDSA;
        self.hs256_secret = None;
        self.auth_url = urls;
        self
    }
}

#[cfg(test)]
mod tests;
