//! What clients that never finish their requests can make the gateway hold: unfinished HTTP/1
//! headers are cut off near `GATEWAY_MAX_HEADER_BYTES`, HTTP/2 connections carry few streams,
//! and bodies in flight share one process-wide budget, so memory stays bounded however many
//! connections and streams a client opens (`gateway::serve`, `gateway::body_budget`).

use std::{net::SocketAddr, time::Duration};

use axum::http::Request;
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use gateway::{Application, Config, Settings};

/// A real gateway on a socket, with backends that never answer and timeouts far beyond what the
/// tests wait, so that whatever they see comes from the limits under test.
async fn listening_gateway() -> SocketAddr {
    telemetry::init_for_tests();
    let mut config = Config::for_tests(
        vec!["http://127.0.0.1:9".to_owned()],
        vec!["http://127.0.0.1:9".to_owned()],
    );
    // The test names its clients in x-forwarded-for, as a proxy in front of the gateway would.
    config.trusted_proxies = vec!["127.0.0.1".into()];
    config.header_read_timeout = Duration::from_secs(30);
    config.request_timeout = Duration::from_secs(30);
    let settings = Settings::try_from(config).expect("valid test settings");
    let app = Application::build(settings).await.expect("gateway builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

#[tokio::test]
async fn unfinished_http1_headers_past_the_header_limit_are_refused_at_once() {
    let addr = listening_gateway().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // 64 KiB of headers (the limit is 16 KiB), never ended by the empty line.
    let line = format!("x-pad: {}\r\n", "a".repeat(8000));
    for _ in 0..8 {
        if stream.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection still holds its unfinished headers after 3 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    send
}

#[tokio::test]
async fn an_http2_connection_carries_at_most_32_streams() {
    let addr = listening_gateway().await;
    let send = h2_client(addr).await;
    // The server's SETTINGS arrive with the first answer.
    assert_eq!(healthz(send.clone()).await, 200);
    let streams = send.current_max_send_streams();
    assert!(streams <= 32, "{streams} concurrent streams allowed");
}

/// `GET /healthz` on a stream of `send`: the answer's status.
async fn healthz(send: h2::client::SendRequest<Bytes>) -> u16 {
    let request = Request::get("http://localhost/healthz")
        .body(())
        .expect("a request");
    let (response, _) = send
        .ready()
        .await
        .expect("the connection takes a stream")
        .send_request(request, true)
        .expect("the request is sent");
    response.await.expect("an answer").status().as_u16()
}

/// Starts a sign-up for the client `client` whose body (`Content-Length` 65,000) never comes,
/// on a stream of `send`; resolves to the answer's status and error code, if one comes within
/// `within`.
async fn unfinished_sign_up(
    send: h2::client::SendRequest<Bytes>,
    client: String,
    within: Duration,
) -> Option<(u16, String)> {
    let request = Request::post("http://localhost/api/auth/signup")
        .header("x-forwarded-for", client)
        .header("content-type", "application/json")
        .header("content-length", "65000")
        .body(())
        .ok()?;
    let (response, mut body) = send.ready().await.ok()?.send_request(request, false).ok()?;
    body.send_data(Bytes::from_static(b"{"), false).ok()?;
    let answer = tokio::time::timeout(within, async {
        let response = response.await.ok()?;
        let status = response.status().as_u16();
        let mut data = response.into_body();
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = data.data().await {
            bytes.extend_from_slice(&chunk);
        }
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Some((status, code))
    })
    .await;
    // Keep the stream (and its unfinished body) open until the caller has counted every
    // answer: dropped, its share of the budget would come back.
    std::mem::forget(body);
    answer.ok().flatten()
}

/// Counts the answers of `streams`: (refused as overloaded, still waiting for their bodies).
async fn tally(streams: Vec<tokio::task::JoinHandle<Option<(u16, String)>>>) -> (usize, usize) {
    let (mut refused, mut waiting) = (0, 0);
    for stream in streams {
        match stream.await.expect("the stream's task ran") {
            Some((503, code)) if code == "overloaded" => refused += 1,
            None => waiting += 1,
            Some(other) => panic!("unexpected answer {other:?}"),
        }
    }
    (refused, waiting)
}

#[tokio::test]
async fn unfinished_bodies_on_many_streams_are_bounded_by_the_body_budget() {
    let addr = listening_gateway().await;
    // 12 clients × 15 streams × 64 KiB = 11 MiB of bodies, past the 8 MiB budget; each client
    // within its own eighth of it.
    let mut streams = Vec::new();
    let mut clients = Vec::new();
    for client in 0..12 {
        let send = h2_client(addr).await;
        for _ in 0..15 {
            streams.push(tokio::spawn(unfinished_sign_up(
                send.clone(),
                format!("198.51.100.{client}"),
                Duration::from_secs(5),
            )));
        }
        clients.push(send);
    }
    let (refused, waiting) = tally(streams).await;
    assert!(refused > 0, "all {waiting} unfinished bodies are held");
    assert!(
        waiting >= 100,
        "only {waiting} held: the budget holds 128 such bodies"
    );
    // Requests without a body pay nothing and go through meanwhile.
    assert_eq!(healthz(h2_client(addr).await).await, 200);
}

#[tokio::test]
async fn one_client_holds_at_most_an_eighth_of_the_body_budget() {
    let addr = listening_gateway().await;
    // 30 streams × 64 KiB from one client: an eighth of 8 MiB holds 16 of them at most.
    let send = h2_client(addr).await;
    let streams = (0..30)
        .map(|_| {
            tokio::spawn(unfinished_sign_up(
                send.clone(),
                "203.0.113.5".into(),
                Duration::from_secs(3),
            ))
        })
        .collect();
    let (refused, waiting) = tally(streams).await;
    assert!(
        (10..=16).contains(&waiting) && refused == 30 - waiting,
        "one client holds {waiting} bodies ({refused} refused)"
    );
    // Another client still gets its bodies in.
    let other = h2_client(addr).await;
    let (refused, waiting) = tally(vec![tokio::spawn(unfinished_sign_up(
        other.clone(),
        "203.0.113.6".into(),
        Duration::from_secs(1),
    ))])
    .await;
    assert_eq!((refused, waiting), (0, 1));
}
