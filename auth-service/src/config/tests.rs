use base64::{Engine, engine::general_purpose};

use super::*;

fn settings(config: Config) -> Result<Settings, ConfigError> {
    Settings::try_from(config)
}

#[test]
fn the_defaults_are_valid() {
    settings(Config::for_tests()).unwrap();
}

#[test]
fn a_short_hs256_secret_is_refused() {
    let mut config = Config::for_tests();
    config.token_alg = Algorithm::HS256;
    config.hs256_secret = Some("short".into());
    let error = settings(config).err().unwrap().to_string();
    assert!(error.contains("at least 32 bytes"), "{error}");
    assert!(
        !error.contains("short\""),
        "the secret must not be echoed: {error}"
    );
}

#[test]
fn a_key_encryption_key_with_hs256_is_refused_rather_than_ignored() {
    let mut config = Config::for_tests();
    config.token_alg = Algorithm::HS256;
    config.hs256_secret = Some("an HS256 secret of at least 32 bytes!".into());
    settings(config.clone()).unwrap();
    config.key_encryption_key = Some(general_purpose::STANDARD.encode([7u8; 32]).into());
    let error = settings(config).err().unwrap();
    assert_eq!(error.setting, "AUTH_KEY_ENCRYPTION_KEY");
}

#[test]
fn hs256_without_a_secret_is_refused() {
    let mut config = Config::for_tests();
    config.token_alg = Algorithm::HS256;
    assert!(settings(config).is_err());
}

#[test]
fn half_a_bootstrap_admin_is_refused() {
    let mut config = Config::for_tests();
    config.bootstrap_admin_username = Some("root".into());
    assert!(settings(config.clone()).is_err());
    config.bootstrap_admin_password = Some("short".into());
    assert!(settings(config.clone()).is_err());
    config.bootstrap_admin_password = Some("long enough password".into());
    settings(config).unwrap();
}

#[test]
fn a_kek_must_decode_to_32_bytes() {
    let mut config = Config::for_tests();
    config.key_encryption_key = Some("bm90IDMyIGJ5dGVz".into());
    assert!(settings(config.clone()).is_err());
    config.key_encryption_key = Some(general_purpose::STANDARD.encode([7u8; 32]).into());
    settings(config).unwrap();
}

