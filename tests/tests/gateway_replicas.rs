//! The product as a cluster runs it: two auth-service, two resource-service replicas and two
//! gateways, every gateway balancing over every replica.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use e2e::{Credentials, DRAIN_GRACE, Gateway, HeaderStyle, Process, SignedIn, Stack};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A signed-in user (role `user`) made through the first gateway.
async fn signed_in_user(stack: &Stack) -> SignedIn {
    let user = Credentials::random("reader");
    stack.gateways[0].sign_up(&user).await;
    stack.gateways[0].sign_in(&user).await
}

/// One read through `gateway`, tagged with `request_id` so the replica that served it can be
/// found in the logs. Returns the status and the body.
async fn read(gateway: &Gateway, token: &str, request_id: &str) -> (StatusCode, String) {
    match gateway
        .get_with_token("/api/persons?pageSize=5", token, HeaderStyle::Bearer)
        .header("x-request-id", request_id)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::IM_A_TEAPOT, format!("no response: {e}")),
    }
}

/// Which of `ids` appear in the JSON logs of `process` (as a quoted `request_id` value).
fn served_by(process: &Process, ids: &[String]) -> Vec<usize> {
    let logs = process.logs();
    ids.iter()
        .enumerate()
        .filter(|(_, id)| logs.contains(&format!("\"request_id\":\"{id}\"")))
        .map(|(n, _)| n)
        .collect()
}

#[tokio::test]
async fn a_token_issued_through_one_gateway_works_through_the_other() {
    let stack = Stack::start("token-across", 2, 2, 2).await;
    let (a, b) = (&stack.gateways[0], &stack.gateways[1]);
    let user = signed_in_user(&stack).await;
    assert_eq!(user.token_type, "Bearer");

    for style in [HeaderStyle::Bearer, HeaderStyle::XAccessToken] {
        let me = b
            .get_with_token("/api/auth/me", &user.access_token, style)
            .send()
            .await
            .unwrap();
        assert_eq!(
            me.status(),
            StatusCode::OK,
            "{style:?}: {}",
            me.text().await.unwrap()
        );
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["id"], json!(user.id), "{style:?}");
        assert_eq!(me["username"], json!(user.username), "{style:?}");

        let board = b
            .get_with_token("/api/test/user", &user.access_token, style)
            .send()
            .await
            .unwrap();
        assert_eq!(board.status(), StatusCode::OK, "{style:?}");
    }

    // Data written through one gateway is read through the other, with a token from either.
    let admin = b.sign_in(&stack.deployment.admin).await;
    let created = a
        .post("/api/persons")
        .header("x-access-token", &admin.access_token)
        .json(&json!({ "name": "Ada Lovelace", "email": "ada@example.com", "age": 36 }))
        .send()
        .await
        .unwrap();
    let status = created.status();
    let created: Value = created.json().await.unwrap();
    assert!(status.is_success(), "{status}: {created}");
    let path = format!("/api/persons/{}", created["personId"]);
    for style in [HeaderStyle::Bearer, HeaderStyle::XAccessToken] {
        let person = b
            .get_with_token(&path, &user.access_token, style)
            .send()
            .await
            .unwrap();
        assert_eq!(person.status(), StatusCode::OK, "{style:?}");
        let person: Value = person.json().await.unwrap();
        assert_eq!(person["name"], "Ada Lovelace");
    }
}

#[tokio::test]
async fn reads_through_the_gateways_reach_both_resource_replicas() {
    let stack = Stack::start("spread", 2, 2, 2).await;
    let user = signed_in_user(&stack).await;
    let run = e2e::unique("spread-");
    let ids: Vec<String> = (0..40).map(|n| format!("{run}-{n:03}")).collect();

    for (n, id) in ids.iter().enumerate() {
        let gateway = &stack.gateways[n % 2];
        let (status, body) = read(gateway, &user.access_token, id).await;
        assert_eq!(status, StatusCode::OK, "read {n}: {body}");
    }

    let first = served_by(&stack.resource[0].process, &ids);
    let second = served_by(&stack.resource[1].process, &ids);
    eprintln!(
        "resource-0 served {} reads, resource-1 served {}",
        first.len(),
        second.len()
    );
    let unseen: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| !first.contains(n) && !second.contains(n))
        .map(|(_, id)| id)
        .collect();
    assert!(
        unseen.is_empty(),
        "the request id of these reads reached neither resource replica's logs: {unseen:?}"
    );
    // Balanced per request, not per connection: each gateway on its own (even reads went
    // through gateway 0, odd ones through gateway 1) reaches both replicas.
    for gateway in 0..2 {
        let through = |served: &[usize]| served.iter().filter(|&&n| n % 2 == gateway).count();
        assert!(
            through(&first) > 0 && through(&second) > 0,
            "gateway {gateway} sent every read to one replica: resource-0 served {first:?}, \
             resource-1 served {second:?}"
        );
    }
}

