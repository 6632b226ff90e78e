//! Sign-up, sign-in and `/api/auth/me` in the tutorials' shapes, and their error paths.

use axum::{body::Body, http::Request};
use serde_json::json;

use crate::stack::{PASSWORD, spawn_stack, unique};

fn sign_up_body(username: &str) -> serde_json::Value {
    json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD})
}

#[tokio::test]
async fn sign_up_answers_with_the_tutorials_message() {
    let stack = spawn_stack().await;
    let response = stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&unique("ann")))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["message"],
        "User was registered successfully!"
    );
}

#[tokio::test]
async fn sign_up_with_a_taken_username_is_a_409() {
    let stack = spawn_stack().await;
    let username = unique("bob");
    let first = stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&username))
        .await;
    assert_eq!(first.status, 200);
    let again = stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&username))
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.error_code(), "already_exists");
}

#[tokio::test]
async fn sign_up_with_invalid_fields_is_a_400() {
    let stack = spawn_stack().await;
    let bad_email =
        json!({"username": unique("cat"), "email": "not-an-email", "password": PASSWORD});
    let response = stack
        .gateway
        .post("/api/auth/signup", None, &bad_email)
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.error_code(), "invalid_argument");
    let short_password =
        json!({"username": unique("cat"), "email": "c@example.com", "password": "short"});
    let response = stack
        .gateway
        .post("/api/auth/signup", None, &short_password)
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
}

#[tokio::test]
async fn roles_beyond_user_at_sign_up_need_an_admins_token() {
    let stack = spawn_stack().await;
    let mut body = sign_up_body(&unique("eve"));
    body["roles"] = json!(["ROLE_ADMIN"]);
    let anonymous = stack.gateway.post("/api/auth/signup", None, &body).await;
    assert_eq!(anonymous.status, 403, "{}", anonymous.text());
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );

    let user = stack.user_token().await;
    let as_user = stack
        .gateway
        .post("/api/auth/signup", Some(&user), &body)
        .await;
    assert_eq!(as_user.status, 403, "{}", as_user.text());

    let admin = stack.admin_token().await;
    let as_admin = stack
        .gateway
        .post("/api/auth/signup", Some(&admin), &body)
        .await;
    assert_eq!(as_admin.status, 200, "{}", as_admin.text());
}

#[tokio::test]
async fn sign_in_answers_in_the_tutorials_shape() {
    let stack = spawn_stack().await;
    let username = unique("dan");
    stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&username))
        .await;
    let response = stack
        .gateway
        .post(
            "/api/auth/signin",
            None,
            &json!({"username": username, "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert!(!body["id"].as_str().unwrap().is_empty());
    assert_eq!(body["username"], username.as_str());
    assert_eq!(body["email"], format!("{username}@example.com"));
    assert_eq!(body["roles"], json!(["ROLE_USER"]));
    assert_eq!(body["tokenType"], "Bearer");
    assert!(body["expiresIn"].as_i64().unwrap() > 0);
    assert_eq!(body["accessToken"].as_str().unwrap().split('.').count(), 3);
}

#[tokio::test]
async fn sign_in_accepts_the_email_address() {
    let stack = spawn_stack().await;
    let username = unique("eli");
    stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&username))
        .await;
    let email = format!("{username}@example.com");
    let token = stack.sign_in(&email, PASSWORD).await;
    assert!(!token.is_empty());
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_401() {
    let stack = spawn_stack().await;
    let username = unique("fay");
    stack
        .gateway
        .post("/api/auth/signup", None, &sign_up_body(&username))
        .await;
    let wrong_password = stack
        .gateway
        .post(
            "/api/auth/signin",
            None,
            &json!({"username": username, "password": "wrong-password"}),
        )
        .await;
    let unknown_user = stack
        .gateway
        .post(
            "/api/auth/signin",
            None,
            &json!({"username": unique("nobody"), "password": "wrong-password"}),
        )
        .await;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(unknown_user.status, 401);
    assert_eq!(wrong_password.json(), unknown_user.json());
    // No token was sent, so the challenge carries no error (RFC 6750 §3.1).
    assert_eq!(
        wrong_password.header("www-authenticate"),
        Some("Bearer realm=\"persons-api\"")
    );
}

#[tokio::test]
async fn me_returns_the_callers_account_with_either_header_style() {
    let stack = spawn_stack().await;
    let (username, token) = stack.user_with_roles(&["user"]).await;
    let bearer = stack.gateway.get("/api/auth/me", Some(&token)).await;
    assert_eq!(bearer.status, 200, "{}", bearer.text());
    assert_eq!(bearer.json()["username"], username.as_str());
    assert_eq!(bearer.json()["roles"], json!(["ROLE_USER"]));

    let tutorial_style = stack
        .gateway
        .send(
            Request::builder()
                .uri("/api/auth/me")
                .header("x-access-token", &token)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(tutorial_style.status, 200, "{}", tutorial_style.text());
    assert_eq!(tutorial_style.json(), bearer.json());
}

#[tokio::test]
async fn me_without_a_token_is_a_401_with_a_bare_challenge() {
    let stack = spawn_stack().await;
    let response = stack.gateway.get("/api/auth/me", None).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "unauthenticated");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"persons-api\"")
    );
}

#[tokio::test]
async fn a_forged_or_garbled_token_is_a_401_invalid_token() {
    let stack = spawn_stack().await;
    let token = stack.user_token().await;
    // Flip the last character of the signature.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [forged.as_str(), "not.a.jwt", "garbage"] {
        let response = stack.gateway.get("/api/auth/me", Some(bad)).await;
        assert_eq!(response.status, 401, "{bad}: {}", response.text());
        let challenge = response.header("www-authenticate").unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}
