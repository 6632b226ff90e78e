//! Configuration from flags or `AUTH_*` environment variables, checked before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose};
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use token::{Algorithm, Audience, Hs256Secret};

use crate::{
    accounts::BootstrapAdmin,
    domain::{Email, Password, Username},
    signing::{KeyConfig, KeyEncryptionKey},
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
    #[arg(long, env = "AUTH_DATABASE_URL")]
    pub database_url: Option<SecretString>,

    /// Where the embedded SQLite database lives when no database URL is given.
    #[arg(long, env = "AUTH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[arg(long, env = "AUTH_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Lifetime of access tokens, e.g. `15m`, `900s`, `1h`.
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// `EdDSA` (Ed25519, keys in the database, public keys in the JWKS) or `HS256` (a shared
    /// secret, for single-binary set-ups).
    #[arg(long, env = "AUTH_TOKEN_ALG", default_value = "EdDSA")]
    pub token_alg: Algorithm,

    /// The HS256 secret, at least 32 bytes. Only with `AUTH_TOKEN_ALG=HS256`.
    #[arg(long, env = "AUTH_HS256_SECRET", hide_env_values = true)]
    pub hs256_secret: Option<SecretString>,

    /// Base64 of 32 random bytes that seal the signing keys stored in the database.
    #[arg(long, env = "AUTH_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<SecretString>,

    /// The `iss` claim of issued tokens.
    #[arg(long, env = "AUTH_TOKEN_ISSUER", default_value = "auth-service")]
    pub token_issuer: String,

    /// The `aud` claim of issued tokens; verifiers must expect the same.
    #[arg(long, env = "AUTH_TOKEN_AUDIENCE", default_value = "persons-api")]
    pub token_audience: String,

    /// The first admin, created once if absent.
    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_USERNAME")]
    pub bootstrap_admin_username: Option<String>,

    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub bootstrap_admin_password: Option<SecretString>,

    /// Defaults to `<username>@localhost`.
    #[arg(long, env = "AUTH_BOOTSTRAP_ADMIN_EMAIL")]
    pub bootstrap_admin_email: Option<String>,

    /// Password hashes computed at once; defaults to the number of CPUs.
    #[arg(long, env = "AUTH_HASH_WORKERS")]
    pub hash_workers: Option<usize>,

    /// Password checks allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
}

