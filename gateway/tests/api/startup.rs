//! The gateway binary refuses an unusable configuration before binding a port: one line naming
//! the setting, and exit code 64 (EX_USAGE).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[test]
fn an_unusable_setting_stops_the_binary_with_one_line_and_exit_code_64() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,not-a-proxy")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the gateway") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the gateway accepted an unusable setting and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).expect("stderr");
    assert_eq!(status.code(), Some(64), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("invalid configuration:"))
        .unwrap_or_else(|| panic!("no configuration error in {stderr:?}"));
    assert!(line.contains("GATEWAY_TRUSTED_PROXIES"), "{line}");
    assert!(line.contains("not-a-proxy"), "{line}");
}