#[tokio::test]
async fn stopping_a_resource_replica_under_a_steady_stream_of_reads_loses_no_request() {
    const READS: usize = 300;
    const STOP_AFTER: usize = 100;
    const CONCURRENCY: usize = 4;

    let mut stack = Stack::start("stop-under-load", 2, 2, 2).await;
    let user = signed_in_user(&stack).await;
    let run = e2e::unique("load-");
    let ids: Vec<String> = (0..READS).map(|n| format!("{run}-{n:03}")).collect();

    // Each read records how many reads had finished when it started, so the logs can tell
    // reads sent before the stop from reads sent after it.
    let finished = AtomicUsize::new(0);
    let stopped_at = AtomicUsize::new(usize::MAX);
    let (gateways, stopping, token) = (
        &stack.gateways,
        &stack.resource[0].process,
        &user.access_token,
    );
    let results: Vec<(usize, StatusCode, String)> = futures::stream::iter(ids.iter().enumerate())
        .map(|(n, id)| {
            let (finished, stopped_at) = (&finished, &stopped_at);
            async move {
                let (status, body) = read(&gateways[n % 2], token, id).await;
                if finished.fetch_add(1, Ordering::SeqCst) + 1 == STOP_AFTER {
                    stopped_at.store(n, Ordering::SeqCst);
                    stopping.terminate();
                }
                (n, status, body)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let failed: Vec<&(usize, StatusCode, String)> = results
        .iter()
        .filter(|(_, status, _)| *status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {READS} reads failed after resource-0 was stopped (around read {}): {failed:#?}\n{}\n{}",
        failed.len(),
        stopped_at.load(Ordering::SeqCst),
        stack.gateways[0].process.describe(),
        stack.gateways[1].process.describe(),
    );

    let status = stack.resource[0].process.wait_for_exit(DRAIN_GRACE).await;
    assert!(status.success(), "resource-0 exited with {status}");

    // The stop really happened under load: resource-0 served reads before it, and resource-1
    // carried the reads sent after it.
    let first = served_by(&stack.resource[0].process, &ids);
    let second = served_by(&stack.resource[1].process, &ids);
    let last_read_of_first = first.iter().max().copied().unwrap_or_default();
    eprintln!(
        "resource-0 served {} reads (the last was read {last_read_of_first}), resource-1 served {}",
        first.len(),
        second.len()
    );
    assert!(
        !first.is_empty(),
        "resource-0 served no read before it was stopped"
    );
    assert!(
        second.iter().any(|&n| n > last_read_of_first),
        "no read reached resource-1 after resource-0's last one"
    );
}

#[tokio::test]
async fn a_stopped_resource_replica_is_taken_back_when_it_returns() {
    let mut stack = Stack::start("comeback", 2, 2, 1).await;
    let user = signed_in_user(&stack).await;
    let gateway = &stack.gateways[0];
    let run = e2e::unique("comeback-");

    let old = &mut stack.resource[0];
    old.process.terminate();
    let status = old.process.wait_for_exit(DRAIN_GRACE).await;
    assert!(status.success(), "resource-0 exited with {status}");
    for n in 0..10 {
        let (status, body) = read(gateway, &user.access_token, &format!("{run}-down-{n}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "read {n} with resource-0 down: {body}"
        );
    }

    let auth_urls: Vec<String> = stack.auth.iter().map(|r| r.url.clone()).collect();
    let mut back = e2e::ResourceReplica::spawn_at(
        stack.resource[0].addr,
        &stack.resource_database_url,
        &auth_urls,
        "comeback-resource-0-again",
    );
    back.wait_until_serving().await;

    // The gateway checks health every couple of seconds; 200 reads 50 ms apart leave it
    // several chances to notice, and every read must succeed meanwhile.
    for n in 0..200 {
        let id = format!("{run}-back-{n:03}");
        let (status, body) = read(gateway, &user.access_token, &id).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "read {n} after resource-0 returned: {body}"
        );
        if !served_by(&back.process, &[id]).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the gateway never sent a read to the returned replica: {}",
        gateway.process.describe()
    );
}

/// The client address a session of `user` records when signed in through `gateway` by a proxy
/// that names the client `client`.
async fn recorded_address(gateway: &Gateway, user: &Credentials, client: &str) -> String {
    let response = gateway
        .post("/api/auth/signin")
        .header("x-forwarded-for", client)
        .json(&json!({ "username": user.username, "password": user.password }))
        .send()
        .await
        .unwrap();
    let signed_in: SignedIn = e2e::expect_ok(response, "sign-in")
        .await
        .json()
        .await
        .unwrap();
    let sessions: Value = gateway
        .get_with_token(
            "/api/auth/sessions",
            &signed_in.access_token,
            HeaderStyle::Bearer,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let current = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap_or_else(|| panic!("no current session in {sessions}"));
    current["clientAddress"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn auth_service_believes_the_client_address_of_a_gateway_with_its_forwarding_secret_only() {
    let stack = Stack::start("forwarding", 1, 1, 0).await;
    let auth_urls: Vec<String> = stack.auth.iter().map(|r| r.url.clone()).collect();
    let resource_urls: Vec<String> = stack.resource.iter().map(|r| r.url.clone()).collect();
    // Both gateways take the test as a proxy that names the client; one has the services'
    // forwarding secret (the harness's default), the other another one.
    let behind_a_proxy = ("GATEWAY_TRUSTED_PROXIES", "127.0.0.1".to_owned());
    let other_secret = (
        "GATEWAY_FORWARDING_SECRET",
        "not-the-services-forwarding-secret-0123".to_owned(),
    );
    let mut ours = Gateway::spawn_with(
        &auth_urls,
        &resource_urls,
        "forwarding-ours",
        std::slice::from_ref(&behind_a_proxy),
    );
    let mut impostor = Gateway::spawn_with(
        &auth_urls,
        &resource_urls,
        "forwarding-impostor",
        &[behind_a_proxy, other_secret],
    );
    tokio::join!(
        ours.wait_until_every_replica_is_up(),
        impostor.wait_until_every_replica_is_up()
    );
    let user = Credentials::random("forwarded");
    ours.sign_up(&user).await;
    assert_eq!(
        recorded_address(&ours, &user, "198.51.100.7").await,
        "198.51.100.7"
    );
    // auth-service hears the same forwarded address without the secret: it counts the caller's
    // own address instead.
    assert_eq!(
        recorded_address(&impostor, &user, "198.51.100.8").await,
        "127.0.0.1"
    );
}
