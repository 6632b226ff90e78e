//! Signing out through the gateway ends the session everywhere: every resource-service replica
//! refuses its access token soon after, from its own in-memory view of the revocation feed,
//! while tokens of other sessions keep working.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Credentials, Stack, authorized};
use proto::person::v1::ListPersonsRequest;
use reqwest::StatusCode;
use tonic::Code;

/// How a replica answers a list call with `token`: `Ok` or the refusal's code.
async fn answer(replica: &e2e::ResourceReplica, token: &str) -> Result<(), Code> {
    replica
        .client()
        .await
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

#[tokio::test]
async fn a_signed_out_session_is_refused_by_every_resource_replica() {
    let stack = Stack::start("sign-out", 2, 2, 1).await;
    let gateway = &stack.gateways[0];
    let user = Credentials::random("leaver");
    gateway.sign_up(&user).await;
    let leaving = gateway.sign_in(&user).await.access_token;
    let staying = gateway.sign_in(&user).await.access_token;
    // Both replicas know and cache the token before the session ends.
    for replica in &stack.resource {
        assert_eq!(answer(replica, &leaving).await, Ok(()));
        assert_eq!(answer(replica, &staying).await, Ok(()));
    }

    let signed_out = gateway
        .post("/api/auth/signout")
        .bearer_auth(&leaving)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
    let ended = Instant::now();

    // A generous bound: the feed's lag is measured by its benchmark, not here.
    for (i, replica) in stack.resource.iter().enumerate() {
        loop {
            match answer(replica, &leaving).await {
                Err(Code::Unauthenticated) => break,
                other => assert!(
                    ended.elapsed() < Duration::from_secs(5),
                    "resource-{i} still answers {other:?} for a signed-out token"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "both replicas refused the token {:?} after sign-out",
        ended.elapsed()
    );
    // The other session of the same user is untouched, on every replica.
    for replica in &stack.resource {
        assert_eq!(answer(replica, &staying).await, Ok(()));
    }
    let through_gateway = gateway
        .get_with_token(
            "/api/persons?pageSize=1",
            &leaving,
            e2e::HeaderStyle::Bearer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(through_gateway.status(), StatusCode::UNAUTHORIZED);
}
