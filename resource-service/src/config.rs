//! Everything the service is told from outside, read from flags or `RESOURCE_*` environment
//! variables and checked before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, builder::BoolishValueParser};
use secrecy::{ExposeSecret, SecretString};
use token::{Algorithm, Audience, Hs256Secret, KeyError};

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

    /// `postgres://…` or `sqlite:…`. Unset: the SQLite file `./data/resource.db`.
    #[arg(long, env = "RESOURCE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// auth-service replicas to fetch the token keys (JWKS) from, comma-separated.
    #[arg(
        long,
        env = "RESOURCE_AUTH_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: Vec<String>,

    /// EdDSA (keys from auth-service's JWKS) or HS256 (a shared secret; single-binary set-ups).
    #[arg(long, env = "RESOURCE_TOKEN_ALG", default_value = "EdDSA")]
    pub token_alg: Algorithm,

    /// The HS256 secret, at least 32 bytes; required with HS256 and refused otherwise.
    #[arg(long, env = "RESOURCE_HS256_SECRET", hide_env_values = true)]
    pub hs256_secret: Option<SecretString>,

    /// The `iss` every accepted token must carry.
    #[arg(long, env = "RESOURCE_TOKEN_ISSUER", default_value_t = Audience::default().issuer)]
    pub token_issuer: String,

    /// The `aud` every accepted token must carry.
    #[arg(long, env = "RESOURCE_TOKEN_AUDIENCE", default_value_t = Audience::default().audience)]
    pub token_audience: String,

    /// How many verified tokens to remember (about 1 KiB each); 0 verifies every call.
    #[arg(long, env = "RESOURCE_TOKEN_CACHE_CAPACITY", default_value_t = 10_000)]
    pub token_cache_capacity: u64,

    /// Seconds between background refreshes of the token keys.
    #[arg(long, env = "RESOURCE_JWKS_REFRESH_SECS", default_value_t = 60)]
    pub jwks_refresh_secs: u64,

    /// Load the tutorials' persons into an empty database.
    #[arg(
        long,
        env = "RESOURCE_SAMPLE_DATA",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub sample_data: bool,
}

/// Where the service keeps its SQLite file when no database URL is given.
pub const DEFAULT_SQLITE_PATH: &str = "./data/resource.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("RESOURCE_TOKEN_ALG=HS256 needs RESOURCE_HS256_SECRET")]
    MissingSecret,
    #[error("RESOURCE_HS256_SECRET is set but RESOURCE_TOKEN_ALG is {0}; set one or the other")]
    UnusedSecret(Algorithm),
    #[error("RESOURCE_HS256_SECRET: {0}")]
    BadSecret(#[from] KeyError),
    #[error("RESOURCE_AUTH_URL must name at least one auth-service URL")]
    NoAuthUrl,
    #[error("RESOURCE_AUTH_URL: {0:?} is not an http:// or https:// URL")]
    BadAuthUrl(String),
    #[error("RESOURCE_DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    BadDatabaseUrl,
    #[error("RESOURCE_TOKEN_ISSUER and RESOURCE_TOKEN_AUDIENCE must not be empty")]
    EmptyAudience,
    #[error("RESOURCE_JWKS_REFRESH_SECS must be at least 1")]
    ZeroRefresh,
}

/// How tokens are checked, once the configuration has been validated.
#[derive(Clone, Debug)]
pub enum TokenKeys {
    /// Ed25519 keys fetched from these auth-service replicas.
    Jwks(Vec<String>),
    Hs256(Hs256Secret),
}

