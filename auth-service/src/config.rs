//! Configuration from flags or `AUTH_*` environment variables, turned once into validated
//! [`Settings`] before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use database::Database;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use settings::{ConfigError, secret};
use token::{Algorithm, Audience, Hs256Secret};

use crate::{
    accounts::{BootstrapAdmin, SessionPolicy},
    domain::{Email, Password, Username},
    feed::FeedConfig,
    keyring::Rotation,
    password,
    signing::{KekSource, KeyConfig, KeyEncryptionKey},
    throttle::{Limit, ThrottleSettings},
};

#[derive(Parser, Clone, Debug)]
#[command(
    name = "auth-service",
    version,
    about = "Sign-up, sign-in and signed access tokens over gRPC"
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AUTH_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Where Prometheus scrapes `/metrics` (its own port, never the API's); unset: no metrics.
    #[arg(long, env = "AUTH_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Threads that run the gRPC server and its database calls (tokio workers; password hashing
    /// has its own, `AUTH_HASH_WORKERS`); unset: one per CPU the process may use (affinity mask
    /// and cgroup CPU quota); 1 runs everything on the main thread. Fewer cost less CPU per request
    /// where other busy processes share the CPUs; deploy/ sets one per CPU the pod requests.
    #[arg(
        long,
        env = "AUTH_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(settings::MAX_WORKER_THREADS))
    )]
    pub worker_threads: Option<u16>,

    /// A PEM certificate chain (the server's certificate first): with `AUTH_TLS_KEY_FILE`, the
    /// gRPC port serves only TLS. Read at start; a renewed certificate needs a restart.
    #[arg(long, env = "AUTH_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of `AUTH_TLS_CERT_FILE`.
    #[arg(long, env = "AUTH_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Where grpc.health.v1 alone is served in plain text, for probes that cannot speak TLS;
    /// unset: no such port.
    #[arg(long, env = "AUTH_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// `postgres://…` for replicas sharing one database, or `sqlite:…`. Unset: a SQLite file in
    /// the data directory.
    #[arg(long, env = "AUTH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// A file holding the database URL (a mounted Secret), instead of `AUTH_DATABASE_URL`.
    #[arg(long, env = "AUTH_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Where the embedded SQLite database lives when no database URL is given.
    #[arg(long, env = "AUTH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[arg(long, env = "AUTH_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Lifetime of access tokens, e.g. `15m`, `900s`, `1h`.
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of service accounts' tokens (the client-credentials grant), e.g. `15m`.
    #[arg(long, env = "AUTH_SERVICE_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub service_token_ttl: Duration,

    /// How long an Ed25519 signing key signs before the next one takes over, e.g. `30d`; `0s`
    /// rotates only when an admin asks.
    #[arg(long, env = "AUTH_KEY_ROTATION_PERIOD", default_value = "30d", value_parser = humantime::parse_duration)]
    pub key_rotation_period: Duration,

    /// How long a new signing key is published in the JWKS before it signs. Must exceed how
    /// long verifiers go between JWKS fetches (`RESOURCE_JWKS_REFRESH`); the JWKS may be cached
    /// for half of it.
    #[arg(long, env = "AUTH_KEY_PUBLISH_AHEAD", default_value = "10m", value_parser = humantime::parse_duration)]
    pub key_publish_ahead: Duration,

    /// A session unused this long ends (its refresh token stops working), e.g. `14d`.
    #[arg(long, env = "AUTH_REFRESH_IDLE_TTL", default_value = "14d", value_parser = humantime::parse_duration)]
    pub refresh_idle_ttl: Duration,

    /// A session ends this long after sign-in however much it is used, e.g. `30d`.
    #[arg(long, env = "AUTH_REFRESH_ABSOLUTE_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_absolute_ttl: Duration,

    /// A retry of a spent refresh token this soon (a lost response, two tabs) gets the same new
    /// refresh token; a reuse later ends the session.
    #[arg(long, env = "AUTH_REFRESH_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub refresh_grace: Duration,

    /// Live sessions one user may hold; a sign-in beyond it ends the oldest.
    #[arg(long, env = "AUTH_MAX_SESSIONS_PER_USER", default_value_t = 20)]
    pub max_sessions_per_user: usize,

    /// How often expired sessions are deleted (expired revocations go with the feed's watcher).
    #[arg(long, env = "AUTH_PRUNE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub prune_interval: Duration,

    /// `EdDSA` (Ed25519, keys in the database, public keys in the JWKS) or `HS256` (a shared
    /// secret, for single-binary set-ups).
    #[arg(long, env = "AUTH_TOKEN_ALG", default_value = "EdDSA")]
    pub token_alg: Algorithm,

    /// The HS256 secret, at least 32 bytes. Only with `AUTH_TOKEN_ALG=HS256`.
    #[arg(long, env = "AUTH_HS256_SECRET", hide_env_values = true)]
    pub hs256_secret: Option<SecretString>,

    /// A file holding the HS256 secret, instead of `AUTH_HS256_SECRET`.
    #[arg(long, env = "AUTH_HS256_SECRET_FILE")]
    pub hs256_secret_file: Option<PathBuf>,

    /// Base64 of 32 random bytes that seal the signing keys stored in the database. Required
    /// on PostgreSQL; unset on SQLite, a key generated in `<data dir>/key-encryption-key`.
    #[arg(long, env = "AUTH_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<SecretString>,

    /// A file holding the key-encryption key, instead of `AUTH_KEY_ENCRYPTION_KEY`.
    #[arg(long, env = "AUTH_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,

    /// The key-encryption key being replaced, for one start that re-seals every signing key
    /// under `AUTH_KEY_ENCRYPTION_KEY`.
    #[arg(long, env = "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub previous_key_encryption_key: Option<SecretString>,

    /// A file holding the previous key-encryption key, instead of
    /// `AUTH_PREVIOUS_KEY_ENCRYPTION_KEY`.
    #[arg(long, env = "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY_FILE")]
    pub previous_key_encryption_key_file: Option<PathBuf>,

    /// The `iss` claim of issued tokens: the public base URL clients reach auth-service's
    /// endpoints at (the gateway's), an absolute http(s) URL without query or fragment.
    #[arg(long, env = "AUTH_TOKEN_ISSUER", default_value_t = Audience::default().issuer)]
    pub token_issuer: String,

    /// The `aud` claim of issued tokens; verifiers must expect the same.
    #[arg(long, env = "AUTH_TOKEN_AUDIENCE", default_value_t = Audience::default().audience)]
    pub token_audience: String,

    /// The first admin, created once if absent.
    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_USERNAME")]
    pub bootstrap_admin_username: Option<String>,

    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub bootstrap_admin_password: Option<SecretString>,

    /// A file holding the first admin's password, instead of `AUTH_BOOTSTRAP_ADMIN_PASSWORD`.
    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_PASSWORD_FILE")]
    pub bootstrap_admin_password_file: Option<PathBuf>,

    /// Defaults to `<username>@localhost.localdomain`.
    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_EMAIL")]
    pub bootstrap_admin_email: Option<String>,

    /// Password hashes computed at once, each in 19 MiB of its own. Defaults to one fewer than
    /// the CPUs the process may use (at least one), fewer if the cgroup memory limit has no room
    /// for them (64 MiB base + 19 MiB per worker); more than fit under the limit refuse to start.
    #[arg(long, env = "AUTH_HASH_WORKERS")]
    pub hash_workers: Option<usize>,

    /// Where the cgroup hierarchy with this process's memory limit is mounted (cgroup v2, or
    /// cgroup v1 with `memory/` below it); set only by tests.
    #[arg(skip = PathBuf::from(password::budget::CGROUP_ROOT))]
    pub cgroup_root: PathBuf,

    /// Password checks allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,

    /// The longest a password check may expect to wait for a worker (the checks ahead of it at
    /// the recent mean hashing time); a check that would wait longer is refused at once with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_MAX_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub hash_max_wait: Duration,

    /// Scheduling priority of the hashing threads: `idle` (Linux SCHED_IDLE, CPU time nothing
    /// else wants, so a sign-in flood cannot slow other requests) or `normal`.
    #[arg(long, env = "AUTH_HASH_PRIORITY", value_enum, default_value_t = password::Priority::Idle)]
    pub hash_priority: password::Priority,

    /// Password checks one client may have running or waiting at once; beyond that its calls
    /// are RESOURCE_EXHAUSTED. Defaults to a quarter of workers plus queue (at least 1).
    #[arg(long, env = "AUTH_HASH_PER_CLIENT")]
    pub hash_per_client: Option<usize>,

    /// Failed sign-ins for one account (or unknown login) from one client within
    /// `AUTH_SIGNIN_WINDOW`; further sign-ins are refused until the oldest leaves the window.
    #[arg(long, env = "AUTH_SIGNIN_MAX_FAILURES", default_value_t = 10)]
    pub signin_max_failures: u32,

    #[arg(long, env = "AUTH_SIGNIN_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub signin_window: Duration,

    /// Failed sign-ins for one account (or unknown login) from all clients together within
    /// `AUTH_SIGNIN_ACCOUNT_WINDOW`, which slows a guess spread over many clients.
    #[arg(long, env = "AUTH_SIGNIN_ACCOUNT_MAX_FAILURES", default_value_t = 100)]
    pub signin_account_max_failures: u32,

    #[arg(long, env = "AUTH_SIGNIN_ACCOUNT_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub signin_account_window: Duration,

    /// Sign-ups from one client answered "username/email taken" within `AUTH_SIGNUP_WINDOW`;
    /// beyond that the client's sign-ups are refused until the oldest leaves the window.
    #[arg(long, env = "AUTH_SIGNUP_MAX_TAKEN", default_value_t = 10)]
    pub signup_max_taken: u32,

    #[arg(long, env = "AUTH_SIGNUP_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub signup_window: Duration,

    /// Peers (the gateway) whose `x-forwarded-for` metadata names the client; IPs or CIDRs,
    /// comma-separated. Any other caller is known by its own address.
    #[arg(
        long,
        env = "AUTH_TRUSTED_PEERS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1"
    )]
    pub trusted_peers: Vec<String>,

    /// A secret the trusted peers must also send (as `x-forwarding-secret`) for their
    /// `x-forwarded-for` to count: the gateway's `GATEWAY_FORWARDING_SECRET`. At least 32
    /// printable ASCII characters. Unset: any trusted peer names the client.
    #[arg(long, env = "AUTH_FORWARDING_SECRET", hide_env_values = true)]
    pub forwarding_secret: Option<SecretString>,

    /// A file holding the forwarding secret, instead of `AUTH_FORWARDING_SECRET`.
    #[arg(long, env = "AUTH_FORWARDING_SECRET_FILE")]
    pub forwarding_secret_file: Option<PathBuf>,

    /// How often the revocations table is read for other replicas' revocations, e.g. `250ms`
    /// [default: 250ms on SQLite; 5s on PostgreSQL, where LISTEN/NOTIFY brings them at once].
    #[arg(long, env = "AUTH_REVOCATION_POLL", value_parser = humantime::parse_duration)]
    pub revocation_poll: Option<Duration>,

    /// How long a revocation stream stays silent before it sends a heartbeat.
    #[arg(long, env = "AUTH_REVOCATION_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub revocation_heartbeat: Duration,
}

