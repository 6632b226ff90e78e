//! The gateway binary refuses an unusable configuration before binding a port: one line naming
//! the setting, and exit code 64 (EX_USAGE); and runs its requests on the worker threads it is
//! given.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The gateway binary on `addr` with `settings`, its standard error piped; backends that do not
/// answer unless `settings` name others.
fn gateway(addr: &str, settings: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("GATEWAY_HTTP_ADDR", addr)
        .env("GATEWAY_AUTH_URL", "http://127.0.0.1:9")
        .env("GATEWAY_RESOURCE_URL", "http://127.0.0.1:9")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary starts")
}

/// Waits up to 20 s for `child` to exit (killing it otherwise: the binary accepted what it should
/// have refused); its exit status and standard error.
fn exit_of(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
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
    (status, stderr)
}

#[test]
fn an_unusable_setting_stops_the_binary_with_one_line_and_exit_code_64() {
    let child = gateway(
        "127.0.0.1:0",
        &[("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,not-a-proxy")],
    );
    let (status, stderr) = exit_of(child);
    assert_eq!(status.code(), Some(64), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("invalid configuration:"))
        .unwrap_or_else(|| panic!("no configuration error in {stderr:?}"));
    assert!(line.contains("GATEWAY_TRUSTED_PROXIES"), "{line}");
    assert!(line.contains("not-a-proxy"), "{line}");
}

/// The threads named as tokio names its runtime's (`tokio-rt-worker`; `tokio-runtime-worker`, cut
/// to 15 bytes, in older versions), from `/proc`. The idle gateway runs nothing on tokio's
/// blocking pool, so these are its workers.
#[cfg(target_os = "linux")]
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("tokio-r") && name.contains("-w"))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn the_runtime_runs_as_many_worker_threads_as_set() {
    // One more than the default (one per CPU), so the setting is what made them.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = cpus + 1;
    let mut child = gateway(
        "127.0.0.1:0",
        &[("GATEWAY_WORKER_THREADS", &wanted.to_string())],
    );
    let started = Instant::now();
    let mut workers = 0;
    while started.elapsed() < Duration::from_secs(20) {
        workers = runtime_workers(child.id());
        if workers >= wanted {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Settled: the runtime starts all its workers at once and never more.
    std::thread::sleep(Duration::from_millis(200));
    workers = workers.max(runtime_workers(child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(workers, wanted);
}

/// Refused by the flag parser before anything starts: its message names the flag and the value,
/// and the exit code is the parser's (2).
#[test]
fn worker_threads_out_of_range_stop_the_binary_naming_the_setting() {
    for value in ["0", "1025", "many"] {
        let child = gateway("127.0.0.1:0", &[("GATEWAY_WORKER_THREADS", value)]);
        let (status, stderr) = exit_of(child);
        assert_eq!(status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("--worker-threads"), "{value}: {stderr}");
        assert!(stderr.contains(value), "{value}: {stderr}");
    }
}

/// Without a worker-thread setting the runtime reads tokio's own `TOKIO_WORKER_THREADS`, which it
/// would panic on when unusable: the binary stops with a usage error naming it instead.
#[test]
fn an_unusable_tokio_worker_threads_stops_the_binary_naming_it() {
    for value in ["0", "many"] {
        let child = gateway("127.0.0.1:0", &[("TOKIO_WORKER_THREADS", value)]);
        let (status, stderr) = exit_of(child);
        assert_eq!(status.code(), Some(64), "{value}: {stderr}");
        assert!(stderr.contains("TOKIO_WORKER_THREADS"), "{value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{value}: {stderr}");
    }
}

/// One worker thread is tokio's current-thread scheduler: no worker threads beside the main one,
/// which serves requests itself.
#[cfg(target_os = "linux")]
#[test]
fn one_worker_thread_serves_on_the_main_thread() {
    use std::io::{Read as _, Write as _};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = gateway(
        &format!("127.0.0.1:{port}"),
        &[("GATEWAY_WORKER_THREADS", "1")],
    );
    let started = Instant::now();
    let answer = loop {
        let attempt = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(
                b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n",
            )?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        match attempt {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => {
                let _ = child.kill();
                panic!("the gateway did not answer on port {port}: {error}");
            }
        }
    };
    let workers = runtime_workers(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(workers, 0);
}
