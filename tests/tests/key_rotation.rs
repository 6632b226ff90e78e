//! Rotating the signing key while reads run through the gateway: no request fails, tokens of
//! the old key keep working, and restarting every auth-service replica mid-rotation changes
//! nothing.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use e2e::{AuthReplica, Credentials, DRAIN_GRACE, HeaderStyle, Stack, authorized};
use proto::auth::v1::RotateSigningKeyRequest;
use reqwest::StatusCode;

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_rotate_under_reads_with_no_failed_request_even_across_auth_restarts() {
    let mut stack = Stack::start_with(
        "rotation",
        [2, 2, 1],
        &[
            ("AUTH_KEY_PUBLISH_AHEAD", "4s".into()),
            ("AUTH_KEY_ROTATION_PERIOD", "0s".into()),
        ],
        &[("RESOURCE_JWKS_REFRESH", "1s".into())],
    )
    .await;
    let gateway = &stack.gateways[0];
    let user = Credentials::random("reader");
    gateway.sign_up(&user).await;
    let before = gateway.sign_in(&user).await.access_token;
    let old_kid = kid_of(&before);

    // Readers alternate between the token from before the rotation and the newest one.
    let newest = Mutex::new(before.clone());
    let stop = AtomicBool::new(false);
    let (reads, new_key_reads) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let failures = Mutex::new(Vec::new());
    let reader = |n: usize| {
        let (newest, stop, reads, new_key_reads, failures, before) =
            (&newest, &stop, &reads, &new_key_reads, &failures, &before);
        async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let token = if (i + n).is_multiple_of(2) {
                    before.clone()
                } else {
                    newest.lock().unwrap().clone()
                };
                i += 1;
                let response = gateway
                    .get_with_token("/api/persons?pageSize=1", &token, HeaderStyle::Bearer)
                    .send()
                    .await;
                reads.fetch_add(1, Ordering::SeqCst);
                if kid_of(&token) != kid_of(before) {
                    new_key_reads.fetch_add(1, Ordering::SeqCst);
                }
                let failure = match response {
                    Ok(r) if r.status() == StatusCode::OK => None,
                    Ok(r) => Some(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Some(format!("no response: {e}")),
                };
                if let Some(failure) = failure {
                    failures.lock().unwrap().push(failure);
                }
            }
        }
    };

    let deployment = &stack.deployment;
    let auth = &mut stack.auth;
    let driver = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let admin = gateway.sign_in(&deployment.admin).await.access_token;
        let rotated = auth[0]
            .client()
            .await
            .rotate_signing_key(authorized(RotateSigningKeyRequest {}, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(rotated.kid, old_kid);

        // Every auth-service replica restarts while the new key is pending.
        for (i, replica) in auth.iter_mut().enumerate() {
            replica.process.terminate();
            let status = replica.process.wait_for_exit(DRAIN_GRACE).await;
            assert!(status.success(), "auth-{i} exited with {status}");
            let mut again = AuthReplica::spawn_at(
                replica.addr,
                deployment,
                &format!("rotation-auth-{i}-again"),
            );
            again.wait_until_serving().await;
            *replica = again;
        }

        // Once the key activates, sign-ins get tokens signed with it; reads use them at once.
        let mut signed_with_new = None;
        for _ in 0..100 {
            let token = gateway.sign_in(&user).await.access_token;
            if kid_of(&token) == rotated.kid {
                signed_with_new = Some(token);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let token = signed_with_new.expect("a token signed with the new key within 20 s");
        *newest.lock().unwrap() = token;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(driver, reader(0), reader(1), reader(2), reader(3));

    let failures = failures.into_inner().unwrap();
    let (reads, new_key_reads) = (reads.into_inner(), new_key_reads.into_inner());
    eprintln!("{reads} reads, {new_key_reads} with a token of the new key");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed during the rotation: {failures:#?}",
        failures.len()
    );
    assert!(new_key_reads > 0, "no read used a token of the new key");
    // The old key's token still works after the rotation, until it expires.
    let still = gateway
        .get_with_token("/api/persons?pageSize=1", &before, HeaderStyle::Bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);
}
