//! What every binary of the project does the same way: structured logs, a request id and a W3C
//! trace context that follow a request from the gateway through the services
//! ([`trace_context`]), span export to an OpenTelemetry collector when configured ([`otlp`]),
//! Prometheus metrics ([`metrics`]), and waiting for the signal to stop.

pub mod access_log;
mod grpc;
mod json_log;
mod log_filter;
mod log_writer;
pub mod metrics;
pub mod otlp;
#[cfg(test)]
mod test_writer;
pub mod tls;
pub mod trace_context;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, Request};
use opentelemetry_sdk::trace::SdkTracer;
use tower::Service;
use tracing::field::display;
use tracing_subscriber::{EnvFilter, Layer as _, filter::Targets, fmt, prelude::*};

pub use grpc::{
    ClientAddress, ClientAddressLayer, FORWARDED_FOR, FORWARDING_SECRET, GrpcCall, GrpcCallLayer,
    GrpcLayers, GrpcLimits, bind, grpc_layers, reflection, report_health, report_serving,
    serve_grpc, serve_grpc_service,
};
pub use trace_context::{
    MakeRequestSpan, TRACEPARENT, TRACESTATE, TraceContext, TraceContextLayer, request_span,
};

/// The header (and gRPC metadata key) that carries the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber once: `RUST_LOG` filters (default `info`), and `LOG_FORMAT=json`
/// switches to one JSON object per line for log collectors. No span export: that is
/// [`run_service`]'s, when the environment asks for it.
pub fn init() {
    install(None, std::io::stdout);
}

/// [`init`], with the spans that pass `RUST_LOG` also handed to OpenTelemetry through `tracer`,
/// and the lines written through `writer`.
fn install<W>(tracer: Option<SdkTracer>, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(not_the_exporters_own())
    });
    let registry = tracing_subscriber::registry()
        .with(log_filter::LogFilter::new(filter))
        .with(otel);
    let result = if json {
        registry
            .with(
                // tracing-subscriber's JSON format (flattened events, the current span and the
                // span list), written without re-parsing the spans' fields for every line.
                fmt::layer()
                    .fmt_fields(json_log::JsonSpanFields)
                    .event_format(json_log::JsonLines)
                    .with_writer(writer),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_writer(writer)).try_init()
    };
    // A second call (tests start several services in one process) keeps the first subscriber.
    drop(result);
}

/// Writes the waiting log lines when dropped: at the end of [`run_service_with`], however it
/// returns.
struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        log_writer::flush();
    }
}

/// Everything but the spans and events of the libraries the exporter itself sends with: with
/// `RUST_LOG=debug` their spans would be exported, and the export would make more of them.
fn not_the_exporters_own() -> Targets {
    use tracing_subscriber::filter::LevelFilter;
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets([
            ("h2", LevelFilter::OFF),
            ("hyper", LevelFilter::OFF),
            ("hyper_util", LevelFilter::OFF),
            ("tonic", LevelFilter::OFF),
            ("tower", LevelFilter::OFF),
            ("opentelemetry", LevelFilter::OFF),
            ("opentelemetry_sdk", LevelFilter::OFF),
            ("opentelemetry_otlp", LevelFilter::OFF),
        ])
        // A longer prefix wins: the request spans' own events stay.
        .with_target("tower_http", LevelFilter::TRACE)
}

/// For tests: logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}

/// How [`run_service_with`] writes log lines to standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLines {
    /// Each line with its own `write(2)` as it is logged.
    Direct,
    /// Gathered in memory and written in chunks: when 64 KiB are waiting, every 100 ms, when
    /// the service stops and before a panic's message. Saves a system call per line on a busy
    /// service; a process killed without a chance to flush (SIGKILL) loses at most the last
    /// 100 ms of lines.
    Buffered,
}

/// A service's whole `main`: its flags and environment parsed (clap reports a bad flag itself),
/// the tokio runtime built with the worker threads they set (one: tokio's current-thread
/// scheduler, running every task on the thread that called), logging (and span export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set), then the settings validated (on a bad one, one line and
/// exit code 64 before anything starts), then `run` until it returns; an error is logged with its
/// cause chain and fails the exit code. The last spans are sent before the process exits.
pub fn run_service<C, S, F>(service: &str, run: impl FnOnce(S) -> F) -> std::process::ExitCode
where
    C: clap::Parser + settings::WorkerThreads,
    S: TryFrom<C, Error = settings::ConfigError>,
    F: Future<Output = anyhow::Result<()>>,
{
    run_service_with::<C, S, F>(service, LogLines::Direct, run)
}

