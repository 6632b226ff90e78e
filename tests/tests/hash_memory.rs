//! Password hashing runs in bounded memory: a storm of correct sign-ins from many clients leaves
//! auth-service within its idle footprint plus one argon2 block (19 MiB) per hashing worker, and
//! with a bounded number of threads, during the storm and after it.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use e2e::{AuthDeployment, AuthReplica, Credentials};
use proto::auth::v1::{SignInRequest, SignUpRequest, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

const WORKERS: u64 = 2;
/// The memory of one argon2id hash at the parameters auth-service uses (m = 19456 KiB).
const BLOCK_KIB: u64 = 19 * 1024;
/// Room for what the storm itself holds beyond the hashing memory: connections, sessions, the
/// allocator's slack. Far below one more block per thread, which is what unbounded growth costs.
const MARGIN_KIB: u64 = 24 * 1024;
/// Threads the storm may add beyond the hashing workers (e.g. a runtime thread woken by load).
const THREAD_SLACK: u64 = 2;
/// Concurrent clients, each with its own address and account, so no client exceeds its share of
/// the hashing admission and none is throttled (correct passwords are not failures).
const CLIENTS: usize = 24;
const SIGN_INS_PER_CLIENT: usize = 12;

/// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`: KiB; `Threads`: a count).
fn status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{text}"))
}

/// A call as the gateway sends it for the client at `address`.
fn from<T>(message: T, address: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    e2e::as_the_gateway_for(&mut request, address);
    request
}

async fn sign_up(client: &mut AuthServiceClient<Channel>, user: &Credentials, address: &str) {
    client
        .sign_up(from(
            SignUpRequest {
                username: user.username.clone(),
                email: format!("{}@example.com", user.username),
                password: user.password.clone(),
                roles: Vec::new(),
            },
            address,
        ))
        .await
        .unwrap_or_else(|s| panic!("sign-up of {} failed: {s:?}", user.username));
}

async fn sign_in(client: &mut AuthServiceClient<Channel>, user: &Credentials, address: &str) {
    client
        .sign_in(from(
            SignInRequest {
                login: user.username.clone(),
                password: user.password.clone(),
            },
            address,
        ))
        .await
        .unwrap_or_else(|s| panic!("sign-in of {} from {address} failed: {s:?}", user.username));
}

#[tokio::test]
async fn a_sign_in_storm_stays_within_the_hashing_memory_budget() {
    let mut deployment = AuthDeployment::create().await;
    deployment
        .env
        .push(("AUTH_HASH_WORKERS", WORKERS.to_string()));
    // Every sign-in must be hashed, however slow hashing is on a loaded test machine: no
    // refusal for the expected wait.
    deployment
        .env
        .push(("AUTH_HASH_MAX_WAIT", "1h".to_string()));
    let replica = AuthReplica::start(&deployment, "auth-hash-memory").await;
    let pid = replica.process.id();
    let base_kib = status(pid, "VmRSS");
    let base_threads = status(pid, "Threads");
    eprintln!("idle: VmRSS {base_kib} KiB, {base_threads} threads");

    let users: Vec<(Credentials, String)> = (0..CLIENTS)
        .map(|i| (Credentials::random("storm"), format!("198.18.7.{}", i + 1)))
        .collect();
    let channel = e2e::connect(&replica.url).await;
    let started = Instant::now();
    let storm = users.iter().map(|(user, address)| {
        let mut client = AuthServiceClient::new(channel.clone());
        async move {
            sign_up(&mut client, user, address).await;
            for _ in 0..SIGN_INS_PER_CLIENT {
                sign_in(&mut client, user, address).await;
            }
        }
    });
    futures::future::join_all(storm).await;
    let rss_kib = status(pid, "VmRSS");
    let peak_kib = status(pid, "VmHWM");
    let threads = status(pid, "Threads");
    eprintln!(
        "{} sign-ins from {CLIENTS} clients in {:?}: VmRSS {rss_kib} KiB, VmHWM {peak_kib} KiB, \
         {threads} threads",
        CLIENTS * SIGN_INS_PER_CLIENT,
        started.elapsed()
    );

    let budget_kib = base_kib + WORKERS * BLOCK_KIB + MARGIN_KIB;
    assert!(
        rss_kib <= budget_kib,
        "VmRSS after the storm is {rss_kib} KiB, over the budget of {budget_kib} KiB (idle \
         {base_kib} KiB + {WORKERS} workers × {BLOCK_KIB} KiB + {MARGIN_KIB} KiB margin)"
    );
    assert!(
        peak_kib <= budget_kib,
        "VmHWM (peak RSS) is {peak_kib} KiB, over the budget of {budget_kib} KiB (idle \
         {base_kib} KiB + {WORKERS} workers × {BLOCK_KIB} KiB + {MARGIN_KIB} KiB margin)"
    );
    let thread_bound = base_threads + WORKERS + THREAD_SLACK;
    assert!(
        threads <= thread_bound,
        "{threads} threads after the storm, more than {thread_bound} (idle {base_threads} + \
         {WORKERS} workers + {THREAD_SLACK})"
    );
}
