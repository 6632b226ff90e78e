//! The key set, readiness, CORS and the request deadline.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request},
};

use crate::{
    helpers::TestGateway,
    stack::{spawn_stack, spawn_stack_with},
};

#[tokio::test]
async fn the_jwks_is_served_with_cache_headers() {
    let stack = spawn_stack().await;
    let response = stack.gateway.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let keys: token::JwkSet = serde_json::from_slice(&response.body).unwrap();
    assert!(!keys.keys.is_empty());
    assert!(
        keys.keys
            .iter()
            .all(|k| !k.kid.is_empty() && k.kty == "OKP")
    );
    let cache = response.header("cache-control").unwrap();
    assert!(cache.starts_with("public, max-age="), "{cache}");
}

#[tokio::test]
async fn the_gateway_is_ready_when_its_backends_serve() {
    let stack = spawn_stack().await;
    let response = stack.gateway.get("/readyz", None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "ready");
    assert_eq!(response.json()["backends"]["resource"]["up"], 1);
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let stack = spawn_stack_with(1, |config| {
        config.cors_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/persons")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = stack.gateway.send(preflight("https://app.example")).await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let refused = stack.gateway.send(preflight("https://evil.example")).await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn only_cookie_origins_may_send_credentials_and_only_to_the_auth_routes() {
    let stack = spawn_stack_with(1, |config| {
        config.cors_origins = vec![
            "https://app.example".to_owned(),
            "https://other.example".to_owned(),
        ];
        config.cookie_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let preflight = |origin: &str, path: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap()
    };
    let credentials = |response: &crate::helpers::TestResponse| {
        response
            .header("access-control-allow-credentials")
            .map(str::to_owned)
    };
    let refresh = "/api/auth/refresh";
    let allowed = stack
        .gateway
        .send(preflight("https://app.example", refresh))
        .await;
    assert_eq!(credentials(&allowed).as_deref(), Some("true"));
    let cors_only = stack
        .gateway
        .send(preflight("https://other.example", refresh))
        .await;
    assert_eq!(credentials(&cors_only), None);
    let elsewhere = stack
        .gateway
        .send(preflight("https://app.example", "/api/persons"))
        .await;
    assert_eq!(credentials(&elsewhere), None);
}

#[tokio::test]
async fn a_request_past_its_deadline_is_a_json_503() {
    // A backend that accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", black_hole.local_addr().unwrap());
    let mut config = gateway::Config::for_tests(vec![url.clone()], vec![url]);
    config.request_timeout = Duration::from_millis(300);
    let gateway = TestGateway::from_config(config).await;
    let response = gateway.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.error_code(), "timeout");
}