#[test]
fn secrets_can_come_from_mounted_files() {
    let dir = std::env::temp_dir().join(format!("auth-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let kek = dir.join("kek");
    std::fs::write(&kek, general_purpose::STANDARD.encode([7u8; 32]) + "\n").unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "long enough password\n").unwrap();
    let mut config = Config::for_tests();
    config.key_encryption_key_file = Some(kek);
    config.bootstrap_admin_username = Some("root".into());
    config.bootstrap_admin_password_file = Some(password);
    let settings = settings(config).unwrap();
    assert!(matches!(
        settings.keys,
        KeyConfig::Ed25519 {
            kek: KekSource::Configured(_),
            ..
        }
    ));
    let admin = settings.bootstrap_admin.unwrap();
    assert_eq!(
        admin.password.secret().expose_secret(),
        "long enough password"
    );
}

#[test]
fn reading_the_configuration_creates_nothing() {
    let mut config = Config::for_tests();
    let data_dir = config.data_dir.clone();
    config.database_url = None;
    let settings = settings(config).unwrap();
    assert!(matches!(settings.database, Database::SqliteFile(_)));
    assert!(!data_dir.exists());
}

#[test]
fn every_secret_hides_its_environment_value_from_help() {
    use clap::CommandFactory;
    let command = Config::command();
    let secrets: Vec<_> = command
        .get_arguments()
        .filter(|arg| {
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            ["URL", "SECRET", "KEY", "PASSWORD"]
                .iter()
                .any(|word| env.ends_with(word))
        })
        .collect();
    assert_eq!(
        secrets.len(),
        6,
        "database URL, HS256 secret, KEK, previous KEK, admin password, forwarding secret"
    );
    for arg in secrets {
        assert!(arg.is_hide_env_values_set(), "{:?}", arg.get_env());
    }
}

#[test]
fn trusted_peers_must_be_addresses_or_networks() {
    let mut config = Config::for_tests();
    config.trusted_peers = vec!["10.0.0.0/8".into(), "gateway".into()];
    let error = settings(config).err().unwrap();
    assert_eq!(error.setting, "AUTH_TRUSTED_PEERS");
}

#[test]
fn postgres_without_a_key_encryption_key_is_refused() {
    let mut config = Config::for_tests();
    config.database_url = Some("postgres://auth:hunter2@db/auth".into());
    let error = settings(config.clone()).err().unwrap();
    assert_eq!(error.setting, "AUTH_KEY_ENCRYPTION_KEY");
    let message = error.to_string();
    assert!(
        message.contains("AUTH_KEY_ENCRYPTION_KEY_FILE"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    config.key_encryption_key = Some(general_purpose::STANDARD.encode([7u8; 32]).into());
    settings(config).unwrap();
}

#[test]
fn sqlite_without_a_key_encryption_key_generates_one_in_the_data_directory() {
    let config = Config::for_tests();
    let expected = config.data_dir.join("key-encryption-key");
    match settings(config).unwrap().keys {
        KeyConfig::Ed25519 {
            kek: KekSource::File(path),
            previous: None,
        } => assert_eq!(path, expected),
        _ => panic!("expected a generated key-encryption key file"),
    }
}

#[test]
fn a_previous_kek_needs_a_current_one_and_decodes_to_32_bytes() {
    let mut config = Config::for_tests();
    config.previous_key_encryption_key = Some(general_purpose::STANDARD.encode([7u8; 32]).into());
    let error = settings(config.clone()).err().unwrap();
    assert_eq!(error.setting, "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY");
    config.key_encryption_key = Some(general_purpose::STANDARD.encode([8u8; 32]).into());
    settings(config.clone()).unwrap();
    config.previous_key_encryption_key = Some("bm90IDMyIGJ5dGVz".into());
    assert_eq!(
        settings(config).err().unwrap().setting,
        "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY"
    );
}

#[test]
fn session_lifetimes_are_checked_against_each_other() {
    let days = |n: u64| Duration::from_secs(n * 86_400);
    let refused = |change: fn(&mut Config)| {
        let mut config = Config::for_tests();
        change(&mut config);
        settings(config).err().unwrap().setting
    };
    assert_eq!(
        refused(|c| c.refresh_absolute_ttl = Duration::from_secs(86_400)),
        "AUTH_REFRESH_ABSOLUTE_TTL"
    );
    assert_eq!(
        refused(|c| c.refresh_idle_ttl = Duration::from_secs(5)),
        "AUTH_REFRESH_IDLE_TTL"
    );
    assert_eq!(
        refused(|c| c.refresh_grace = Duration::from_secs(600)),
        "AUTH_REFRESH_GRACE"
    );
    assert_eq!(
        refused(|c| c.max_sessions_per_user = 0),
        "AUTH_MAX_SESSIONS_PER_USER"
    );
    let policy = settings(Config::for_tests()).unwrap().sessions;
    assert_eq!(policy.idle_ttl, days(14));
    assert_eq!(policy.absolute_ttl, days(30));
    assert_eq!(policy.refresh_grace, Duration::from_secs(10));
}

#[test]
fn session_defaults_parse_from_the_command_line() {
    let config = Config::try_parse_from([
        "auth-service",
        "--refresh-idle-ttl",
        "1h",
        "--refresh-absolute-ttl",
        "2d",
        "--refresh-grace",
        "3s",
    ])
    .unwrap();
    let policy = settings(config).unwrap().sessions;
    assert_eq!(policy.idle_ttl, Duration::from_secs(3600));
    assert_eq!(policy.absolute_ttl, Duration::from_secs(2 * 86_400));
    assert_eq!(policy.refresh_grace, Duration::from_secs(3));
    assert_eq!(policy.max_per_user, 20);
}

#[test]
fn throttle_limits_default_to_the_documented_values_and_refuse_zero_or_odd_windows() {
    let defaults = settings(Config::for_tests()).unwrap();
    assert_eq!(defaults.throttle, ThrottleSettings::default());
    assert_eq!(defaults.throttle.sign_in_per_client.max, 10);
    let parsed = Config::try_parse_from(["auth-service"]).unwrap();
    assert_eq!(parsed.signin_max_failures, 10);
    assert_eq!(parsed.signin_window, Duration::from_secs(15 * 60));
    assert_eq!(parsed.signin_account_max_failures, 100);
    assert_eq!(parsed.signin_account_window, Duration::from_secs(3600));

    let mut zero = Config::for_tests();
    zero.signin_max_failures = 0;
    assert_eq!(
        settings(zero).err().unwrap().setting,
        "AUTH_SIGNIN_MAX_FAILURES"
    );
    let mut long = Config::for_tests();
    long.signup_window = Duration::from_secs(2 * 24 * 3600);
    assert_eq!(settings(long).err().unwrap().setting, "AUTH_SIGNUP_WINDOW");
}

#[test]
fn a_client_may_hold_a_quarter_of_the_hashing_admission_by_default() {
    let mut config = Config::for_tests();
    config.hash_workers = Some(2);
    config.hash_queue = 62;
    assert_eq!(settings(config.clone()).unwrap().hash_per_client, 16);
    config.hash_queue = 0;
    assert_eq!(settings(config.clone()).unwrap().hash_per_client, 1);
    config.hash_per_client = Some(0);
    assert_eq!(
        settings(config).err().unwrap().setting,
        "AUTH_HASH_PER_CLIENT"
    );
}

/// A cgroup v2 root whose `memory.max` is `limit`, as a container sees its own cgroup.
fn cgroup_with_memory_max(limit: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("auth-cgroup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("memory.max"), format!("{limit}\n")).unwrap();
    root
}

#[test]
fn hash_workers_must_fit_in_the_memory_limit() {
    let mut config = Config::for_tests();
    config.cgroup_root = cgroup_with_memory_max("536870912");
    // 512 MiB: 64 MiB base + 23 × 19 MiB fit, 24 do not.
    config.hash_workers = Some(23);
    let fitting = settings(config.clone()).unwrap();
    assert_eq!(fitting.hash_workers, 23);
    assert_eq!(fitting.memory_limit, Some(512 * 1024 * 1024));
    config.hash_workers = Some(24);
    let error = settings(config.clone()).err().unwrap();
    assert_eq!(error.setting, "AUTH_HASH_WORKERS");
    assert!(error.problem.contains("at most 23"), "{error}");
    // By default, the CPUs but one, never more than fit.
    config.hash_workers = None;
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        settings(config.clone()).unwrap().hash_workers,
        (cpus - 1).clamp(1, 23)
    );
    std::fs::remove_dir_all(&config.cgroup_root).unwrap();

    config.cgroup_root = cgroup_with_memory_max("67108864");
    let error = settings(config.clone()).err().unwrap();
    assert_eq!(error.setting, "AUTH_HASH_WORKERS", "{error}");
    std::fs::remove_dir_all(&config.cgroup_root).unwrap();

    config.cgroup_root = cgroup_with_memory_max("max");
    config.hash_workers = Some(1000);
    assert_eq!(settings(config.clone()).unwrap().memory_limit, None);
    std::fs::remove_dir_all(&config.cgroup_root).unwrap();
}

#[test]
fn zero_hash_workers_are_refused() {
    let mut config = Config::for_tests();
    config.hash_workers = Some(0);
    assert_eq!(settings(config).err().unwrap().setting, "AUTH_HASH_WORKERS");
}

#[test]
fn an_unreadable_memory_limit_sizes_by_cpus() {
    let mut config = Config::for_tests();
    config.cgroup_root = cgroup_with_memory_max("garbage");
    let settings = settings(config.clone()).unwrap();
    assert_eq!(settings.memory_limit, None);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(settings.hash_workers, (cpus - 1).max(1));
    std::fs::remove_dir_all(&config.cgroup_root).unwrap();
}

#[test]
fn the_issuer_must_be_an_absolute_http_url_without_query_or_fragment() {
    let parsed = Config::try_parse_from(["auth-service"]).unwrap();
    assert_eq!(parsed.token_issuer, "http://127.0.0.1:8080");
    for ok in [
        "http://127.0.0.1:8080",
        "https://auth.example.com",
        "https://example.com/auth/",
    ] {
        let mut config = Config::for_tests();
        config.token_issuer = ok.into();
        assert_eq!(settings(config).unwrap().audience.issuer, ok);
    }
    for bad in [
        "auth-service",
        "/relative",
        "ftp://example.com",
        "https://example.com/?x=1",
        "https://example.com/#top",
        "https://user:pw@example.com",
        "http://",
    ] {
        let mut config = Config::for_tests();
        config.token_issuer = bad.into();
        let error = settings(config).err().unwrap();
        assert_eq!(error.setting, "AUTH_TOKEN_ISSUER", "{bad}");
        assert!(error.problem.contains("public base URL"), "{bad}: {error}");
    }
}

#[test]
fn the_service_token_lifetime_defaults_to_15_minutes_within_10s_to_1h() {
    let parsed = Config::try_parse_from(["auth-service"]).unwrap();
    assert_eq!(parsed.service_token_ttl, Duration::from_secs(900));
    for bad in [Duration::from_secs(9), Duration::from_secs(3601)] {
        let mut config = Config::for_tests();
        config.service_token_ttl = bad;
        assert_eq!(
            settings(config).err().unwrap().setting,
            "AUTH_SERVICE_TOKEN_TTL"
        );
    }
    let mut config = Config::for_tests();
    config.service_token_ttl = Duration::from_secs(3600);
    assert_eq!(
        settings(config).unwrap().service_token_ttl,
        Duration::from_secs(3600)
    );
}
