//! The database a service is configured with, made ready at start-up, and which failures mean
//! that it cannot be reached right now (so a call answers UNAVAILABLE, not INTERNAL).

use std::{fmt, path::PathBuf};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use settings::ConfigError;

/// The database a service is configured with.
#[derive(Clone)]
pub enum Database {
    /// The embedded default: a SQLite file, created (with its directory) at start.
    SqliteFile(PathBuf),
    /// `postgres://…` or `postgresql://…` for replicas sharing one database, or `sqlite:…`.
    Url(SecretString),
}

impl Database {
    /// The configured URL, checked for a scheme we can open, or the SQLite file `default_file`.
    pub fn new(
        url: Option<SecretString>,
        default_file: PathBuf,
        setting: &'static str,
    ) -> Result<Self, ConfigError> {
        let Some(url) = url else {
            return Ok(Self::SqliteFile(default_file));
        };
        let known = ["postgres://", "postgresql://", "sqlite:"]
            .iter()
            .any(|scheme| url.expose_secret().starts_with(scheme));
        if !known {
            return Err(ConfigError::new(
                setting,
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        Ok(Self::Url(url))
    }

    /// The URL to connect to; for the embedded file, after creating its directory. This is the
    /// one side effect of the configuration, and it happens at start-up, not while parsing.
    pub fn prepare(&self) -> anyhow::Result<SecretString> {
        match self {
            Self::Url(url) => Ok(url.clone()),
            Self::SqliteFile(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("failed to create the data directory {}", dir.display())
                    })?;
                }
                Ok(format!("sqlite://{}", path.display()).into())
            }
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            // The URL may carry a password.
            Self::Url(_) => f.write_str("Url([REDACTED])"),
        }
    }
}

/// Whether `error` means the database cannot be reached right now, so the same call may succeed
/// shortly: the pool gave up waiting or was closed, the connection broke, or PostgreSQL refused
/// the connection (SQLSTATE class 08) or is shutting down or starting up (57P01 to 57P03).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|pg| {
                let code = pg.code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_needs_a_scheme_we_can_open_and_is_never_printed() {
        let default = PathBuf::from("./data/x.db");
        let url = Some("postgres://u:hunter2@db/x".into());
        let database = Database::new(url, default.clone(), "X_DATABASE_URL").unwrap();
        assert!(!format!("{database:?}").contains("hunter2"));
        let error = Database::new(
            Some("mysql://db/x".into()),
            default.clone(),
            "X_DATABASE_URL",
        )
        .unwrap_err();
        assert_eq!(error.setting, "X_DATABASE_URL");
        assert!(matches!(
            Database::new(None, default, "X").unwrap(),
            Database::SqliteFile(_)
        ));
    }

    #[test]
    fn preparing_the_embedded_file_creates_its_directory() {
        let dir = std::env::temp_dir().join(format!("settings-db-{}", std::process::id()));
        let database = Database::SqliteFile(dir.join("nested/x.db"));
        let url = database.prepare().unwrap();
        assert!(dir.join("nested").is_dir());
        assert!(url.expose_secret().starts_with("sqlite://"));
    }

    #[test]
    fn a_lost_or_closed_pool_is_unavailable_and_a_missing_row_is_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
