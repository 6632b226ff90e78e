//! Building the gateway from its configuration and serving it until told to stop.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    config::Settings,
    routes::app,
    serve::{ConnectionLimits, serve},
    state::AppState,
};

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Binds the port (0 picks a free one), then prepares the backends, in the same order as
    /// the services; no request is served until
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, local_addr) = telemetry::bind(settings.http_addr).await?;
        let state = AppState::connect(settings).await?;
        Ok(Self {
            listener,
            local_addr,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
    /// for at most [`telemetry::DRAIN_GRACE`].
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = ConnectionLimits {
            header_read_timeout: self.state.settings.header_read_timeout,
            max_connections: self.state.settings.max_connections,
        };
        let server = |stop| serve(self.listener, app(self.state), limits, stop);
        telemetry::serve_with_drain(server, shutdown, std::future::ready(()))
            .await
            .context("http server failed")
    }
}
