//! One client floods the gateway with oversized headers and wrong passwords while others use it:
//! the readers and another client's sign-ins lose nothing, every backend stays in rotation, and
//! the flood itself only ever gets 4xx answers.
//!
//! Clients are told apart by their source address, as the gateway sees them without a proxy:
//! the flood comes from 127.0.0.2, the owner of the attacked account signs in from 127.0.0.3,
//! and the readers use 127.0.0.1 (all loopback on Linux).

#![allow(clippy::unwrap_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use e2e::{Credentials, Stack};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const FLOOD_FOR: Duration = Duration::from_secs(6);

fn client_from(last_octet: u8) -> Client {
    Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every status the flood saw, by code.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<u16, usize>>);

impl Tally {
    fn add(&self, status: StatusCode) {
        *self.0.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    }
    fn snapshot(&self) -> std::collections::BTreeMap<u16, usize> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_flood_from_one_client_costs_readers_and_other_clients_nothing() {
    let mut stack = Stack::start("flood", 2, 2, 1).await;
    let gateway = &stack.gateways[0];

    let reader = Credentials::random("reader");
    gateway.sign_up(&reader).await;
    let reader_token = gateway.sign_in(&reader).await.access_token;
    let owner = Credentials::random("owner");
    gateway.sign_up(&owner).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    // The flood, from 127.0.0.2: tokens and headers far past the limits, and wrong passwords,
    // for the owner's account and for logins that do not exist.
    let attacker = client_from(2);
    let mut flood = Vec::new();
    for task in 0..8 {
        let (attacker, stop, tally) = (attacker.clone(), stop.clone(), tally.clone());
        let url = |path: &str| gateway.url(path);
        let (persons, signin) = (url("/api/persons?pageSize=1"), url("/api/auth/signin"));
        let owner_name = owner.username.clone();
        flood.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = match (task + n) % 4 {
                    0 => attacker.get(&persons).bearer_auth("x".repeat(100 * 1024)),
                    1 => attacker
                        .get(&persons)
                        .header("x-padding", "p".repeat(20 * 1024))
                        .header("x-request-id", "r".repeat(20 * 1024)),
                    2 => attacker.post(&signin).json(&json!({
                        "username": owner_name,
                        "password": format!("wrong-guess-{task}-{n}"),
                    })),
                    _ => attacker.post(&signin).json(&json!({
                        "username": format!("nobody{task}x{n}"),
                        "password": "wrong-guess-000",
                    })),
                };
                match request.send().await {
                    Ok(response) => tally.add(response.status()),
                    // The gateway may close a connection that sent 100 KB of headers: that is
                    // its right with this client, and the next request opens a new one.
                    Err(_) => tally.add(StatusCode::from_u16(599).unwrap()),
                }
            }
        }));
    }

    // The readers, from 127.0.0.1: every read must succeed while the flood runs.
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (stop, reads) = (stop.clone(), reads.clone());
        let (client, url, token) = (
            client_from(1),
            gateway.url("/api/persons?pageSize=1"),
            reader_token.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "a read failed mid-flood");
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // The account's owner, from 127.0.0.3, signs in with the right password during the flood
    // against that very account: each attempt succeeds.
    let owner_client = client_from(3);
    let started = tokio::time::Instant::now();
    let mut owner_sign_ins = 0;
    while started.elapsed() < FLOOD_FOR {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let response = owner_client
            .post(gateway.url("/api/auth/signin"))
            .json(&json!({ "username": owner.username, "password": owner.password }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "the owner's sign-in from another client was refused mid-flood: {body}"
        );
        owner_sign_ins += 1;

        // The gateway stays ready with every replica in rotation throughout.
        let ready = client_from(1)
            .get(gateway.url("/readyz"))
            .send()
            .await
            .unwrap();
        let ready_status = ready.status();
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready_status, StatusCode::OK, "/readyz mid-flood: {ready}");
        assert_eq!(
            ready["backends"],
            json!({
                "auth": { "replicas": 2, "up": 2 },
                "resource": { "replicas": 2, "up": 2 },
            }),
            "a replica left the rotation mid-flood"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    for task in readers {
        task.await.unwrap();
    }

    let seen = tally.snapshot();
    eprintln!(
        "flood answers by status: {seen:?}; {} reads and {owner_sign_ins} owner sign-ins succeeded",
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0 && owner_sign_ins > 0);
    // The flood met its limits: 401 for the oversized token and wrong passwords, 431 for the
    // headers, 429 once the guessing was throttled; nothing else, and never a 5xx.
    for status in seen.keys() {
        assert!(
            [401, 429, 431, 599].contains(status),
            "the flood got a {status}: {seen:?}"
        );
    }
    for status in [401, 429, 431] {
        assert!(seen.contains_key(&status), "no {status} in {seen:?}");
    }
    // Throttling held on the attacked account: after the flood, the attacker's next guess for
    // it is refused at once, whatever the password.
    let guess = attacker
        .post(gateway.url("/api/auth/signin"))
        .json(&json!({ "username": owner.username, "password": owner.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(guess.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(guess.headers().contains_key("retry-after"));
    // No backend went down under it.
    for replica in &mut stack.auth {
        replica.process.assert_running();
    }
    for replica in &mut stack.resource {
        replica.process.assert_running();
    }
}