/// Everything the service was told, checked and in the form it uses.
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// `Some`: the gRPC port serves only TLS.
    pub tls: Option<telemetry::tls::ServerTls>,
    /// The plain-text grpc.health.v1 port, if any.
    pub health_addr: Option<SocketAddr>,
    pub database: Database,
    pub db_max_connections: u32,
    pub keys: KeyConfig,
    pub audience: Audience,
    pub access_token_ttl: Duration,
    pub service_token_ttl: Duration,
    pub rotation: Rotation,
    pub sessions: SessionPolicy,
    pub prune_interval: Duration,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    pub hash_workers: usize,
    /// The cgroup memory limit the workers were sized for, if one is known.
    pub memory_limit: Option<u64>,
    pub hash_queue: usize,
    pub hash_per_client: usize,
    pub hash_max_wait: Duration,
    pub hash_priority: password::Priority,
    pub throttle: ThrottleSettings,
    pub trusted_peers: Vec<IpNet>,
    pub forwarding_secret: Option<SecretString>,
    pub feed: FeedConfig,
}

impl settings::WorkerThreads for Config {
    fn worker_threads(&self) -> Option<std::num::NonZeroUsize> {
        self.worker_threads
            .and_then(|n| std::num::NonZeroUsize::new(n.into()))
    }
}