/// [`run_service`], with the log lines written as `lines` says.
pub fn run_service_with<C, S, F>(
    service: &str,
    lines: LogLines,
    run: impl FnOnce(S) -> F,
) -> std::process::ExitCode
where
    C: clap::Parser + settings::WorkerThreads,
    S: TryFrom<C, Error = settings::ConfigError>,
    F: Future<Output = anyhow::Result<()>>,
{
    let config = C::parse();
    let mut runtime = match config.worker_threads() {
        // One thread: the scheduler made for it, with no work stealing or waking of other
        // workers; its I/O and timers run on the same thread (about a seventh less CPU per
        // proxied read than one multi-thread worker in the benchmark).
        Some(threads) if threads.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.get());
            builder
        }
        None => {
            if let Some(problem) = tokio_worker_threads_problem() {
                eprintln!("invalid configuration: {problem}");
                return std::process::ExitCode::from(settings::EX_USAGE);
            }
            tokio::runtime::Builder::new_multi_thread()
        }
    };
    runtime.enable_all();
    match runtime.build() {
        Ok(runtime) => runtime.block_on(serve(service, lines, config, run)),
        Err(error) => {
            eprintln!("{service}: cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What is wrong with `TOKIO_WORKER_THREADS`, if anything: without a worker-thread setting of
/// ours the runtime takes its count from there, and panics on anything but a whole number from 1.
fn tokio_worker_threads_problem() -> Option<String> {
    let value = std::env::var_os("TOKIO_WORKER_THREADS")?;
    match value.to_str().map(str::parse::<usize>) {
        Some(Ok(threads)) if threads > 0 => None,
        _ => Some(format!(
            "TOKIO_WORKER_THREADS must be a whole number from 1, not {value:?} (or leave it unset \
             and use --worker-threads)"
        )),
    }
}

async fn serve<C, S, F>(
    service: &str,
    lines: LogLines,
    config: C,
    run: impl FnOnce(S) -> F,
) -> std::process::ExitCode
where
    S: TryFrom<C, Error = settings::ConfigError>,
    F: Future<Output = anyhow::Result<()>>,
{
    let exporter = match otlp::Exporter::from_env(service) {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return std::process::ExitCode::from(settings::EX_USAGE);
        }
    };
    let tracer = exporter.as_ref().map(otlp::Exporter::tracer);
    let _flush = match lines {
        LogLines::Direct => {
            install(tracer, std::io::stdout);
            None
        }
        LogLines::Buffered => match log_writer::BufferedStdout::new() {
            Ok(writer) => {
                install(tracer, writer);
                Some(FlushOnDrop)
            }
            Err(error) => {
                install(tracer, std::io::stdout);
                tracing::warn!(%error, "could not start the log writer's thread; writing each line at once");
                None
            }
        },
    };
    if exporter.is_some() {
        tracing::info!(
            service,
            "exporting spans to an OpenTelemetry collector over OTLP/gRPC"
        );
    }
    let settings = match settings::validate::<C, S>(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let code = match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                service,
                error = format!("{error:#}"),
                "stopped with an error"
            );
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    code
}

/// Resolves when the process is asked to stop: SIGTERM (what Kubernetes sends) or SIGINT.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// service calls it before it starts serving, so a SIGTERM that arrives right after the service
/// reported SERVING starts a drain instead of killing the process with the default action.
/// Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = interrupted => tracing::info!("received SIGINT, shutting down"),
                () = terminated => tracing::info!("received SIGTERM, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("received Ctrl-C, shutting down");
            } else {
                std::future::pending::<()>().await;
            }
        }
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

/// The longest request id kept from a caller; anything longer is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a caller's request id is kept: at most [`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._:-]`. The id is logged with every line of the request and echoed to the caller,
/// so quotes, spaces or kilobytes of it would let a caller forge log fields or bloat every line;
/// UUIDs, ULIDs and the usual trace ids all fit.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A request's id: the caller's the caller's `x-request-id` when [`is_valid_request_id`] accepts it
/// (of several, the first), else a new one; either way then the only one in `headers`, where
/// spans and backend calls read it. The gRPC call layer and the gateway's HTTP call layer use it.
pub fn request_id(headers: &mut http::HeaderMap) -> http::HeaderValue {
    let mut sent = headers.get_all(REQUEST_ID).iter();
    let first = sent
        .next()
        .filter(|id| is_valid_request_id(id.as_bytes()))
        .cloned();
    let several = sent.next().is_some();
    match first {
        Some(id) if !several => id,
        first => {
            let id = first.unwrap_or_else(new_request_id);
            headers.insert(REQUEST_ID, id.clone());
            id
        }
    }
}

/// A random UUID v4, hyphenated, as a header value. The bytes come from the thread's RNG (the one
/// trace ids use) rather than `Uuid::new_v4`'s system call per id, and the text is written once,
/// straight into the header value.
pub(crate) fn new_request_id() -> http::HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    http::HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
}

/// A rule that adjusts every request before the service behind it sees it.
pub trait RewriteRequest {
    fn rewrite<B>(&self, request: &mut Request<B>);
}

