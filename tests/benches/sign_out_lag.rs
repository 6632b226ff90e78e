//! Sign-out to refusal, over the real binaries: how long after a user signs out through the
//! gateway until every resource-service replica refuses the session's access token, which each of
//! them had verified and cached before.
//!
//! The stack is the cluster's shape on PostgreSQL: two auth-service replicas, two resource-service
//! replicas, one gateway. For each sign-out the token is first answered `OK` by both replicas,
//! then `POST /api/auth/signout` goes through the gateway, and both replicas are asked again
//! every millisecond until each refuses it. The lag runs from the moment the sign-out request is
//! sent (so it includes the sign-out's own commit, the NOTIFY to the other auth replica and the
//! feed's push) to the moment the last replica refused; p50/p99/max over all sign-outs.
//!
//! `cargo build --release --workspace && cargo bench -p e2e --bench sign_out_lag` runs 300
//! sign-outs against the release binaries (`DATABASE_URL` names a PostgreSQL superuser; each run
//! creates its own databases). Under `cargo test` (scripts/test) it runs 5 against the debug
//! binaries and asserts only a generous bound, so the harness cannot rot. `-- --sign-outs N`
//! overrides the count. `scripts/bench` runs it too (release build, 300 sign-outs; 2 with
//! `--smoke`) and reports the `SIGN_OUT_LAG_JSON` line it prints beside its table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::{Credentials, ResourceReplica, Stack, authorized};
use proto::person::v1::ListPersonsRequest;
use proto::person::v1::person_service_client::PersonServiceClient;
use reqwest::StatusCode;
use tonic::{Code, transport::Channel};

/// How often a replica is asked again while the lag runs: the measurement's resolution.
const POLL: Duration = Duration::from_millis(1);
/// Sessions per user: below the per-user cap, so no sign-in ends an earlier session.
const SESSIONS_PER_USER: usize = 15;

async fn answer(client: &mut PersonServiceClient<Channel>, token: &str) -> Result<(), Code> {
    client
        .list_persons(authorized(
            ListPersonsRequest {
                page_size: 1,
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop)
        .map_err(|s| s.code())
}

/// Asks one replica until it refuses `token`; returns when it did, relative to `since`.
async fn refused_after(
    mut client: PersonServiceClient<Channel>,
    token: &str,
    since: Instant,
    bound: Duration,
) -> Duration {
    loop {
        match answer(&mut client, token).await {
            Err(Code::Unauthenticated) => return since.elapsed(),
            Ok(()) => {}
            Err(other) => panic!("a replica answered {other:?} instead of OK or UNAUTHENTICATED"),
        }
        assert!(
            since.elapsed() < bound,
            "a replica still accepted a signed-out token after {bound:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let count = args
        .iter()
        .position(|a| a == "--sign-outs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(if full { 300 } else { 5 });
    // The promise is one second; the smoke run on a loaded debug build allows more.
    let bound = Duration::from_secs(if full { 5 } else { 10 });

    let stack = Stack::start("sign-out-lag", 2, 2, 1).await;
    let gateway = &stack.gateways[0];
    let replicas: Vec<&ResourceReplica> = stack.resource.iter().collect();
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }

    // Every session first, so sign-ins (argon2) do not overlap the measured sign-outs.
    let mut tokens = Vec::with_capacity(count);
    let mut user = Credentials::random("lag");
    for i in 0..count {
        if i % SESSIONS_PER_USER == 0 {
            user = Credentials::random("lag");
            gateway.sign_up(&user).await;
        }
        tokens.push(gateway.sign_in(&user).await.access_token);
    }

    let mut lags = Vec::with_capacity(count);
    let mut per_replica = Vec::with_capacity(count * clients.len());
    let mut responses = Vec::with_capacity(count);
    for token in &tokens {
        for client in &mut clients {
            assert_eq!(
                answer(client, token).await,
                Ok(()),
                "a fresh token was refused"
            );
        }
        let sent = Instant::now();
        let signed_out = gateway
            .post("/api/auth/signout")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
        responses.push(sent.elapsed());
        let each = futures::future::join_all(
            clients
                .iter()
                .map(|client| refused_after(client.clone(), token, sent, bound)),
        )
        .await;
        lags.push(*each.iter().max().unwrap());
        per_replica.extend(each);
    }

    lags.sort();
    per_replica.sort();
    responses.sort();
    let row = |what: &str, values: &[Duration]| {
        println!(
            "| {what} | {} | {} | {} |",
            ms(percentile(values, 50.0)),
            ms(percentile(values, 99.0)),
            ms(*values.last().unwrap())
        );
    };
    println!(
        "sign-out lag over {count} sign-outs ({} replicas, polled every {POLL:?}):",
        clients.len()
    );
    println!("| what | p50 | p99 | max |\n|---|---|---|---|");
    row("sign-out answered (204)", &responses);
    row("refused by one replica", &per_replica);
    row("refused by every replica", &lags);
    // The same figures for scripts/bench, which runs this benchmark and reports it.
    let figures = |values: &[Duration]| {
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "p50_ms": millis(percentile(values, 50.0)),
            "p99_ms": millis(percentile(values, 99.0)),
            "max_ms": millis(*values.last().unwrap()),
        })
    };
    println!(
        "SIGN_OUT_LAG_JSON {}",
        serde_json::json!({
            "sign_outs": count,
            "auth_replicas": stack.auth.len(),
            "replicas": clients.len(),
            "poll_ms": POLL.as_secs_f64() * 1000.0,
            "answered": figures(&responses),
            "one_replica": figures(&per_replica),
            "every_replica": figures(&lags),
        })
    );
    let worst = *lags.last().unwrap();
    assert!(
        worst < bound,
        "the slowest sign-out took {worst:?} to reach every replica"
    );
}
