//! The binary itself, as the end-to-end tests run it (this file also makes `cargo test
//! --workspace` build it): a bad setting stops it before it binds a port, with exit status 64
//! and one line naming the setting.

use std::process::Command;

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
    ] {
        assert!(help.contains(name), "--help documents {name}");
    }
}
