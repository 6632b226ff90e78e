//! Building the gateway from its configuration and serving it until told to stop.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use telemetry::metrics::MetricsServer;
use tokio::net::TcpListener;

use crate::{
    config::Settings,
    metrics::record_replicas,
    routes::app,
    serve::{ConnectionLimits, serve},
    state::AppState,
};

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    metrics: Option<MetricsServer>,
}

impl Application {
    /// Binds the port (0 picks a free one), then prepares the backends, in the same order as
    /// the services; no request is served until
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, local_addr) = telemetry::bind(settings.http_addr).await?;
        // Before the routes exist, so the recorder is installed when they make their handles.
        let mut metrics = match settings.metrics_addr {
            Some(addr) => Some(MetricsServer::bind(addr).await?),
            None => None,
        };
        let state = AppState::connect(settings).await?;
        if let Some(metrics) = &mut metrics {
            let (auth, resource) = (state.auth.clone(), state.resource.clone());
            metrics.sample(move || record_replicas(&[&auth, &resource]));
        }
        Ok(Self {
            listener,
            local_addr,
            state,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when `GATEWAY_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
    /// for at most [`telemetry::DRAIN_GRACE`].
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Up until the HTTP server has drained, so the last requests are still scraped.
        let _metrics = self.metrics.map(MetricsServer::spawn);
        let limits = ConnectionLimits {
            header_read_timeout: self.state.settings.header_read_timeout,
            max_connections: self.state.settings.max_connections,
            max_header_bytes: self.state.settings.max_header_bytes,
        };
        let server = |stop| serve(self.listener, app(self.state), limits, stop);
        telemetry::serve_with_drain(server, shutdown, std::future::ready(()))
            .await
            .context("http server failed")
    }
}
