use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    Config::try_parse_from(std::iter::once("resource-service").chain(args.iter().copied()))
}

fn settings(config: Config) -> Result<Settings, ConfigError> {
    Settings::try_from(config)
}

fn refused_for(config: Config) -> &'static str {
    settings(config).expect_err("refused").setting
}

#[test]
fn defaults_are_eddsa_against_a_local_auth_service() {
    // Only valid when the RESOURCE_* variables are unset, as they are under `cargo test`.
    let settings = settings(parse(&[]).unwrap()).unwrap();
    assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:50052");
    assert!(matches!(settings.database, Database::SqliteFile(_)));
    assert!(!settings.sample_data);
    assert!(
        matches!(settings.token_keys, TokenKeys::Jwks(urls) if urls == ["http://127.0.0.1:50051"])
    );
    assert_eq!(settings.audience, Audience::default());
    assert_eq!(settings.jwks_refresh, DEFAULT_JWKS_REFRESH);
}

#[test]
fn several_auth_urls_are_comma_separated() {
    let config = parse(&["--auth-url", "http://a:1,http://b:2"]).unwrap();
    assert!(
        matches!(settings(config).unwrap().token_keys, TokenKeys::Jwks(urls) if urls.len() == 2)
    );
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
    assert!(settings(config.clone()).is_ok());
    config.hs256_secret = Some("short".into());
    assert_eq!(refused_for(config.clone()), "RESOURCE_HS256_SECRET");
    config.hs256_secret = None;
    assert_eq!(refused_for(config), "RESOURCE_HS256_SECRET");
}

#[test]
fn a_secret_without_hs256_is_refused() {
    let mut config = Config::for_tests().with_jwks(vec!["http://127.0.0.1:1".into()]);
    assert!(settings(config.clone()).is_ok());
    config.hs256_secret = Some(TEST_HS256_SECRET.into());
    let error = settings(config).err().unwrap();
    assert_eq!(error.setting, "RESOURCE_HS256_SECRET");
    assert!(!error.to_string().contains(TEST_HS256_SECRET));
}

#[test]
fn bad_urls_are_refused_before_start() {
    let config = Config::for_tests().with_jwks(vec![]);
    assert_eq!(refused_for(config), "RESOURCE_AUTH_URL");
    let config = Config::for_tests().with_jwks(vec!["127.0.0.1:50051".into()]);
    assert_eq!(refused_for(config), "RESOURCE_AUTH_URL");
    let config = Config::for_tests().with_jwks(vec!["ftp://auth:50051".into()]);
    assert_eq!(refused_for(config), "RESOURCE_AUTH_URL");
    // An https:// URL needs a CA to check the certificate against, one that can be read.
    let config = Config::for_tests().with_jwks(vec!["https://auth:50051".into()]);
    assert_eq!(refused_for(config), "RESOURCE_AUTH_TLS_CA_FILE");
    let mut config = Config::for_tests().with_jwks(vec!["https://auth:50051".into()]);
    config.auth_tls_ca_file = Some("/nonexistent/ca.pem".into());
    assert_eq!(refused_for(config), "RESOURCE_AUTH_TLS_CA_FILE");
    let mut config = Config::for_tests();
    config.database_url = Some("mysql://x".into());
    assert_eq!(refused_for(config), "RESOURCE_DATABASE_URL");
}

#[test]
fn debug_output_hides_secrets() {
    let mut config = Config::for_tests();
    config.database_url = Some("postgres://u:hunter2@db/x".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"));
    assert!(!shown.contains(TEST_HS256_SECRET));
    let shown = format!("{:?}", settings(config).unwrap());
    assert!(!shown.contains("hunter2"));
    assert!(!shown.contains(TEST_HS256_SECRET));
}

#[test]
fn the_key_refresh_is_a_duration_and_its_old_name_still_works() {
    let config = parse(&["--jwks-refresh", "90s"]).unwrap();
    assert_eq!(
        settings(config).unwrap().jwks_refresh,
        Duration::from_secs(90)
    );
    let config = parse(&["--jwks-refresh-secs", "30"]).unwrap();
    assert_eq!(
        settings(config).unwrap().jwks_refresh,
        Duration::from_secs(30)
    );
    let config = parse(&["--jwks-refresh", "90s", "--jwks-refresh-secs", "30"]).unwrap();
    assert_eq!(refused_for(config), "RESOURCE_JWKS_REFRESH");
    let config = parse(&["--jwks-refresh", "0s"]).unwrap();
    assert_eq!(refused_for(config), "RESOURCE_JWKS_REFRESH");
}

#[test]
fn reading_the_configuration_creates_nothing() {
    let data_dir = std::env::temp_dir().join(format!("resource-config-{}", uuid::Uuid::new_v4()));
    let config = parse(&["--data-dir", data_dir.to_str().unwrap()]).unwrap();
    let settings = settings(config).unwrap();
    assert!(matches!(settings.database, Database::SqliteFile(path) if path.starts_with(&data_dir)));
    assert!(!data_dir.exists());
}

#[test]
fn the_secret_can_come_from_a_mounted_file() {
    let file = std::env::temp_dir().join(format!("resource-secret-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("{TEST_HS256_SECRET}\n")).unwrap();
    let mut config = Config::for_tests();
    config.hs256_secret = None;
    config.hs256_secret_file = Some(file);
    assert!(matches!(
        settings(config).unwrap().token_keys,
        TokenKeys::Hs256(_)
    ));
}

#[test]
fn the_pool_size_is_a_setting_of_at_least_one() {
    let settings = settings(parse(&["--db-max-connections", "3"]).unwrap()).unwrap();
    assert_eq!(settings.db_max_connections, 3);
    assert_eq!(
        settings_default_pool(),
        10,
        "the default stays what deploy/ sizes PostgreSQL for"
    );
    assert_eq!(
        refused_for(parse(&["--db-max-connections", "0"]).unwrap()),
        "RESOURCE_DB_MAX_CONNECTIONS"
    );
}

fn settings_default_pool() -> u32 {
    settings(parse(&[]).unwrap()).unwrap().db_max_connections
}
