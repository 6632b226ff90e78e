//! Export of every request's spans to an OpenTelemetry collector over OTLP/gRPC, switched on by
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Unset,
//! nothing of it exists: no tracer, no `tracing-opentelemetry` layer, no background thread, and
//! the request path pays one relaxed atomic load ([`exporting`]).
//!
//! Spans go through the SDK's batch processor (its own thread; a full queue drops spans rather
//! than wait), and whatever is queued is sent when the service stops ([`Exporter::shutdown`]).
//! A failed export is logged, at most once a minute with how many failed since; it never
//! touches a request.

use std::{
    borrow::Cow,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter},
};
use settings::ConfigError;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Set once the exporter is installed; read on every request.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: request spans are then OpenTelemetry spans, and each backend call
/// gets a span of its own.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Names the OpenTelemetry span of the current `tracing` span, for a span whose name is known
/// only once it runs (a backend call learns its method in the interceptor). Nothing when not
/// exporting.
pub fn rename_current_span(name: impl Into<Cow<'static, str>>) {
    if exporting() {
        tracing::Span::current()
            .context()
            .span()
            .update_name(name.into());
    }
}

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// How long stopping waits for the last spans to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a failing export is logged at most.
const REPORT_EVERY: Duration = Duration::from_secs(60);

fn set(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The installed exporter; [`Exporter::shutdown`] sends what is queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter the environment asks for: `None` when no OTLP endpoint is set. Reads the
    /// standard variables (the crate reads the endpoint, `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `…_TIMEOUT` itself; no compression is built in; the SDK reads `OTEL_TRACES_SAMPLER` and
    /// `OTEL_BSP_*`); the service is named by `OTEL_SERVICE_NAME`, else `service`. Must be
    /// called inside the Tokio runtime, which carries the exporter's connection.
    pub fn from_env(service: &str) -> Result<Option<Self>, ConfigError> {
        let endpoint: &'static str = if set(TRACES_ENDPOINT).is_some() {
            TRACES_ENDPOINT
        } else if set(ENDPOINT).is_some() {
            ENDPOINT
        } else {
            return Ok(None);
        };
        for variable in [TRACES_PROTOCOL, PROTOCOL] {
            if let Some(protocol) = set(variable).filter(|p| p != "grpc") {
                return Err(ConfigError::new(
                    variable,
                    format!("only grpc is supported, not {protocol:?}"),
                ));
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|error| ConfigError::new(endpoint, error.to_string()))?;
        let service_name = set(SERVICE_NAME).unwrap_or_else(|| service.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .with_batch_exporter(Reported::new(exporter))
            .build();
        Ok(Some(Self { provider }))
    }

    /// The tracer `tracing-opentelemetry` makes its spans with; marks export as on.
    pub(crate) fn tracer(&self) -> SdkTracer {
        EXPORTING.store(true, Ordering::Relaxed);
        self.provider.tracer("telemetry")
    }

    /// Sends the spans still queued (waiting at most a few seconds) and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // Blocks until the batch thread has sent; the runtime keeps carrying the connection.
        let result =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "failed to send the last spans"),
            Err(error) => tracing::warn!(%error, "failed to send the last spans"),
        }
    }
}

/// Logs failed exports, at most once per [`REPORT_EVERY`], with how many batches and spans were
/// lost since the last report.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    failed_batches: AtomicU64,
    lost_spans: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl<E> Reported<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failed_batches: AtomicU64::new(0),
            lost_spans: AtomicU64::new(0),
            last_report: Mutex::new(None),
        }
    }

    fn failed(&self, spans: usize, error: &dyn std::fmt::Display) {
        self.failed_batches.fetch_add(1, Ordering::Relaxed);
        self.lost_spans.fetch_add(spans as u64, Ordering::Relaxed);
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let batches = self.failed_batches.swap(0, Ordering::Relaxed);
        let spans = self.lost_spans.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %error,
            failed_batches = batches,
            lost_spans = spans,
            "failed to export spans to the OpenTelemetry collector (logged at most once a minute)"
        );
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.failed(spans, error);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
