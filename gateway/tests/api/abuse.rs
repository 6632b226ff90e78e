//! Requests made to hurt: oversized tokens and headers, odd request ids, a chosen key id, and
//! connections that send nothing or crawl. Each gets a clear 4xx or is cut off, and the backends
//! stay in rotation.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use gateway::{Application, Config, Settings, backend::ReplicaState};

use crate::{
    helpers::gateway_without_backends,
    stack::{PASSWORD, spawn_stack, unique},
};

#[tokio::test]
async fn a_100_kb_token_is_a_401_and_the_backends_stay_ready() {
    let stack = spawn_stack().await;
    let token = "a".repeat(100 * 1024);
    for path in ["/api/auth/me", "/api/persons"] {
        let response = stack.gateway.get(path, Some(&token)).await;
        assert_eq!(response.status, 401, "{path}: {}", response.text());
        assert_eq!(response.json()["message"], "access token is too large");
    }
    let request = Request::get("/api/persons")
        .header("x-access-token", &token)
        .body(Body::empty())
        .unwrap();
    assert_eq!(stack.gateway.send(request).await.status, 401);
    let ready = stack.gateway.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    for backend in [&stack.gateway.state.auth, &stack.gateway.state.resource] {
        assert!(
            backend
                .replicas()
                .iter()
                .all(|r| r.state() == ReplicaState::Up)
        );
    }
}

#[tokio::test]
async fn twenty_kb_of_headers_are_a_431_in_the_json_error_model() {
    let gateway = gateway_without_backends().await;
    let mut request = Request::get("/healthz");
    for i in 0..20 {
        request = request.header(format!("x-padding-{i}"), "p".repeat(1024));
    }
    let response = gateway.send(request.body(Body::empty()).unwrap()).await;
    assert_eq!(response.status, 431);
    assert_eq!(response.error_code(), "header_fields_too_large");
}

#[tokio::test]
async fn an_oversized_or_odd_request_id_is_replaced_by_a_clean_one() {
    let gateway = gateway_without_backends().await;
    for sent in ["x".repeat(20 * 1024), "a \"quoted\" id".to_owned()] {
        let request = Request::get("/healthz")
            .header("x-request-id", &sent)
            .body(Body::empty())
            .unwrap();
        let response = gateway.send(request).await;
        let echoed = response.header("x-request-id").expect("a request id");
        assert_ne!(echoed, sent);
        assert!(
            telemetry::is_valid_request_id(echoed.as_bytes()),
            "{echoed}"
        );
    }
}

/// A token whose header names a key no one has: `{"alg":"EdDSA","kid":"<script>…"}`.
fn token_with_kid(kid: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#);
    format!("{}.{}.{}", b64(&header), b64(r#"{"sub":"1"}"#), b64("sig"))
}

#[tokio::test]
async fn a_chosen_key_id_is_not_echoed_in_the_401() {
    let stack = spawn_stack().await;
    let kid = "evil-kid-<script>alert(1)</script>";
    for path in ["/api/auth/me", "/api/persons"] {
        let response = stack.gateway.get(path, Some(&token_with_kid(kid))).await;
        assert_eq!(response.status, 401, "{path}: {}", response.text());
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(!response.text().contains("evil-kid"), "{}", response.text());
        assert!(!challenge.contains("evil-kid"), "{challenge}");
    }
}

#[tokio::test]
async fn sign_in_answers_are_never_cached() {
    let stack = spawn_stack().await;
    let username = unique("nocache");
    let body = serde_json::json!({
        "username": username, "email": format!("{username}@example.com"), "password": PASSWORD
    });
    assert_eq!(
        stack
            .gateway
            .post("/api/auth/signup", None, &body)
            .await
            .status,
        200
    );
    let request = crate::helpers::request(
        Method::POST,
        "/api/auth/signin",
        None,
        Some(serde_json::json!({"username": username, "password": PASSWORD}).to_string()),
    );
    let response = stack.gateway.send(request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn no_api_answer_is_kept_in_a_browsers_cache() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let person = stack.create_person(&admin, "Cached Person").await;
    let me = stack.gateway.get("/api/auth/me", Some(&admin)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    let id = me.json()["id"].as_str().unwrap().to_owned();
    let paths = [
        "/api/auth/me".to_owned(),
        "/api/auth/sessions".to_owned(),
        "/api/persons".to_owned(),
        format!("/api/persons/{}", person["personId"]),
        "/api/admin/users".to_owned(),
        format!("/api/admin/users/{id}/sessions"),
        "/api/admin/service-accounts".to_owned(),
    ];
    for path in &paths {
        let response = stack.gateway.get(path, Some(&admin)).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.header("cache-control"), Some("no-store"), "{path}");
    }
    // Refusals too, and routes that answer nothing.
    let refused = stack.gateway.get("/api/persons", None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    let missing = stack.gateway.get("/api/nothing-here", None).await;
    assert_eq!(missing.header("cache-control"), Some("no-store"));
}

/// A real gateway on a socket, with a short header-read timeout.
async fn listening_gateway() -> std::net::SocketAddr {
    telemetry::init_for_tests();
    let mut config = Config::for_tests(
        vec!["http://127.0.0.1:9".to_owned()],
        vec!["http://127.0.0.1:9".to_owned()],
    );
    config.header_read_timeout = Duration::from_millis(300);
    let settings = Settings::try_from(config).expect("valid test settings");
    let app = Application::build(settings).await.expect("gateway builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

/// Whether the gateway closed the connection within `within` (reads reach end of stream).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let addr = listening_gateway().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_connection_trickling_its_headers_is_cut_off() {
    let addr = listening_gateway().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..50 {
            if stream.write_all(b"x-slow: 1\r\n").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut_off = trickle.await || closed_within(&mut stream, Duration::from_secs(1)).await;
    assert!(cut_off, "still open after 5 s of trickling");
}
