//! How every service turns its configuration into validated settings.
//!
//! Each service's `config.rs` has a clap `Config` (flags, and the environment variables Kubernetes
//! sets) and a `Settings` built from it once by `TryFrom<Config>`, which checks everything that
//! can be checked without a network and derives every value the service uses. Failures are one
//! [`ConfigError`] naming the setting; [`validate`] prints it on one line and exits with `EX_USAGE`
//! before any port is bound. Secrets may come as a value or as a mounted file ([`secret`]).

use std::{num::NonZeroUsize, path::Path, process::ExitCode};

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

/// Validates the parsed command line and environment. On a bad setting prints
/// `invalid configuration: …` and returns the exit code to leave with.
pub fn validate<C, S>(config: C) -> Result<S, ExitCode>
where
    S: TryFrom<C, Error = ConfigError>,
{
    S::try_from(config).map_err(|error| {
        eprintln!("invalid configuration: {error}");
        ExitCode::from(EX_USAGE)
    })
}

/// The threads that run a service's requests, as its `Config` sets them: read from the flags and
/// environment before the runtime starts, so the runtime can be built with them.
pub trait WorkerThreads {
    /// `None`: one per CPU the process may use (its affinity mask and cgroup CPU quota).
    fn worker_threads(&self) -> Option<NonZeroUsize> {
        None
    }
}

/// The most worker threads a setting accepts: more only adds threads that wait.
pub const MAX_WORKER_THREADS: u16 = 1024;

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

/// The shortest forwarding secret accepted: as long as 24 random bytes in base64.
pub const MIN_FORWARDING_SECRET_LEN: usize = 32;

/// The forwarding secret (as [`secret`] reads it), with which the gateway proves to
/// auth-service and resource-service that the client address it forwards is its own finding.
/// It travels as gRPC metadata, so it must be printable ASCII without spaces, and at least
/// [`MIN_FORWARDING_SECRET_LEN`] long. Errors never carry the value.
pub fn forwarding_secret(
    value: Option<SecretString>,
    file: Option<&Path>,
    setting: &'static str,
    file_setting: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    use secrecy::ExposeSecret;
    let Some(secret) = self::secret(value, file, setting, file_setting)? else {
        return Ok(None);
    };
    let text = secret.expose_secret();
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            setting,
            "may hold only printable ASCII without spaces (e.g. base64 of random bytes)",
        ));
    }
    if text.len() < MIN_FORWARDING_SECRET_LEN {
        return Err(ConfigError::new(
            setting,
            format!("must be at least {MIN_FORWARDING_SECRET_LEN} characters"),
        ));
    }
    Ok(Some(secret))
}

/// A service account's client id and secret, with which a service gets its own access tokens
/// (auth-service's client-credentials grant).
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// The names of the three settings a service's client credentials come from, e.g.
/// `DIRECTORY_CLIENT_ID`, `DIRECTORY_CLIENT_SECRET` and `DIRECTORY_CLIENT_SECRET_FILE`.
#[derive(Clone, Copy, Debug)]
pub struct ClientCredentialSettings {
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub client_secret_file: &'static str,
}

/// The client id from its setting, the secret from its own setting or from a mounted file (as
/// [`secret`] reads it: one trailing newline dropped). None of the three: `None`, the service
/// has no identity of its own. One without the other, an empty secret, or an id with spaces or
/// control characters: an error naming the setting to fix, never with the secret's value.
pub fn client_credentials(
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    client_secret_file: Option<&Path>,
    names: ClientCredentialSettings,
) -> Result<Option<ClientCredentials>, ConfigError> {
    use secrecy::ExposeSecret;
    let client_id = client_id.filter(|id| !id.is_empty());
    let client_secret = secret(
        client_secret,
        client_secret_file,
        names.client_secret,
        names.client_secret_file,
    )?;
    match (client_id, client_secret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            names.client_secret,
            format!(
                "{} is set: set {} or {} too",
                names.client_id, names.client_secret, names.client_secret_file
            ),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            names.client_id,
            format!(
                "a client secret is set ({} or {}) but no client id",
                names.client_secret, names.client_secret_file
            ),
        )),
        (Some(client_id), Some(client_secret)) => {
            if client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    names.client_id,
                    "a client id has no spaces or control characters",
                ));
            }
            if client_secret.expose_secret().is_empty() {
                return Err(ConfigError::new(names.client_secret, "is empty"));
            }
            Ok(Some(ClientCredentials {
                client_id,
                client_secret,
            }))
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
    fn a_forwarding_secret_is_long_printable_ascii_and_errors_never_show_it() {
        let good = "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0";
        let value = forwarding_secret(Some(good.into()), None, "X", "X_FILE").unwrap();
        assert_eq!(value.unwrap().expose_secret(), good);
        assert!(
            forwarding_secret(None, None, "X", "X_FILE")
                .unwrap()
                .is_none()
        );
        for bad in [
            "too-short-but-printable",
            "has a space in it, which metadata keeps",
            "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0\u{e9}",
            "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0\t",
        ] {
            let error = forwarding_secret(Some(bad.into()), None, "X", "X_FILE").unwrap_err();
            assert_eq!(error.setting, "X", "{bad:?}");
            assert!(!error.to_string().contains(bad), "{error}");
        }
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

    const NAMES: ClientCredentialSettings = ClientCredentialSettings {
        client_id: "X_CLIENT_ID",
        client_secret: "X_CLIENT_SECRET",
        client_secret_file: "X_CLIENT_SECRET_FILE",
    };

    #[test]
    fn client_credentials_come_from_the_id_and_the_secret_or_its_file() {
        assert!(
            client_credentials(None, None, None, NAMES)
                .unwrap()
                .is_none()
        );
        let from_env = client_credentials(Some("c1".into()), Some("s1".into()), None, NAMES)
            .unwrap()
            .unwrap();
        assert_eq!(from_env.client_id, "c1");
        assert_eq!(from_env.client_secret.expose_secret(), "s1");
        let path = file_with("client-secret", "topsecret-2\n");
        let from_file = client_credentials(Some("c2".into()), None, Some(&path), NAMES)
            .unwrap()
            .unwrap();
        assert_eq!(from_file.client_secret.expose_secret(), "topsecret-2");
        assert!(
            !format!("{from_file:?}").contains("topsecret"),
            "{from_file:?}"
        );
    }

    #[test]
    fn half_a_pair_of_client_credentials_names_the_missing_setting() {
        let error = client_credentials(Some("c".into()), None, None, NAMES).unwrap_err();
        assert_eq!(error.setting, "X_CLIENT_SECRET");
        assert!(
            error.to_string().contains("X_CLIENT_SECRET_FILE"),
            "{error}"
        );
        let error = client_credentials(None, Some("hunter2".into()), None, NAMES).unwrap_err();
        assert_eq!(error.setting, "X_CLIENT_ID");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error =
            client_credentials(Some("a b".into()), Some("s".into()), None, NAMES).unwrap_err();
        assert_eq!(error.setting, "X_CLIENT_ID");
        let error = client_credentials(Some("c".into()), Some("".into()), None, NAMES).unwrap_err();
        assert_eq!(error.setting, "X_CLIENT_SECRET");
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
