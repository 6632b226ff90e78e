//! Throttled guessing through the gateway: auth-service's refusal with its retry delay becomes a
//! 429 with a numeric `Retry-After` and the usual JSON error.

use serde_json::json;

use crate::{
    helpers::TestResponse,
    stack::{PASSWORD, Stack, spawn_stack, unique},
};

/// The delay of a throttled answer, checked to be a 429 in the gateway's error model.
fn throttled(response: &TestResponse, max_secs: u64) -> u64 {
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.error_code(), "resource_exhausted");
    assert!(response.json()["message"].as_str().is_some());
    let delay: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=max_secs).contains(&delay), "{delay}");
    delay
}

async fn sign_up(stack: &Stack, username: &str) -> TestResponse {
    stack
        .gateway
        .post(
            "/api/auth/signup",
            None,
            &json!({
                "username": username,
                "email": format!("{}@example.com", unique("mail")),
                "password": PASSWORD,
            }),
        )
        .await
}

async fn sign_in(stack: &Stack, username: &str, password: &str) -> TestResponse {
    stack
        .gateway
        .post(
            "/api/auth/signin",
            None,
            &json!({"username": username, "password": password}),
        )
        .await
}

#[tokio::test]
async fn the_eleventh_sign_in_after_ten_failures_is_a_429_until_an_admin_clears_it() {
    let stack = spawn_stack().await;
    let username = unique("victim");
    assert_eq!(sign_up(&stack, &username).await.status, 200);
    for _ in 0..10 {
        assert_eq!(
            sign_in(&stack, &username, "wrong-password").await.status,
            401
        );
    }
    let refused = sign_in(&stack, &username, PASSWORD).await;
    throttled(&refused, 15 * 60);
    // An unknown account gets the same answer.
    let nobody = unique("nobody");
    for _ in 0..10 {
        assert_eq!(sign_in(&stack, &nobody, "wrong-password").await.status, 401);
    }
    let unknown = sign_in(&stack, &nobody, "wrong-password").await;
    throttled(&unknown, 15 * 60);
    assert_eq!(unknown.json()["message"], refused.json()["message"]);

    let admin = stack.admin_token().await;
    let me = stack
        .gateway
        .get("/api/admin/users?pageSize=100", Some(&admin))
        .await
        .json();
    let id = me["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/admin/users/{id}/sign-in-throttle");
    let user_token = stack.user_token().await;
    assert_eq!(
        stack.gateway.delete(&path, Some(&user_token)).await.status,
        403
    );
    let cleared = stack.gateway.delete(&path, Some(&admin)).await;
    assert_eq!(cleared.status, 204, "{}", cleared.text());
    stack.sign_in(&username, PASSWORD).await;
}

#[tokio::test]
async fn sign_ups_told_too_often_that_names_are_taken_get_a_429() {
    let stack = spawn_stack().await;
    let taken = unique("taken");
    assert_eq!(sign_up(&stack, &taken).await.status, 200);
    for _ in 0..10 {
        assert_eq!(sign_up(&stack, &taken).await.status, 409);
    }
    throttled(&sign_up(&stack, &unique("free")).await, 15 * 60);
}
