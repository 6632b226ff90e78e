//! What the services receive: the caller's token as `authorization: Bearer` (whichever header
//! the caller used), the request id as `x-request-id` and the client's address as
//! `x-forwarded-for` metadata. A stub stands in for auth-service so the test sees the raw gRPC
//! request; tests of the client address serve the gateway on a socket, since only a socket has a
//! peer.

use std::sync::{Arc, Mutex};

use axum::{
    body::Body,
    http::{HeaderMap, Request},
    routing::post,
};
use tonic::{service::Routes, transport::server::TcpIncoming};

use gateway::{Application, Config, Settings};

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

/// The gateway served on a loopback socket; stops when the returned sender is dropped.
async fn serve(config: Config) -> (String, tokio::sync::oneshot::Sender<()>) {
    let settings = Settings::try_from(config).expect("valid test settings");
    let app = Application::build(settings).await.expect("gateway builds");
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// Calls `GET /api/auth/me` through a socket with these extra headers; returns every
/// `x-forwarded-for` value the service received for it.
async fn forwarded_for_sent(trusted_proxies: &[&str], headers: &[(&str, &str)]) -> Vec<String> {
    let (url, seen) = recording_stub().await;
    let mut config = Config::for_tests(vec![url.clone()], vec![url]);
    config.trusted_proxies = trusted_proxies.iter().map(|p| p.to_string()).collect();
    // Proxies that maintain `Forwarded` are configured so; every other test uses the default.
    if headers.iter().all(|(name, _)| *name == "forwarded") {
        config.forwarded_header = gateway::client_addr::ForwardedHeader::Forwarded;
    }
    let (gateway, _stop) = serve(config).await;
    let mut request = reqwest::Client::new()
        .get(format!("{gateway}/api/auth/me"))
        .bearer_auth("some-token");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("gateway answers");
    assert_eq!(response.status(), 401);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "one backend call per request");
    seen[0]
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().expect("text").to_owned())
        .collect()
}

#[tokio::test]
async fn without_a_socket_no_client_address_is_sent() {
    let (url, seen) = recording_stub().await;
    let gateway = TestGateway::from_config(Config::for_tests(vec![url.clone()], vec![url])).await;
    let request = Request::builder()
        .uri("/api/auth/me")
        .header("x-access-token", "some-token")
        .header("x-forwarded-for", "198.51.100.7")
        .body(Body::empty())
        .unwrap();
    assert_eq!(gateway.send(request).await.status, 401);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get("x-forwarded-for"), None);
}

#[tokio::test]
async fn an_untrusted_peer_is_sent_as_the_client_whatever_it_claims() {
    let claims = [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=198.51.100.8"),
    ];
    assert_eq!(forwarded_for_sent(&[], &claims).await, ["127.0.0.1"]);
    let elsewhere = ["10.0.0.0/8"];
    assert_eq!(forwarded_for_sent(&elsewhere, &claims).await, ["127.0.0.1"]);
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_in_x_forwarded_for_or_forwarded() {
    let trusted = ["127.0.0.1", "10.0.0.0/8"];
    let chain = [("x-forwarded-for", "203.0.113.1, 198.51.100.7, 10.0.0.3")];
    assert_eq!(forwarded_for_sent(&trusted, &chain).await, ["198.51.100.7"]);
    let forwarded = [("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")];
    assert_eq!(
        forwarded_for_sent(&trusted, &forwarded).await,
        ["2001:db8::7"]
    );
}

#[tokio::test]
async fn a_client_written_forwarded_header_is_not_believed_behind_an_x_forwarded_for_proxy() {
    let trusted = ["127.0.0.1"];
    let spoofed = [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=6.6.6.6"),
    ];
    assert_eq!(
        forwarded_for_sent(&trusted, &spoofed).await,
        ["198.51.100.7"]
    );
}

#[tokio::test]
async fn junk_from_a_trusted_proxy_is_ignored() {
    for junk in [
        ("x-forwarded-for", "not-an-address"),
        ("x-forwarded-for", "198.51.100.7, 999.1.1.1"),
        ("forwarded", "for=unknown"),
    ] {
        let sent = forwarded_for_sent(&["127.0.0.0/8"], &[junk]).await;
        assert_eq!(sent, ["127.0.0.1"], "{junk:?}");
    }
}

/// What the service received as `x-forwarding-secret` for one `GET /api/auth/me` whose client
/// sent `claimed` as its own.
async fn forwarding_secret_sent(configured: Option<&str>, claimed: &str) -> Vec<String> {
    let (url, seen) = recording_stub().await;
    let mut config = Config::for_tests(vec![url.clone()], vec![url]);
    config.forwarding_secret = configured.map(Into::into);
    let (gateway, _stop) = serve(config).await;
    let response = reqwest::Client::new()
        .get(format!("{gateway}/api/auth/me"))
        .bearer_auth("some-token")
        .header("x-forwarding-secret", claimed)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 401);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "one backend call per request");
    assert_eq!(seen[0]["x-forwarded-for"], "127.0.0.1");
    seen[0]
        .get_all("x-forwarding-secret")
        .iter()
        .map(|v| v.to_str().expect("text").to_owned())
        .collect()
}

#[tokio::test]
async fn the_client_address_goes_with_the_gateway_s_forwarding_secret_and_never_the_client_s() {
    const SECRET: &str = "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0";
    let claimed = "a-client-claiming-to-be-the-gateway-1234";
    assert_eq!(
        forwarding_secret_sent(Some(SECRET), claimed).await,
        [SECRET]
    );
    assert!(forwarding_secret_sent(None, claimed).await.is_empty());
}
