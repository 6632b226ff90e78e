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
    signing::{KekSource, KeyConfig, KeyEncryptionKey},
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

    /// How often expired sessions and revocations are deleted.
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

    /// The `iss` claim of issued tokens.
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

    /// Password hashes computed at once; defaults to the number of CPUs.
    #[arg(long, env = "AUTH_HASH_WORKERS")]
    pub hash_workers: Option<usize>,

    /// Password checks allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,

    /// Peers (the gateway) whose `x-forwarded-for` metadata names the client; IPs or CIDRs,
    /// comma-separated. Any other caller is known by its own address.
    #[arg(
        long,
        env = "AUTH_TRUSTED_PEERS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1"
    )]
    pub trusted_peers: Vec<String>,
}

/// Everything the service was told, checked and in the form it uses.
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub database: Database,
    pub db_max_connections: u32,
    pub keys: KeyConfig,
    pub audience: Audience,
    pub access_token_ttl: Duration,
    pub sessions: SessionPolicy,
    pub prune_interval: Duration,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    pub hash_workers: usize,
    pub hash_queue: usize,
    pub trusted_peers: Vec<IpNet>,
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        // Access tokens are only recalled by expiry, so they must be short-lived.
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&config.access_token_ttl)
        {
            return Err(ConfigError::new(
                "AUTH_ACCESS_TOKEN_TTL",
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
            on_postgres: matches!(&database, Database::Url(url) if !url.expose_secret().starts_with("sqlite:")),
            generated_file: config.data_dir.join("key-encryption-key"),
        };
        Ok(Self {
            grpc_addr: config.grpc_addr,
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
            hash_workers: config
                .hash_workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            hash_queue: config.hash_queue,
            trusted_peers: settings::networks(&config.trusted_peers, "AUTH_TRUSTED_PEERS")?,
        })
    }
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
            database_url: None,
            database_url_file: None,
            data_dir: std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::new_v4())),
            db_max_connections: 5,
            access_token_ttl: Duration::from_secs(900),
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
            hash_queue: 64,
            trusted_peers: vec!["127.0.0.1".to_owned()],
        }
    }
}

#[cfg(test)]
mod tests;