impl Config {
    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.token_keys()?;
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(ConfigError::BadDatabaseUrl);
            }
        }
        if self.token_issuer.is_empty() || self.token_audience.is_empty() {
            return Err(ConfigError::EmptyAudience);
        }
        if self.jwks_refresh_secs == 0 {
            return Err(ConfigError::ZeroRefresh);
        }
        Ok(())
    }

    pub fn token_keys(&self) -> Result<TokenKeys, ConfigError> {
        match (self.token_alg, &self.hs256_secret) {
            (Algorithm::HS256, None) => Err(ConfigError::MissingSecret),
            (Algorithm::HS256, Some(secret)) => Ok(TokenKeys::Hs256(Hs256Secret::new(
                secret.expose_secret().as_bytes(),
            )?)),
            (alg, Some(_)) => Err(ConfigError::UnusedSecret(alg)),
            (Algorithm::EdDSA, None) => {
                let urls: Vec<String> = self
                    .auth_url
                    .iter()
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect();
                if urls.is_empty() {
                    return Err(ConfigError::NoAuthUrl);
                }
                if let Some(bad) = urls.iter().find(|u| {
                    !(u.starts_with("http://") || u.starts_with("https://"))
                        || u.parse::<tonic::transport::Uri>().is_err()
                }) {
                    return Err(ConfigError::BadAuthUrl(bad.clone()));
                }
                Ok(TokenKeys::Jwks(urls))
            }
        }
    }

    pub fn audience(&self) -> Audience {
        Audience {
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
        }
    }

    pub fn jwks_refresh_interval(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs)
    }

    /// The database to open: the configured URL, or the default SQLite file (whose directory
    /// is created when missing).
    pub fn database_url(&self) -> anyhow::Result<SecretString> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let path = PathBuf::from(DEFAULT_SQLITE_PATH);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("failed to create {}: {e}", dir.display()))?;
        }
        Ok(format!("sqlite://{}", path.display()).into())
    }

    /// A configuration for tests: port 0, a fresh SQLite file in the temp directory, HS256 with
    /// a fixed test secret, no sample data. Tests change fields as they need.
    pub fn for_tests() -> Self {
        let dir = std::env::temp_dir().join("resource-service-tests");
        // If this fails, opening the database reports it with the path.
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}.db", uuid::Uuid::new_v4()));
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: Some(format!("sqlite://{}", file.display()).into()),
            auth_url: Vec::new(),
            token_alg: Algorithm::HS256,
            hs256_secret: Some(TEST_HS256_SECRET.into()),
            token_issuer: Audience::default().issuer,
            token_audience: Audience::default().audience,
            token_cache_capacity: 1_000,
            jwks_refresh_secs: 60,
            sample_data: false,
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

/// The HS256 secret of [`Config::for_tests`]; never use it anywhere else.
pub const TEST_HS256_SECRET: &str = "test-only-secret-0123456789abcdefghij";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("resource-service").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_eddsa_against_a_local_auth_service() {
        // Only valid when the RESOURCE_* variables are unset, as they are under `cargo test`.
        let config = parse(&[]).unwrap();
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50052");
        assert!(config.database_url.is_none());
        assert!(!config.sample_data);
        assert!(
            matches!(config.token_keys(), Ok(TokenKeys::Jwks(urls)) if urls == ["http://127.0.0.1:50051"])
        );
        assert_eq!(config.audience(), Audience::default());
    }

    #[test]
    fn several_auth_urls_are_comma_separated() {
        let config = parse(&["--auth-url", "http://a:1,http://b:2"]).unwrap();
        assert!(matches!(config.token_keys(), Ok(TokenKeys::Jwks(urls)) if urls.len() == 2));
    }

    #[test]
    fn sample_data_accepts_true_and_false() {
        assert!(parse(&["--sample-data", "true"]).unwrap().sample_data);
        assert!(!parse(&["--sample-data", "false"]).unwrap().sample_data);
        assert!(parse(&["--sample-data", "maybe"]).is_err());
    }

    #[test]
    fn hs256_needs_a_long_enough_secret() {
        let mut config = Config::for_tests();
        assert!(config.validate().is_ok());
        config.hs256_secret = Some("short".into());
        assert!(matches!(config.validate(), Err(ConfigError::BadSecret(_))));
        config.hs256_secret = None;
        assert!(matches!(config.validate(), Err(ConfigError::MissingSecret)));
    }

    #[test]
    fn a_secret_without_hs256_is_refused() {
        let mut config = Config::for_tests().with_jwks(vec!["http://127.0.0.1:1".into()]);
        assert!(config.validate().is_ok());
        config.hs256_secret = Some(TEST_HS256_SECRET.into());
        assert!(matches!(
            config.validate(),
            Err(ConfigError::UnusedSecret(_))
        ));
    }

    #[test]
    fn bad_urls_are_refused_before_start() {
        let config = Config::for_tests().with_jwks(vec![]);
        assert!(matches!(config.validate(), Err(ConfigError::NoAuthUrl)));
        let config = Config::for_tests().with_jwks(vec!["127.0.0.1:50051".into()]);
        assert!(matches!(config.validate(), Err(ConfigError::BadAuthUrl(_))));
        let mut config = Config::for_tests();
        config.database_url = Some("mysql://x".into());
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadDatabaseUrl)
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = Config::for_tests();
        config.database_url = Some("postgres://u:hunter2@db/x".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains(TEST_HS256_SECRET));
    }
}
