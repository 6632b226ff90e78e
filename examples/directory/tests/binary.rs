//! The binary itself, as the end-to-end tests run it (this file also makes `cargo test
//! --workspace` build it): a bad setting stops it before it binds a port, with exit status 64
//! and one line naming the setting; the client secret shows neither in `--help` nor in a log.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

fn directory() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_directory"));
    command.env_clear();
    command
}

#[test]
fn a_bad_url_is_refused_with_one_line_naming_the_setting() {
    let output = directory()
        .env("DIRECTORY_RESOURCE_URL", "not a url")
        .env("DIRECTORY_GRPC_ADDR", "127.0.0.1:0")
        .output()
        .expect("runs directory");
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DIRECTORY_RESOURCE_URL"), "{stderr}");
}

#[test]
fn help_lists_every_setting() {
    let output = directory().arg("--help").output().expect("runs directory");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "DIRECTORY_GRPC_ADDR",
        "DIRECTORY_AUTH_URL",
        "DIRECTORY_RESOURCE_URL",
        "DIRECTORY_TOKEN_ISSUER",
        "DIRECTORY_TOKEN_AUDIENCE",
        "DIRECTORY_CLIENT_ID",
        "DIRECTORY_CLIENT_SECRET",
        "DIRECTORY_CLIENT_SECRET_FILE",
    ] {
        assert!(help.contains(name), "--help documents {name}");
    }
}

#[test]
fn half_of_the_client_credentials_is_refused_naming_the_missing_setting() {
    let secret = "directory-secret-5e1f";
    let cases = [
        (
            vec![("DIRECTORY_CLIENT_ID", "client-1")],
            "DIRECTORY_CLIENT_SECRET",
        ),
        (
            vec![("DIRECTORY_CLIENT_SECRET", secret)],
            "DIRECTORY_CLIENT_ID",
        ),
        (
            vec![
                ("DIRECTORY_CLIENT_ID", "client-1"),
                ("DIRECTORY_CLIENT_SECRET_FILE", "/nonexistent/client-secret"),
            ],
            "DIRECTORY_CLIENT_SECRET_FILE",
        ),
    ];
    for (env, named) in cases {
        let output = directory()
            .envs(env.iter().copied())
            .env("DIRECTORY_GRPC_ADDR", "127.0.0.1:0")
            .output()
            .expect("runs directory");
        assert_eq!(output.status.code(), Some(64), "{env:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().count() == 1 && stderr.contains(named),
            "{env:?}: {stderr}"
        );
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

#[test]
fn the_client_secret_appears_neither_in_help_nor_in_the_log() {
    let secret = "directory-secret-7c2d";
    let output = directory()
        .arg("--help")
        .env("DIRECTORY_CLIENT_SECRET", secret)
        .output()
        .expect("runs directory");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(!help.contains(secret), "{help}");

    // Started with credentials and an auth-service that is not there: it logs that it calls
    // as the account and that no token could be had, never the secret.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut child = directory()
        .env("DIRECTORY_GRPC_ADDR", "127.0.0.1:0")
        .env("DIRECTORY_AUTH_URL", &dead_url)
        .env("DIRECTORY_CLIENT_ID", "client-7")
        .env("DIRECTORY_CLIENT_SECRET", secret)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts directory");
    std::thread::sleep(Duration::from_secs(3));
    child.kill().expect("stops directory");
    let output = child.wait_with_output().expect("directory's output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains("calling resource-service as the service account") && log.contains("client-7"),
        "{log}"
    );
    assert!(!log.contains(secret), "{log}");
}