impl Config {
    /// Defaults for tests: any free port, a fresh SQLite file, nothing read from the environment.
    pub fn for_tests() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: None,
            data_dir: std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::new_v4())),
            db_max_connections: 5,
            access_token_ttl: Duration::from_secs(900),
            token_alg: Algorithm::EdDSA,
            hs256_secret: None,
            key_encryption_key: None,
            token_issuer: Audience::default().issuer,
            token_audience: Audience::default().audience,
            bootstrap_admin_username: None,
            bootstrap_admin_password: None,
            bootstrap_admin_email: None,
            hash_workers: None,
            hash_queue: 64,
        }
    }

    pub fn audience(&self) -> Audience {
        Audience {
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
        }
    }

    pub fn hash_workers(&self) -> usize {
        self.hash_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> anyhow::Result<()> {
        // Access tokens cannot be recalled once issued, so they must be short-lived.
        if self.access_token_ttl < Duration::from_secs(10)
            || self.access_token_ttl > Duration::from_secs(3600)
        {
            bail!("AUTH_ACCESS_TOKEN_TTL must be between 10s and 1h");
        }
        if self.token_issuer.is_empty() || self.token_audience.is_empty() {
            bail!("AUTH_TOKEN_ISSUER and AUTH_TOKEN_AUDIENCE must not be empty");
        }
        if self.db_max_connections == 0 {
            bail!("AUTH_DB_MAX_CONNECTIONS must be at least 1");
        }
        self.key_config()?;
        self.bootstrap_admin()?;
        Ok(())
    }

    pub fn key_config(&self) -> anyhow::Result<KeyConfig> {
        match (self.token_alg, &self.hs256_secret) {
            (Algorithm::HS256, Some(secret)) => Ok(KeyConfig::Hs256(
                Hs256Secret::new(secret.expose_secret().as_bytes())
                    .context("AUTH_HS256_SECRET is unusable")?,
            )),
            (Algorithm::HS256, None) => {
                bail!("AUTH_TOKEN_ALG=HS256 needs AUTH_HS256_SECRET (at least 32 bytes)")
            }
            (Algorithm::EdDSA, Some(_)) => bail!(
                "AUTH_HS256_SECRET is set but AUTH_TOKEN_ALG is EdDSA; set AUTH_TOKEN_ALG=HS256 or remove the secret"
            ),
            (Algorithm::EdDSA, None) => {
                let kek = self
                    .key_encryption_key
                    .as_ref()
                    .map(|k| {
                        let text = k.expose_secret().trim();
                        let bytes = general_purpose::STANDARD
                            .decode(text)
                            .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(text))
                            .map_err(|_| {
                                anyhow::anyhow!("AUTH_KEY_ENCRYPTION_KEY is not valid base64")
                            })?;
                        KeyEncryptionKey::new(bytes).context("AUTH_KEY_ENCRYPTION_KEY is unusable")
                    })
                    .transpose()?;
                Ok(KeyConfig::Ed25519 { kek })
            }
        }
    }

    pub fn bootstrap_admin(&self) -> anyhow::Result<Option<BootstrapAdmin>> {
        match (
            &self.bootstrap_admin_username,
            &self.bootstrap_admin_password,
        ) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => {
                let username = Username::parse(username)
                    .map_err(|e| anyhow::anyhow!("AUTH_BOOTSTRAP_ADMIN_USERNAME: {e}"))?;
                let email = self
                    .bootstrap_admin_email
                    .clone()
                    .unwrap_or_else(|| format!("{username}@localhost.localdomain"));
                let email = Email::parse(&email)
                    .map_err(|e| anyhow::anyhow!("AUTH_BOOTSTRAP_ADMIN_EMAIL: {e}"))?;
                let password = Password::parse(password.clone())
                    .map_err(|e| anyhow::anyhow!("AUTH_BOOTSTRAP_ADMIN_PASSWORD: {e}"))?;
                Ok(Some(BootstrapAdmin {
                    username,
                    email,
                    password,
                }))
            }
            _ => bail!(
                "set both AUTH_BOOTSTRAP_ADMIN_USERNAME and AUTH_BOOTSTRAP_ADMIN_PASSWORD, or neither"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Config::for_tests().validate().unwrap();
    }

    #[test]
    fn a_short_hs256_secret_is_refused() {
        let mut config = Config::for_tests();
        config.token_alg = Algorithm::HS256;
        config.hs256_secret = Some("short".into());
        let error = format!("{:#}", config.validate().unwrap_err());
        assert!(error.contains("at least 32 bytes"), "{error}");
        assert!(
            !error.contains("short\""),
            "the secret must not be echoed: {error}"
        );
    }

    #[test]
    fn hs256_without_a_secret_is_refused() {
        let mut config = Config::for_tests();
        config.token_alg = Algorithm::HS256;
        assert!(config.validate().is_err());
    }

    #[test]
    fn half_a_bootstrap_admin_is_refused() {
        let mut config = Config::for_tests();
        config.bootstrap_admin_username = Some("root".into());
        assert!(config.validate().is_err());
        config.bootstrap_admin_password = Some("short".into());
        assert!(config.validate().is_err());
        config.bootstrap_admin_password = Some("long enough password".into());
        config.validate().unwrap();
    }

    #[test]
    fn a_kek_must_decode_to_32_bytes() {
        let mut config = Config::for_tests();
        config.key_encryption_key = Some("bm90IDMyIGJ5dGVz".into());
        assert!(config.validate().is_err());
        config.key_encryption_key = Some(general_purpose::STANDARD.encode([7u8; 32]).into());
        config.validate().unwrap();
    }
}