/// The longest lifetime `AUTH_ACCESS_TOKEN_TTL` and `AUTH_SERVICE_TOKEN_TTL` accept. A revocation
/// is kept this long (plus the verifiers' leeway) whatever the settings are now, since tokens
/// issued before a lifetime was shortened live as long as it was when they were issued.
pub const LONGEST_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        // Access tokens are only recalled by expiry, so they must be short-lived.
        if !(Duration::from_secs(10)..=LONGEST_TOKEN_TTL).contains(&config.access_token_ttl) {
            return Err(ConfigError::new(
                "AUTH_ACCESS_TOKEN_TTL",
                "must be between 10s and 1h",
            ));
        }
        // Service tokens are revoked through the feed, but a bound keeps a lost one short-lived.
        if !(Duration::from_secs(10)..=LONGEST_TOKEN_TTL).contains(&config.service_token_ttl) {
            return Err(ConfigError::new(
                "AUTH_SERVICE_TOKEN_TTL",
                "must be between 10s and 1h",
            ));
        }
        let sessions = session_policy(&config)?;
        if config.prune_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "AUTH_PRUNE_INTERVAL",
                "must be at least 1s",
            ));
        }
        if config.token_issuer.is_empty() || config.token_audience.is_empty() {
            return Err(ConfigError::new(
                "AUTH_TOKEN_ISSUER",
                "AUTH_TOKEN_ISSUER and AUTH_TOKEN_AUDIENCE must not be empty",
            ));
        }
        check_issuer(&config.token_issuer)?;
        if config.db_max_connections == 0 {
            return Err(ConfigError::new(
                "AUTH_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        let database_url = secret(
            config.database_url,
            config.database_url_file.as_deref(),
            "AUTH_DATABASE_URL",
            "AUTH_DATABASE_URL_FILE",
        )?;
        let database = Database::new(
            database_url,
            config.data_dir.join("auth.db"),
            "AUTH_DATABASE_URL",
        )?;
        let on_postgres =
            matches!(&database, Database::Url(url) if !url.expose_secret().starts_with("sqlite:"));
        let feed = feed_config(
            config.revocation_poll,
            config.revocation_heartbeat,
            on_postgres,
        )?;
        let keks = Keks {
            current: secret(
                config.key_encryption_key,
                config.key_encryption_key_file.as_deref(),
                "AUTH_KEY_ENCRYPTION_KEY",
                "AUTH_KEY_ENCRYPTION_KEY_FILE",
            )?,
            previous: secret(
                config.previous_key_encryption_key,
                config.previous_key_encryption_key_file.as_deref(),
                "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY",
                "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY_FILE",
            )?,
            on_postgres,
            generated_file: config.data_dir.join("key-encryption-key"),
        };
        let memory_limit = password::budget::memory_limit(&config.cgroup_root)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the cgroup memory limit; sizing the password hashing workers by CPUs only");
                None
            });
        let hash_workers = hash_workers(config.hash_workers, memory_limit)?;
        let hash_per_client = match config.hash_per_client {
            Some(0) => {
                return Err(ConfigError::new(
                    "AUTH_HASH_PER_CLIENT",
                    "must be at least 1",
                ));
            }
            Some(n) => n,
            None => ((hash_workers + config.hash_queue) / 4).max(1),
        };
        let throttle = ThrottleSettings {
            sign_in_per_client: limit(
                config.signin_max_failures,
                "AUTH_SIGNIN_MAX_FAILURES",
                config.signin_window,
                "AUTH_SIGNIN_WINDOW",
            )?,
            sign_in_per_account: limit(
                config.signin_account_max_failures,
                "AUTH_SIGNIN_ACCOUNT_MAX_FAILURES",
                config.signin_account_window,
                "AUTH_SIGNIN_ACCOUNT_WINDOW",
            )?,
            sign_up_taken: limit(
                config.signup_max_taken,
                "AUTH_SIGNUP_MAX_TAKEN",
                config.signup_window,
                "AUTH_SIGNUP_WINDOW",
            )?,
        };
        Ok(Self {
            grpc_addr: config.grpc_addr,
            metrics_addr: config.metrics_addr,
            tls: telemetry::tls::ServerTls::load(
                config.tls_cert_file.as_deref(),
                config.tls_key_file.as_deref(),
                telemetry::tls::ServerTlsSettings {
                    cert_file: "AUTH_TLS_CERT_FILE",
                    key_file: "AUTH_TLS_KEY_FILE",
                },
            )?,
            health_addr: config.health_addr,
            database,
            db_max_connections: config.db_max_connections,
            keys: key_config(
                config.token_alg,
                secret(
                    config.hs256_secret,
                    config.hs256_secret_file.as_deref(),
                    "AUTH_HS256_SECRET",
                    "AUTH_HS256_SECRET_FILE",
                )?,
                keks,
            )?,
            audience: Audience {
                issuer: config.token_issuer,
                audience: config.token_audience,
            },
            access_token_ttl: config.access_token_ttl,
            service_token_ttl: config.service_token_ttl,
            rotation: rotation(config.key_rotation_period, config.key_publish_ahead)?,
            sessions,
            prune_interval: config.prune_interval,
            bootstrap_admin: bootstrap_admin(
                config.bootstrap_admin_username,
                secret(
                    config.bootstrap_admin_password,
                    config.bootstrap_admin_password_file.as_deref(),
                    "AUTH_BOOTSTRAP_ADMIN_PASSWORD",
                    "AUTH_BOOTSTRAP_ADMIN_PASSWORD_FILE",
                )?,
                config.bootstrap_admin_email,
            )?,
            hash_workers,
            memory_limit,
            hash_queue: config.hash_queue,
            hash_per_client,
            hash_max_wait: config.hash_max_wait,
            hash_priority: config.hash_priority,
            throttle,
            trusted_peers: settings::networks(&config.trusted_peers, "AUTH_TRUSTED_PEERS")?,
            forwarding_secret: settings::forwarding_secret(
                config.forwarding_secret,
                config.forwarding_secret_file.as_deref(),
                "AUTH_FORWARDING_SECRET",
                "AUTH_FORWARDING_SECRET_FILE",
            )?,
            feed,
        })
    }
}

