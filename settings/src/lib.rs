//! How every service turns its configuration into validated settings.
//!
//! Each service's `config.rs` has a clap `Config` (flags, and the environment variables Kubernetes
//! sets) and a `Settings` built from it once by `TryFrom<Config>`, which checks everything that
//! can be checked without a network and derives every value the service uses. Failures are one
//! [`ConfigError`] naming the setting; [`load`] prints it on one line and exits with `EX_USAGE`
//! before any port is bound. Secrets may come as a value or as a mounted file ([`secret`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    process::ExitCode,
};

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

/// A setting that cannot be used, and why. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable that names the setting, e.g. `AUTH_DATABASE_URL`.
    pub setting: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// `sysexits.h`' EX_USAGE: the configuration is unusable, restarting will not help.
pub const EX_USAGE: u8 = 64;

/// Parses the command line and environment, then validates. On a bad setting prints
/// `invalid configuration: …` and returns the exit code to leave with.
pub fn load<C, S>() -> Result<S, ExitCode>
where
    C: clap::Parser,
    S: TryFrom<C, Error = ConfigError>,
{
    S::try_from(C::parse()).map_err(|error| {
        eprintln!("invalid configuration: {error}");
        ExitCode::from(EX_USAGE)
    })
}

/// A secret given either as a value (`value`, from `setting`) or as the path of a file holding it
/// (`file`, from `file_setting`), as Kubernetes mounts a Secret. One trailing newline is dropped
/// from a file; giving both is an error, since one of them would be silently ignored.
pub fn secret(
    value: Option<SecretString>,
    file: Option<&Path>,
    setting: &'static str,
    file_setting: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            setting,
            format!("set either {setting} or {file_setting}, not both"),
        )),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(file_setting, format!("cannot read {}: {e}", path.display()))
            })?;
            let text = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if text.is_empty() {
                return Err(ConfigError::new(
                    file_setting,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(SecretString::from(text.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

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
    pub fn prepare(&self) -> std::io::Result<SecretString> {
        match self {
            Self::Url(url) => Ok(url.clone()),
            Self::SqliteFile(path) => {
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
                Ok(format!("sqlite://{}", path.display()).into())
            }
        }
    }
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

/// Networks given as a comma-separated list of addresses (`10.0.0.7`) or CIDRs (`10.0.0.0/8`);
/// empty entries are skipped.
pub fn networks(list: &[String], setting: &'static str) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        setting,
                        format!("{entry:?} is neither an IP address nor a CIDR network"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn file_with(name: &str, contents: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("settings-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_secret_comes_from_its_value_or_its_file_without_the_trailing_newline() {
        let value = secret(Some("s3cret".into()), None, "X", "X_FILE").unwrap();
        assert_eq!(value.unwrap().expose_secret(), "s3cret");
        let path = file_with("crlf", "from a file\r\n");
        let value = secret(None, Some(&path), "X", "X_FILE").unwrap();
        assert_eq!(value.unwrap().expose_secret(), "from a file");
        assert!(secret(None, None, "X", "X_FILE").unwrap().is_none());
    }

    #[test]
    fn both_forms_at_once_or_an_unreadable_file_are_refused_without_the_value() {
        let path = file_with("both", "x");
        let error = secret(Some("hunter2".into()), Some(&path), "X", "X_FILE").unwrap_err();
        assert_eq!(error.setting, "X");
        assert!(!error.to_string().contains("hunter2"));
        let missing = Path::new("/nonexistent/secret");
        let error = secret(None, Some(missing), "X", "X_FILE").unwrap_err();
        assert_eq!(error.setting, "X_FILE");
        assert!(error.to_string().contains("/nonexistent/secret"), "{error}");
    }

    #[test]
    fn an_empty_secret_file_is_refused() {
        let path = file_with("empty", "\n");
        assert!(secret(None, Some(&path), "X", "X_FILE").is_err());
    }

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
        let dir = std::env::temp_dir().join(format!("settings-private-{}", std::process::id()));
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
    fn networks_are_addresses_or_cidrs() {
        let list = ["10.0.0.0/8".to_owned(), " ::1 ".to_owned(), String::new()];
        let nets = networks(&list, "X").unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
        assert!(networks(&["10.0.0.0/33".to_owned()], "X").is_err());
        assert!(networks(&["gateway".to_owned()], "X").is_err());
    }
}
