//! What the services receive: the caller's token as `authorization: Bearer` (whichever header
//! the caller used) and the request id as `x-request-id` metadata. A stub stands in for
//! auth-service so the test sees the raw gRPC request.

use std::sync::{Arc, Mutex};

use axum::{
    body::Body,
    http::{HeaderMap, Request},
    routing::post,
};
use tonic::{service::Routes, transport::server::TcpIncoming};

use gateway::Config;

use crate::helpers::TestGateway;

/// A gRPC server that records the headers of every GetMe call and refuses it.
async fn recording_stub() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let stub = axum::Router::new().route(
        "/auth.v1.AuthService/GetMe",
        post(move |headers: HeaderMap| async move {
            recorder.lock().expect("lock").push(headers);
            // A trailers-only gRPC answer: the status travels in the headers.
            (
                [
                    ("content-type", "application/grpc"),
                    ("grpc-status", "16"),
                    ("grpc-message", "stub refuses every token"),
                ],
                "",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(Routes::from(stub))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (url, seen)
}

#[tokio::test]
async fn the_token_and_request_id_reach_the_service_as_metadata() {
    let (url, seen) = recording_stub().await;
    let gateway = TestGateway::from_config(Config::for_tests(vec![url.clone()], vec![url])).await;

    let response = gateway
        .send(
            Request::builder()
                .uri("/api/auth/me")
                .header("x-access-token", "tutorial-style-token")
                .header("x-request-id", "req-from-client-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["message"], "stub refuses every token");
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(response.header("x-request-id"), Some("req-from-client-1"));

    let generated = gateway
        .get("/api/auth/me", Some("bearer-style-token"))
        .await;
    let generated_id = generated.header("x-request-id").unwrap().to_owned();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one backend call per request");
    assert_eq!(seen[0]["authorization"], "Bearer tutorial-style-token");
    assert_eq!(seen[0]["x-request-id"], "req-from-client-1");
    assert_eq!(seen[1]["authorization"], "Bearer bearer-style-token");
    assert_eq!(seen[1]["x-request-id"], generated_id.as_str());
}
