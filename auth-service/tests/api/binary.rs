//! The binary itself: what it says about its configuration before it starts anything.

use std::process::Command;

fn auth_service() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_auth-service"));
    // Only what each test sets reaches the binary.
    command.env_clear();
    command
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let secrets = [
        (
            "AUTH_DATABASE_URL",
            "postgres://auth:hunter2@db.internal/auth",
        ),
        ("AUTH_HS256_SECRET", "an-hs256-secret-of-32-bytes-or-more"),
        (
            "AUTH_KEY_ENCRYPTION_KEY",
            "a2V5LWVuY3J5cHRpb24ta2V5LXZhbHVlLTMyYnl0ZXM=",
        ),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "the-first-admins-password"),
    ];
    let output = auth_service()
        .arg("--help")
        .envs(secrets)
        .output()
        .expect("runs auth-service --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (name, value) in secrets {
        assert!(help.contains(name), "--help documents {name}");
        assert!(!help.contains(value), "--help printed the value of {name}");
    }
    assert!(!help.contains("hunter2"));
}

#[test]
fn an_unusable_setting_stops_start_up_with_ex_usage_and_names_it() {
    let output = auth_service()
        .env("AUTH_ACCESS_TOKEN_TTL", "5s")
        .env("AUTH_GRPC_ADDR", "127.0.0.1:0")
        .output()
        .expect("runs auth-service");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("invalid configuration: AUTH_ACCESS_TOKEN_TTL"),
        "{stderr}"
    );
}

#[test]
fn an_issuer_that_is_not_a_base_url_stops_start_up_with_ex_usage() {
    for issuer in ["auth-service", "https://auth.example.com/?tenant=1"] {
        let output = auth_service()
            .env("AUTH_TOKEN_ISSUER", issuer)
            .env("AUTH_GRPC_ADDR", "127.0.0.1:0")
            .output()
            .expect("runs auth-service");
        assert_eq!(output.status.code(), Some(64), "{issuer}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(
                "invalid configuration: AUTH_TOKEN_ISSUER: must be the public base URL"
            ),
            "{stderr}"
        );
    }
}
