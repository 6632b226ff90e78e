//! The database a service is configured with, made ready at start-up, which failures mean
//! that it cannot be reached right now (so a call answers UNAVAILABLE, not INTERNAL), and the
//! check that keeps a service's readiness in step with its database, and the pool every store
//! queries through, which records how long callers wait for a connection ([`MeteredPool`]).

mod pool;

pub use pool::{ACQUIRE_TIMEOUTS_TOTAL, ACQUIRE_WAIT_SECONDS, MeteredPool};

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
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

/// How a service follows whether its database answers: one cheap round trip every `interval`,
/// each given at most `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Checks {
    /// A check every second, failed after two: a service is reported not ready within about
    /// three seconds of its database going away (a load balancer checking every two seconds
    /// stops sending it calls within about five), and ready again within a second of its return.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Runs `check` every `checks.interval` for as long as the returned future is polled, and calls
/// `report` with `false` when the database stops answering (an error, or no answer within
/// `checks.timeout`) and with `true` when it answers again. The database is taken to answer at
/// the start: a service runs this once it has connected. Each change is logged once.
pub async fn follow_reachability<C, CF, E, R, RF>(checks: Checks, mut check: C, mut report: R)
where
    C: FnMut() -> CF,
    CF: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
    R: FnMut(bool) -> RF,
    RF: Future<Output = ()>,
{
    let mut reachable = true;
    let mut ticks = tokio::time::interval(checks.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = match tokio::time::timeout(checks.timeout, check()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if reachable {
                    let error: anyhow::Error = error.into();
                    tracing::warn!(error.cause_chain = ?error, "the database does not answer: not ready");
                }
                false
            }
            Err(_) => {
                if reachable {
                    tracing::warn!(timeout = ?checks.timeout, "the database does not answer in time: not ready");
                }
                false
            }
        };
        if now != reachable {
            if now {
                tracing::info!("the database answers again: ready");
            }
            reachable = now;
            report(now).await;
        }
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

    #[tokio::test]
    async fn reachability_is_reported_when_it_changes_and_a_hung_check_counts_as_down() {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicU8, Ordering},
        };
        // 0: answers, 1: fails, 2: hangs.
        let state = Arc::new(AtomicU8::new(0));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let checks = Checks {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(50),
        };
        let follower = tokio::spawn(follow_reachability(
            checks,
            {
                let state = state.clone();
                move || {
                    let state = state.load(Ordering::SeqCst);
                    async move {
                        match state {
                            0 => Ok(()),
                            1 => Err(anyhow::anyhow!("connection refused")),
                            _ => std::future::pending().await,
                        }
                    }
                }
            },
            {
                let reports = reports.clone();
                move |reachable| {
                    reports.lock().unwrap().push(reachable);
                    std::future::ready(())
                }
            },
        ));
        let settle = || tokio::time::sleep(Duration::from_millis(200));
        settle().await;
        assert!(
            reports.lock().unwrap().is_empty(),
            "reported while nothing changed"
        );
        for (next, want) in [
            (1, vec![false]),
            (0, vec![false, true]),
            (2, vec![false, true, false]),
            (0, vec![false, true, false, true]),
        ] {
            state.store(next, Ordering::SeqCst);
            settle().await;
            assert_eq!(*reports.lock().unwrap(), want, "after state {next}");
        }
        follower.abort();
    }
}
