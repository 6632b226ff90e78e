//! Helpers for the end-to-end scenarios in `tests/*.rs`: the real service binaries run as child
//! processes on free local ports, each logging to its own file, against fresh PostgreSQL
//! databases, and are stopped with SIGTERM as Kubernetes stops a pod.
//!
//! Nothing here is skipped quietly: a missing binary or a missing `DATABASE_URL` fails the test
//! with a message that says what to run. `cargo test --workspace` (what scripts/test runs)
//! builds the binaries before any test starts; `cargo test -p e2e` alone does not rebuild them,
//! so run `cargo build --workspace` first when the services changed.
//!
//! Each service logs (JSON, `tower_http=debug` so every call leaves a line with its request id)
//! to `target/<profile>/e2e-logs/<label>-<id>.log`; a failing test names the file and prints its
//! last lines. Logs of passing tests are removed unless `E2E_KEEP_LOGS` is set.

mod directory;
mod gateway;
mod postgres;
mod process;
pub mod prometheus;
mod service_accounts;
mod services;
mod stack;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    time::Duration,
};

pub use directory::DirectoryReplica;
pub use gateway::{Gateway, HeaderStyle, SignedIn, expect_ok};
pub use postgres::{Cluster, create_database, create_database_on};
pub use process::Process;
pub use service_accounts::{ServiceAccount, sign_in};
pub use services::{
    AuthDeployment, AuthReplica, Credentials, ResourceReplica, authorized, connect, health_status,
    next_health, wait_until_serving, watch_health,
};
pub use stack::Stack;
pub use tonic_health::pb::health_check_response::ServingStatus;

/// How long a service may take from spawn to ready. Generous: several agents and test binaries
/// share two cores, and a first start runs the database migrations.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a stopped service may take to exit: the drain grace every service promises.
pub const DRAIN_GRACE: Duration = telemetry::DRAIN_GRACE;

/// `target/<profile>/`, where cargo puts the workspace's binaries: the test executable itself
/// runs from `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The forwarding secret every gateway, auth-service and resource-service of the tests shares
/// (`*_FORWARDING_SECRET`), as deploy/ gives them one.
pub const FORWARDING_SECRET: &str = "e2e-forwarding-secret-0123456789abcdef";

/// Makes `request` a call as the gateway sends it for the client at `address`: the address in
/// `x-forwarded-for` and the forwarding secret beside it.
pub fn as_the_gateway_for<T>(request: &mut tonic::Request<T>, address: &str) {
    let metadata = request.metadata_mut();
    metadata.insert(
        "x-forwarded-for",
        address.parse().expect("an address is valid metadata"),
    );
    metadata.insert(
        "x-forwarding-secret",
        FORWARDING_SECRET
            .parse()
            .expect("the secret is valid metadata"),
    );
}

/// The path of a workspace binary, built by `cargo build --workspace` (or `cargo test --workspace`).
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: the end-to-end tests run the real binaries; build them first with \
         `cargo build --workspace` (or run scripts/test, which does)",
        path.display()
    );
    path
}

/// Where the services' logs go: `target/<profile>/e2e-logs/`.
pub fn log_dir() -> PathBuf {
    let dir = profile_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("failed to create {}: {e}", dir.display()));
    dir
}

/// A port on 127.0.0.1 that was free a moment ago. The services are told a fixed address (as
/// in production) rather than port 0, so there is a small window in which another process could
/// take it; a service that fails to bind then fails its test loudly, never silently.
///
/// The port comes from below the kernel's ephemeral range (`ip_local_port_range`), which every
/// outgoing connection (to PostgreSQL, between the services) draws its local port from: a port
/// picked with `bind(0)` comes from that very range, and a CI run once lost a gateway to an
/// outgoing connection that took its port between the pick and the bind. No port is handed out
/// twice in one test process.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if ephemeral_start > 12_000 {
        for _ in 0..1000 {
            let port = rand::Rng::gen_range(&mut rand::thread_rng(), 10_000..ephemeral_start);
            if !given.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("failed to find a free port on 127.0.0.1");
    given.push(port);
    port
}

/// A name no other test run uses, for accounts and databases.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Whether nothing listens at `addr` any more: a connection attempt is refused.
pub async fn refuses_connections(addr: SocketAddr) -> bool {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Polls until `addr` refuses connections, failing the test after `attempts` tries 50 ms apart.
pub async fn wait_until_refusing(addr: SocketAddr, attempts: usize, what: &str) {
    for _ in 0..attempts {
        if refuses_connections(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} at {addr} still accepts connections after {attempts} tries");
}
