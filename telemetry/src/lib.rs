//! What every binary of the project does the same way: structured logs, a request id that follows
//! a request from the gateway through the services, and waiting for the signal to stop.

mod grpc;

use std::{future::Future, pin::Pin, time::Duration};

use http::{HeaderName, Request};
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub use grpc::{
    ClientAddress, ClientAddressLayer, FORWARDED_FOR, GrpcLayers, bind, grpc_layers, reflection,
    report_health, serve_grpc,
};

/// The header (and gRPC metadata key) that carries the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber once: `RUST_LOG` filters (default `info`), and `LOG_FORMAT=json`
/// switches to one JSON object per line for log collectors.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    // A second call (tests start several services in one process) keeps the first subscriber.
    drop(result);
}

/// For tests: logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}

/// A service's whole `main`: logging, then settings from flags and environment (on a bad one,
/// one line and exit code 64 before anything starts), then `run` until it returns; an error is
/// logged with its cause chain and fails the exit code.
pub async fn run_service<C, S, F>(service: &str, run: impl FnOnce(S) -> F) -> std::process::ExitCode
where
    C: clap::Parser,
    S: TryFrom<C, Error = settings::ConfigError>,
    F: Future<Output = anyhow::Result<()>>,
{
    init();
    let settings = match settings::load::<C, S>() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                service,
                error = format!("{error:#}"),
                "stopped with an error"
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves when the process is asked to stop: SIGTERM (what Kubernetes sends) or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// How long in-flight requests may take to finish after the stop signal; shorter than the
/// pods' `terminationGracePeriodSeconds` (30 s) so Kubernetes never has to kill us mid-drain.
pub const DRAIN_GRACE: Duration = Duration::from_secs(20);

/// Runs a server until `shutdown` resolves, then drains it: `draining` runs first (report
/// NOT_SERVING, so load balancers stop sending), then the server is told to stop accepting, and
/// in-flight requests get at most [`DRAIN_GRACE`] to finish. `serve` builds the server around
/// the future that tells it to stop accepting.
pub async fn serve_with_drain<S, Fut, E>(
    serve: S,
    shutdown: impl Future<Output = ()>,
    draining: impl Future<Output = ()>,
) -> Result<(), E>
where
    S: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = serve(Box::pin(async move {
        let _ = stop_rx.await;
    }));
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    draining.await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(());
    match tokio::time::timeout(DRAIN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(grace = ?DRAIN_GRACE, "requests still running after the drain grace; stopping anyway");
            Ok(())
        }
    }
}

/// Generates a UUID v4 request id where the caller sent none.
#[derive(Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        uuid::Uuid::new_v4()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Keeps the caller's `x-request-id` (or makes one) and echoes it in the response.
pub fn request_id_layers() -> (SetRequestIdLayer<NewRequestId>, PropagateRequestIdLayer) {
    (
        SetRequestIdLayer::new(REQUEST_ID, NewRequestId),
        PropagateRequestIdLayer::new(REQUEST_ID),
    )
}

pub type GrpcTraceLayer<B> =
    TraceLayer<SharedClassifier<GrpcErrorsAsFailures>, fn(&Request<B>) -> tracing::Span>;

/// One span per gRPC call, named by its method and carrying the request id, so every log line
/// of the call can be found by that id in any service. Answers the caller caused (bad input,
/// no token, not found) are not failures of ours and are not logged as errors.
pub fn grpc_trace_layer<B>() -> GrpcTraceLayer<B> {
    let classifier = GrpcErrorsAsFailures::new()
        .with_success(GrpcCode::Cancelled)
        .with_success(GrpcCode::InvalidArgument)
        .with_success(GrpcCode::NotFound)
        .with_success(GrpcCode::AlreadyExists)
        .with_success(GrpcCode::PermissionDenied)
        .with_success(GrpcCode::ResourceExhausted)
        .with_success(GrpcCode::FailedPrecondition)
        .with_success(GrpcCode::Unauthenticated);
    TraceLayer::new(SharedClassifier::new(classifier))
        .make_span_with(request_span::<B> as fn(&Request<B>) -> tracing::Span)
}

/// The span every request's log lines belong to: its path, its request id and, once
/// [`ClientAddressLayer`] has run, the client's address.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match request.extensions().get::<ClientAddress>() {
        Some(ClientAddress(client)) => tracing::info_span!(
            "request",
            method = %request.uri().path(),
            request_id = %request_id,
            client = %client,
        ),
        None => tracing::info_span!(
            "request",
            method = %request.uri().path(),
            request_id = %request_id,
        ),
    }
}
