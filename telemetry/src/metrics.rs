//! Prometheus metrics, the same way in every binary: one process-wide recorder (the `metrics`
//! facade with `metrics-exporter-prometheus`), a `/metrics` endpoint on a port of its own, and
//! gauges that are sampled when Prometheus scrapes rather than kept current on the request path.
//!
//! Libraries record through the facade (`metrics::counter!`…) without knowing the exporter; with
//! no recorder installed (a binary started without a metrics address) every record is a no-op.
//! Handles for fixed label sets are made once, after [`MetricsServer::bind`] installed the
//! recorder, and kept: a handle made before that records nowhere, ever.

mod grpc;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub(crate) use grpc::CallGuard;
pub use grpc::{GrpcMetrics, GrpcMetricsLayer, code_name};

/// Latency buckets, in seconds, for every `*_seconds` histogram: from a cached token check (well
/// under a millisecond) to a sign-in waiting behind a full hashing queue (seconds).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder for the whole process, once; later calls (tests start several
/// services in one process) return the same handle. Every `*_seconds` histogram gets
/// [`LATENCY_BUCKETS`], so it is exported as a Prometheus histogram rather than a summary and
/// can be aggregated over replicas.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                // The buckets are a non-empty constant, the one thing this checks.
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder was installed first; /metrics stays empty"
                );
            }
            // Histogram samples are kept until a render drains them; upkeep bounds that memory
            // when nothing scrapes for a while.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "failed to start metrics upkeep"))
                .ok();
            handle
        })
        .clone()
}

/// Sets gauges from the state they describe, just before each scrape is rendered.
pub type Sampler = Box<dyn Fn() + Send + Sync>;

/// A `/metrics` endpoint on its own listener, so it is never exposed where the API is.
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    handle: PrometheusHandle,
    samplers: Vec<Sampler>,
}

impl MetricsServer {
    /// Installs the recorder (see [`install`]) and binds `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let handle = install();
        let (listener, local_addr) = crate::bind(addr).await?;
        Ok(Self {
            listener,
            local_addr,
            handle,
            samplers: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `sampler` before every scrape.
    pub fn sample(&mut self, sampler: impl Fn() + Send + Sync + 'static) {
        self.samplers.push(Box::new(sampler));
    }

    /// Serves `GET /metrics` until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = Arc::new((self.handle, self.samplers));
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let state = state.clone();
                async move {
                    let (handle, samplers) = &*state;
                    samplers.iter().for_each(|sample| sample());
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                        .into_response()
                }
            }),
        );
        let addr = self.local_addr;
        tracing::info!(%addr, "metrics listening");
        if let Err(error) = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%addr, %error, "metrics server failed");
        }
    }

    /// Serves in the background until the returned guard is dropped: the service's own server
    /// decides when the process stops, and metrics stay up for as long as it drains.
    pub fn spawn(self) -> MetricsGuard {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(self.serve(async move {
            let _ = stopped.await;
        }));
        MetricsGuard { _stop: stop }
    }
}

/// Stops a spawned [`MetricsServer`] when dropped.
pub struct MetricsGuard {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The database pool gauges every service exports, sampled on scrape: connections open
/// (`state="idle"` or `"in_use"`) and the most the pool may open.
pub fn record_db_pool(size: u32, idle: usize, max: u32) {
    let idle = idle.min(size as usize);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set((size as usize - idle) as f64);
    metrics::gauge!("db_pool_max_connections").set(f64::from(max));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_endpoint_serves_recorded_series_and_samples_before_rendering() {
        let mut server = MetricsServer::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = server.local_addr();
        server.sample(|| record_db_pool(4, 1, 10));
        metrics::counter!("telemetry_test_total", "outcome" => "ok").increment(2);
        let _guard = server.spawn();

        let body = scrape(addr).await;
        assert!(
            body.contains("telemetry_test_total{outcome=\"ok\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("db_pool_connections{state=\"in_use\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("db_pool_connections{state=\"idle\"} 1"),
            "{body}"
        );
        assert!(body.contains("db_pool_max_connections 10"), "{body}");
    }

    #[tokio::test]
    async fn seconds_histograms_are_histograms_not_summaries() {
        let handle = install();
        metrics::histogram!("telemetry_test_seconds").record(0.003);
        let body = handle.render();
        assert!(
            body.contains("telemetry_test_seconds_bucket{le=\"0.005\"} 1"),
            "{body}"
        );
    }

    /// A plain HTTP/1.0 GET, so the test needs no HTTP client.
    pub(crate) async fn scrape(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        response
    }
}
