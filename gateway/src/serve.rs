//! The HTTP server: hyper-util's HTTP/1 and HTTP/2 server with the limits `axum::serve` lacks,
//! so slow or idle clients cannot hold connections forever and no client can open unboundedly
//! many.
//!
//! - A client must finish a request's headers within the header-read timeout: the first
//!   request's from the moment it connects (also while HTTP/1 or HTTP/2 is still being
//!   detected, which hyper does not time), and on a kept-alive HTTP/1 connection every next
//!   request's from the moment the previous answer was sent, which also closes idle ones.
//! - A connection with no request in flight for as long (HTTP/2's, whose pings keep it alive
//!   otherwise, and HTTP/1's alike) is shut down gracefully: HTTP/2 gets a GOAWAY, and a
//!   request still in flight, its answer's body included, is never cut by it.
//! - At most `max_connections` are served at once; further ones wait in the listen backlog.
//! - What one connection may make the gateway buffer is bounded ([`per_connection_bytes`] gives
//!   the sum): HTTP/1 reads at most `max_header_bytes` + [`READ_SLACK_BYTES`] of a request it
//!   has not parsed yet (beyond that hyper answers 431 and closes), HTTP/2 the same for one
//!   header list, at most [`MAX_CONCURRENT_STREAMS`] streams and [`CONNECTION_WINDOW`] bytes of
//!   request data no handler has read yet (flow control). Bodies being read by handlers are
//!   bounded process-wide by `crate::body_budget`. HTTP/2 connections are pinged so dead peers are
//!   noticed.
//! - Stopping closes the listener and lets open connections finish their requests
//!   (`telemetry::serve_with_drain` bounds how long).

mod idle;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo, http::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;

use idle::{Activity, Idle, TrackActivity};

/// How a connection is bounded; from [`crate::Settings`].
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// `GATEWAY_MAX_HEADER_BYTES`: what the gateway's own check (`crate::limits`) allows.
    pub max_header_bytes: usize,
}

/// What hyper reads beyond `GATEWAY_MAX_HEADER_BYTES` before it refuses a request on its own
/// (with a bare 431 and a closed connection): room for the request line and the `: ` and CRLF
/// of each header, which the gateway's own check does not count, so that a request within that
/// check's limit gets its JSON answer. Also the most of a body HTTP/1 reads in one go.
pub const READ_SLACK_BYTES: usize = 8 * 1024;

/// Streams one HTTP/2 connection may have open at once: more than a browser needs in parallel
/// (HTTP/1 gave it six connections), few enough that one connection's requests stay small.
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

/// HTTP/2 flow control: request data a stream, and a whole connection, may have sent that no
/// handler has read yet. The connection's is HTTP/2's initial window, which a server cannot
/// shrink; a stream's is half of it, so one stream cannot take it all. Request bodies are JSON
/// of at most `GATEWAY_BODY_LIMIT` (64 KiB by default), for which this costs a round trip or two.
pub const CONNECTION_WINDOW: u32 = 65_535;
const STREAM_WINDOW: u32 = 32 * 1024;

/// The most one client connection may make the gateway buffer for requests it has not finished
/// sending, whatever it sends: its unparsed header bytes (HTTP/1's read buffer, or one HTTP/2
/// header list) plus, on HTTP/2, its unread request data. Bodies being read by handlers are
/// counted apart, process-wide (`crate::body_budget`).
pub const fn per_connection_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes + READ_SLACK_BYTES + CONNECTION_WINDOW as usize
}

/// Serves `app` on `listener` until `stop` resolves, then waits for open connections to finish
/// their requests. Each request carries its TCP peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = Arc::new(builder(limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Stopping is announced on this channel; once every connection task has dropped its
    // receiver, all are done. (hyper-util's `GracefulShutdown` does the same, but hides the
    // connection, whose graceful shutdown the idle timer needs too.)
    let (stopping, _) = watch::channel(());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((permit, stream, peer)) = accepted else {
            continue;
        };
        let activity = Arc::new(Activity::new(Instant::now()));
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let service = TrackActivity::new(service, activity.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let mut stop_rx = stopping.subscribe();
        let idle_limit = limits.header_read_timeout;
        tokio::spawn(async move {
            // Held for as long as the connection is open, as is `stop_rx`.
            let _permit = permit;
            tokio::pin!(connection);
            let timer = tokio::time::sleep_until(activity.started() + idle_limit);
            tokio::pin!(timer);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, error = %error, "connection ended with an error");
                        }
                        return;
                    }
                    _ = stop_rx.changed(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = &mut timer, if !closing => {
                        let now = Instant::now();
                        match activity.idle() {
                            Idle::NeverUsed => {
                                tracing::debug!(%peer, "no request within the header read timeout; closing");
                                return;
                            }
                            Idle::Busy => timer.as_mut().reset(now + idle_limit),
                            Idle::Since(since) if since + idle_limit <= now => {
                                tracing::debug!(%peer, "idle for the header read timeout; shutting down");
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            Idle::Since(since) => timer.as_mut().reset(since + idle_limit),
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stopping.send(());
    stopping.closed().await;
    Ok(())
}

/// The next connection once a permit is free. `None` on an accept error, which concerns that
/// one connection (or a passing lack of file descriptors): waits a moment and lets the caller
/// go on.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    // The semaphore is never closed, so acquiring fails never; `ok()?` only satisfies the type.
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            // Small JSON answers; sending them at once is worth more than fewer packets.
            let _ = stream.set_nodelay(true);
            Some((permit, stream, peer))
        }
        Err(error) => {
            tracing::warn!(%error, "failed to accept a connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

fn builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    // At least 12 KiB (the settings' floor for `max_header_bytes`) + 8 KiB, so above hyper's
    // 8 KiB minimum, whose assertion would panic.
    let max_read = limits.max_header_bytes.saturating_add(READ_SLACK_BYTES);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(max_read).unwrap_or(u32::MAX))
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}
