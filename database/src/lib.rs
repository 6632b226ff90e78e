//! The database a service is configured with, made ready at start-up, and which failures mean
//! that it cannot be reached right now (so a call answers UNAVAILABLE, not INTERNAL).

use std::{
    fmt,
    path::{Path, PathBuf},
};

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
    ///
    /// The embedded file holds password hashes and signing keys, so a directory created here is
    /// `0700` and the file (with its `-wal` and `-shm` companions) `0600`, whatever the umask.
    /// The file is created here rather than by SQLite because SQLite creates it `0644` and gives
    /// the write-ahead log the database file's mode.
    pub fn prepare(&self) -> anyhow::Result<SecretString> {
        match self {
            Self::Url(url) => Ok(url.clone()),
            Self::SqliteFile(path) => {
                prepare_file(path).with_context(|| {
                    format!("failed to prepare the database file {}", path.display())
                })?;
                Ok(format!("sqlite://{}", path.display()).into())
            }
        }
    }
}

fn prepare_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    private_file(path)?;
    for companion in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(companion);
        let companion = PathBuf::from(name);
        if companion.exists() {
            restrict(&companion, 0o600)?;
        }
    }
    Ok(())
}

/// Creates `dir` (and its missing parents) readable by the owner only. A directory that already
/// exists keeps its mode: it may be shared (`/tmp`, a home directory) and is not ours to change;
/// the files in it are what must be private.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    restrict(dir, 0o700)
}

/// Creates `path` empty if it is missing, and makes it readable and writable by the owner only,
/// also when an earlier version left it world-readable.
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    restrict(path, 0o600)
}

/// Sets the exact mode, which a umask cannot widen or narrow.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
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
/// shortly: the pool gave up waiting or was closed, the connection broke, PostgreSQL refused the
/// connection (SQLSTATE class 08, 53300) or is shutting down, starting up or a read-only standby
/// (57P01 to 57P03, 25006), or SQLite stayed busy past its timeout.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                // Also: too many connections, and a read-only standby right after a failover.
                return code.starts_with("08")
                    || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006");
            }
            // SQLite still busy or locked after the busy timeout (primary codes 5 and 6).
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && db
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6))
        }
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

    #[cfg(unix)]
    #[test]
    fn the_embedded_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("database-private-{}", std::process::id()));
        let file = dir.join("data/x.db");
        Database::SqliteFile(file.clone()).prepare().unwrap();
        assert_eq!(mode(&dir.join("data")), 0o700);
        assert_eq!(mode(&file), 0o600);

        // Files an earlier version left world-readable are tightened on the next start.
        let wal = dir.join("data/x.db-wal");
        std::fs::write(&wal, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        Database::SqliteFile(file.clone()).prepare().unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&wal), 0o600);
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
