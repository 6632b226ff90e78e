//! Idle HTTP/2 connections: one with no request in flight for the header-read timeout is shut
//! down with a GOAWAY, so idle clients that answer pings cannot keep their connection slots
//! forever; one with a slow request in flight is left to finish it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::Request;
use tokio::net::{TcpListener, TcpStream};

use gateway::serve::{ConnectionLimits, serve};

const IDLE_LIMIT: Duration = Duration::from_millis(1_000);

/// The gateway's server with a limit of [`IDLE_LIMIT`], serving `/fast` at once and `/slow`
/// after three times that.
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(IDLE_LIMIT * 3).await;
                "slow"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let limits = ConnectionLimits {
        header_read_timeout: IDLE_LIMIT,
        max_connections: 4,
        max_header_bytes: 16 * 1024,
    };
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    addr
}

/// An HTTP/2 (h2c) client whose connection is driven by a task; the task's handle ends with
/// the connection's outcome.
async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

async fn get_body(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> Bytes {
    let request = Request::get(format!("http://localhost{path}"))
        .body(())
        .expect("request");
    let (response, _) = send
        .clone()
        .ready()
        .await
        .expect("connection open")
        .send_request(request, true)
        .expect("request sent");
    let response = response.await.expect("an answer");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the whole body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Bytes::from(bytes)
}

#[tokio::test]
async fn an_idle_http2_connection_is_shut_down_gracefully_after_the_header_read_timeout() {
    let addr = server().await;
    let (mut send, connection) = h2_client(addr).await;
    assert_eq!(get_body(&mut send, "/fast").await, "fast");
    let idle_from = Instant::now();
    // `send` stays alive: h2 closes a client connection whose handles are all dropped.
    let outcome = tokio::time::timeout(IDLE_LIMIT * 5, connection)
        .await
        .expect("an idle HTTP/2 connection stays open past five times the idle limit")
        .unwrap();
    // A GOAWAY with NO_ERROR followed by the end of the connection is a clean end for h2.
    assert!(outcome.is_ok(), "not a graceful shutdown: {outcome:?}");
    assert!(
        idle_from.elapsed() >= IDLE_LIMIT * 9 / 10,
        "closed after {:?}, before the idle limit",
        idle_from.elapsed()
    );
    drop(send);
}

#[tokio::test]
async fn requests_reset_the_idle_clock_and_a_slow_one_in_flight_is_not_cut() {
    let addr = server().await;
    let (mut send, connection) = h2_client(addr).await;
    // Requests a quarter of the limit apart keep the connection open beyond the limit (with
    // room for a loaded machine's stalls between them).
    for _ in 0..6 {
        assert_eq!(get_body(&mut send, "/fast").await, "fast");
        tokio::time::sleep(IDLE_LIMIT / 4).await;
    }
    // The slow request takes three idle limits, and nothing else happens on the connection.
    assert_eq!(get_body(&mut send, "/slow").await, "slow");
    assert!(!connection.is_finished(), "closed with requests in flight");
}
