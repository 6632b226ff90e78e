//! How every service turns its configuration into validated settings.
//!
//! Each service's `config.rs` has a clap `Config` (flags, and the environment variables Kubernetes
//! sets) and a `Settings` built from it once by `TryFrom<Config>`, which checks everything that
//! can be checked without a network and derives every value the service uses. Failures are one
//! [`ConfigError`] naming the setting; [`load`] prints it on one line and exits with `EX_USAGE`
//! before any port is bound. Secrets may come as a value or as a mounted file ([`secret`]).

use std::{path::Path, process::ExitCode};

use ipnet::IpNet;
use secrecy::SecretString;

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
    fn networks_are_addresses_or_cidrs() {
        let list = ["10.0.0.0/8".to_owned(), " ::1 ".to_owned(), String::new()];
        let nets = networks(&list, "X").unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
        assert!(networks(&["10.0.0.0/33".to_owned()], "X").is_err());
        assert!(networks(&["gateway".to_owned()], "X").is_err());
    }
}