/// The service a [`RewriteRequest`] layer wraps around the next one.
#[derive(Clone, Debug)]
pub struct Rewrite<R, S> {
    rule: R,
    inner: S,
}

impl<R, S> Rewrite<R, S> {
    pub fn new(rule: R, inner: S) -> Self {
        Self { rule, inner }
    }
}

impl<R, S, B> Service<Request<B>> for Rewrite<R, S>
where
    R: RewriteRequest,
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.rule.rewrite(&mut request);
        self.inner.call(request)
    }
}

/// The span of every gRPC call: its method, its request id, its trace and span ids and, once
/// [`ClientAddressLayer`] has run, the client's address. Exported, it is named after the method
/// (`auth.v1.AuthService/SignIn`) and is a server span.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcRequestSpan;

impl MakeRequestSpan for GrpcRequestSpan {
    fn make_span<B>(&self, request: &Request<B>, trace: Option<&TraceContext>) -> tracing::Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let client = request
            .extensions()
            .get::<ClientAddress>()
            .map(|ClientAddress(client)| display(ClientIp(*client)));
        let path = request.uri().path();
        let ids = trace_context::span_fields(trace);
        let exporting = otlp::exporting();
        tracing::info_span!(
            "request",
            method = path,
            request_id,
            client,
            trace_id = ids.as_ref().map(trace_context::SpanIds::trace_id),
            span_id = ids.as_ref().map(trace_context::SpanIds::span_id),
            otel.name = exporting.then(|| path.trim_start_matches('/')),
            otel.kind = exporting.then_some("server"),
            rpc.system = exporting.then_some("grpc"),
        )
    }
}

/// An address as `IpAddr`'s `Display` writes it, with an IPv4 address (the usual client) put
/// together first and written at once: `IpAddr` writes each number and dot on its own, and the
/// JSON log escapes each of those pieces, for every call.
struct ClientIp(std::net::IpAddr);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let std::net::IpAddr::V4(address) = self.0 else {
            return self.0.fmt(f);
        };
        if f.width().is_some() || f.precision().is_some() {
            return self.0.fmt(f);
        }
        let mut text = [0u8; 15];
        let mut len = 0;
        for (n, octet) in address.octets().into_iter().enumerate() {
            if n > 0 {
                text[len] = b'.';
                len += 1;
            }
            let digits = match octet {
                0..=9 => 1,
                10..=99 => 2,
                _ => 3,
            };
            let mut rest = octet;
            for digit in text[len..len + digits].iter_mut().rev() {
                *digit = b'0' + rest % 10;
                rest /= 10;
            }
            len += digits;
        }
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id [`request_id`] returns for the `x-request-id` values `sent`, and the values it
    /// leaves in the headers.
    fn ids(sent: &[&[u8]]) -> (String, Vec<String>) {
        let mut headers = http::HeaderMap::new();
        for value in sent {
            headers.append(REQUEST_ID, http::HeaderValue::from_bytes(value).unwrap());
        }
        let id = request_id(&mut headers).to_str().unwrap().to_owned();
        let left = headers
            .get_all(REQUEST_ID)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (id, left)
    }

    #[test]
    fn a_request_id_of_allowed_characters_is_kept() {
        let id = "0190c1d2-7a3b.trace_01:span";
        assert_eq!(ids(&[id.as_bytes()]), (id.to_owned(), vec![id.to_owned()]));
    }

    #[test]
    fn an_oversized_or_odd_request_id_is_replaced_by_a_generated_one() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for sent in [long.as_bytes(), b"a b", b"x\"y", b"caf\xc3\xa9", b""] {
            let (id, left) = ids(&[sent]);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
            assert_eq!(left, [id]);
        }
    }

    #[test]
    fn a_request_without_an_id_gets_one_and_of_several_the_first_is_kept() {
        let (id, left) = ids(&[]);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(left, [id]);
        assert_eq!(
            ids(&[b"first", b"second"]),
            ("first".to_owned(), vec!["first".to_owned()])
        );
    }

    #[test]
    fn generated_request_ids_are_distinct_lowercase_uuid_v4s() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| new_request_id().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(parsed.hyphenated().to_string(), *id);
        }
    }

    #[test]
    fn the_longest_allowed_request_id_is_kept() {
        assert!(is_valid_request_id(
            "a".repeat(MAX_REQUEST_ID_LEN).as_bytes()
        ));
    }

    #[test]
    fn client_addresses_are_written_as_ip_addr_writes_them() {
        use std::net::IpAddr;
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.255",
            "255.255.255.255",
            "9.99.199.1",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(ClientIp(address).to_string(), address.to_string());
            assert_eq!(
                format!("{:>20}", ClientIp(address)),
                format!("{address:>20}")
            );
        }
    }
}