/// The hashing workers: as configured or by default one per CPU the process may use but one (the
/// affinity mask and cgroup CPU quota, as `available_parallelism` reads them), no more than fit
/// in `memory_limit`.
fn hash_workers(
    configured: Option<usize>,
    memory_limit: Option<u64>,
) -> Result<usize, ConfigError> {
    let workers = match configured {
        Some(0) => return Err(ConfigError::new("AUTH_HASH_WORKERS", "must be at least 1")),
        Some(n) => n,
        None => {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            password::budget::default_workers(cpus, memory_limit)
        }
    };
    password::budget::check(workers, memory_limit)
        .map_err(|problem| ConfigError::new("AUTH_HASH_WORKERS", problem))?;
    Ok(workers)
}

/// The issuer is auth-service's public base URL (RFC 8414): an absolute `http` or `https` URL
/// with a host and neither query nor fragment. Compared as text by every verifier, so it is
/// taken exactly as given.
fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let problem = |what: &str| {
        ConfigError::new(
            "AUTH_TOKEN_ISSUER",
            format!(
                "must be the public base URL, an absolute http(s) URL without query or fragment: {what}"
            ),
        )
    };
    let url = url::Url::parse(issuer).map_err(|e| problem(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(problem("the scheme is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem("there is no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem("it has a query or a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(problem("it has user information"));
    }
    Ok(())
}

fn rotation(period: Duration, publish_ahead: Duration) -> Result<Rotation, ConfigError> {
    if publish_ahead < Duration::from_secs(2) {
        return Err(ConfigError::new(
            "AUTH_KEY_PUBLISH_AHEAD",
            "must be at least 2s: verifiers need time to fetch a new key before it signs",
        ));
    }
    let period = (!period.is_zero()).then_some(period);
    if period.is_some_and(|period| period <= publish_ahead) {
        return Err(ConfigError::new(
            "AUTH_KEY_ROTATION_PERIOD",
            "must be longer than AUTH_KEY_PUBLISH_AHEAD (or 0s to rotate only on request)",
        ));
    }
    Ok(Rotation {
        period,
        publish_ahead,
    })
}

fn session_policy(config: &Config) -> Result<SessionPolicy, ConfigError> {
    // Whole seconds: every time in the store is Unix seconds.
    let secs = |d: Duration| Duration::from_secs(d.as_secs());
    let (idle, absolute, grace) = (
        secs(config.refresh_idle_ttl),
        secs(config.refresh_absolute_ttl),
        secs(config.refresh_grace),
    );
    if idle < Duration::from_secs(60) {
        return Err(ConfigError::new(
            "AUTH_REFRESH_IDLE_TTL",
            "must be at least 1m",
        ));
    }
    if absolute < idle {
        return Err(ConfigError::new(
            "AUTH_REFRESH_ABSOLUTE_TTL",
            "must not be shorter than AUTH_REFRESH_IDLE_TTL",
        ));
    }
    if absolute > Duration::from_secs(366 * 86_400) {
        return Err(ConfigError::new(
            "AUTH_REFRESH_ABSOLUTE_TTL",
            "must be at most 366d",
        ));
    }
    // A longer window keeps a stolen token's twin usable longer; a few seconds cover a lost
    // response or two tabs.
    if grace > Duration::from_secs(60) {
        return Err(ConfigError::new(
            "AUTH_REFRESH_GRACE",
            "must be at most 60s",
        ));
    }
    if config.max_sessions_per_user == 0 {
        return Err(ConfigError::new(
            "AUTH_MAX_SESSIONS_PER_USER",
            "must be at least 1",
        ));
    }
    Ok(SessionPolicy {
        idle_ttl: idle,
        absolute_ttl: absolute,
        refresh_grace: grace,
        max_per_user: config.max_sessions_per_user,
    })
}

/// A throttle limit: at least one event, over a window of one second to one day.
fn limit(
    max: u32,
    max_setting: &'static str,
    window: Duration,
    window_setting: &'static str,
) -> Result<Limit, ConfigError> {
    if max == 0 {
        return Err(ConfigError::new(max_setting, "must be at least 1"));
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&window) {
        return Err(ConfigError::new(
            window_setting,
            "must be between 1s and 24h",
        ));
    }
    Ok(Limit { max, window })
}

fn feed_config(
    poll: Option<Duration>,
    heartbeat: Duration,
    on_postgres: bool,
) -> Result<FeedConfig, ConfigError> {
    let poll = poll.unwrap_or(if on_postgres {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(250)
    });
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&poll) {
        return Err(ConfigError::new(
            "AUTH_REVOCATION_POLL",
            "must be between 10ms and 60s",
        ));
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&heartbeat) {
        return Err(ConfigError::new(
            "AUTH_REVOCATION_HEARTBEAT",
            "must be between 10ms and 60s",
        ));
    }
    Ok(FeedConfig { poll, heartbeat })
}

/// The key-encryption keys as configured, before it is known whether they are needed.
struct Keks {
    current: Option<SecretString>,
    previous: Option<SecretString>,
    /// PostgreSQL is the production database, shared by replicas: its keys must be sealed with
    /// a key kept outside it, so there is no generated fallback.
    on_postgres: bool,
    /// Where the embedded database keeps its generated key when none is configured.
    generated_file: PathBuf,
}

fn key_config(
    alg: Algorithm,
    hs256_secret: Option<SecretString>,
    keks: Keks,
) -> Result<KeyConfig, ConfigError> {
    match (alg, hs256_secret) {
        // Nothing is stored with HS256, so a key-encryption key would be silently unused.
        (Algorithm::HS256, Some(_)) if keks.current.is_some() || keks.previous.is_some() => {
            Err(ConfigError::new(
                "AUTH_KEY_ENCRYPTION_KEY",
                "is set but AUTH_TOKEN_ALG is HS256, which stores no key; remove it or use EdDSA",
            ))
        }
        (Algorithm::HS256, Some(secret)) => Ok(KeyConfig::Hs256(
            Hs256Secret::new(secret.expose_secret().as_bytes())
                .map_err(|e| ConfigError::new("AUTH_HS256_SECRET", e.to_string()))?,
        )),
        (Algorithm::HS256, None) => Err(ConfigError::new(
            "AUTH_HS256_SECRET",
            "AUTH_TOKEN_ALG=HS256 needs AUTH_HS256_SECRET (at least 32 bytes)",
        )),
        (Algorithm::EdDSA, Some(_)) => Err(ConfigError::new(
            "AUTH_HS256_SECRET",
            "is set but AUTH_TOKEN_ALG is EdDSA; set AUTH_TOKEN_ALG=HS256 or remove the secret",
        )),
        (Algorithm::EdDSA, None) => {
            let kek = match keks.current {
                Some(kek) => KekSource::Configured(kek_from(&kek, "AUTH_KEY_ENCRYPTION_KEY")?),
                None if keks.on_postgres => {
                    return Err(ConfigError::new(
                        "AUTH_KEY_ENCRYPTION_KEY",
                        "is required on PostgreSQL, which would otherwise hold the signing key in the clear; \
                         set AUTH_KEY_ENCRYPTION_KEY or AUTH_KEY_ENCRYPTION_KEY_FILE to base64 of 32 random bytes \
                         (head -c 32 /dev/urandom | base64)",
                    ));
                }
                None => KekSource::File(keks.generated_file),
            };
            let previous = match (&kek, keks.previous) {
                (KekSource::Configured(_), Some(previous)) => {
                    Some(kek_from(&previous, "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY")?)
                }
                (KekSource::File(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY",
                        "rotates to AUTH_KEY_ENCRYPTION_KEY, which is not set",
                    ));
                }
                (_, None) => None,
            };
            Ok(KeyConfig::Ed25519 { kek, previous })
        }
    }
}

fn kek_from(text: &SecretString, setting: &'static str) -> Result<KeyEncryptionKey, ConfigError> {
    KeyEncryptionKey::from_base64(text.expose_secret())
        .map_err(|e| ConfigError::new(setting, e.to_string()))
}

fn bootstrap_admin(
    username: Option<String>,
    password: Option<SecretString>,
    email: Option<String>,
) -> Result<Option<BootstrapAdmin>, ConfigError> {
    match (username, password) {
        (None, None) => Ok(None),
        (Some(username), Some(password)) => {
            let username = Username::parse(&username)
                .map_err(|e| ConfigError::new("AUTH_BOOTSTRAP_ADMIN_USERNAME", e.0))?;
            let email = email.unwrap_or_else(|| format!("{username}@localhost.localdomain"));
            Ok(Some(BootstrapAdmin {
                email: Email::parse(&email)
                    .map_err(|e| ConfigError::new("AUTH_BOOTSTRAP_ADMIN_EMAIL", e.0))?,
                password: Password::parse(password)
                    .map_err(|e| ConfigError::new("AUTH_BOOTSTRAP_ADMIN_PASSWORD", e.0))?,
                username,
            }))
        }
        _ => Err(ConfigError::new(
            "AUTH_BOOTSTRAP_ADMIN_USERNAME",
            "set both AUTH_BOOTSTRAP_ADMIN_USERNAME and AUTH_BOOTSTRAP_ADMIN_PASSWORD, or neither",
        )),
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Config {
    /// Defaults for tests: any free port, a fresh SQLite file, nothing read from the environment.
    pub fn for_tests() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            worker_threads: None,
            tls_cert_file: None,
            tls_key_file: None,
            health_addr: None,
            database_url: None,
            database_url_file: None,
            data_dir: std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::new_v4())),
            db_max_connections: 5,
            access_token_ttl: Duration::from_secs(900),
            service_token_ttl: Duration::from_secs(900),
            key_rotation_period: Duration::from_secs(30 * 86_400),
            key_publish_ahead: Duration::from_secs(600),
            refresh_idle_ttl: Duration::from_secs(14 * 86_400),
            refresh_absolute_ttl: Duration::from_secs(30 * 86_400),
            refresh_grace: Duration::from_secs(10),
            max_sessions_per_user: 20,
            prune_interval: Duration::from_secs(300),
            token_alg: Algorithm::EdDSA,
            hs256_secret: None,
            hs256_secret_file: None,
            key_encryption_key: None,
            key_encryption_key_file: None,
            previous_key_encryption_key: None,
            previous_key_encryption_key_file: None,
            token_issuer: Audience::default().issuer,
            token_audience: Audience::default().audience,
            bootstrap_admin_username: None,
            bootstrap_admin_password: None,
            bootstrap_admin_password_file: None,
            bootstrap_admin_email: None,
            hash_workers: None,
            // No cgroup file system: workers by CPUs only, whatever machine runs the tests.
            cgroup_root: std::env::temp_dir().join("no-cgroup-file-system"),
            hash_queue: 64,
            hash_per_client: None,
            // Tests share a loaded machine with other tests: hashing at idle priority and a
            // wait bound would make their answers depend on that load. The defaults have tests
            // of their own (`password.rs`, `password/workers.rs`).
            hash_max_wait: Duration::from_secs(3600),
            hash_priority: password::Priority::Normal,
            signin_max_failures: 10,
            signin_window: Duration::from_secs(15 * 60),
            signin_account_max_failures: 100,
            signin_account_window: Duration::from_secs(3600),
            signup_max_taken: 10,
            signup_window: Duration::from_secs(15 * 60),
            trusted_peers: vec!["127.0.0.1".to_owned()],
            forwarding_secret: None,
            forwarding_secret_file: None,
            revocation_poll: None,
            revocation_heartbeat: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests;
