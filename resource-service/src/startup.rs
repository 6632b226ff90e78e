//! Building the server from a [`Config`] and running it until asked to stop.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use authn::{AuthnLayer, JwksSource, JwksSourceConfig, Keys, TokenCache};
use proto::person::v1::person_service_server::PersonServiceServer;
use secrecy::ExposeSecret;
use token::Verifier;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{Config, TokenKeys},
    domain::sample_persons,
    grpc::{self, Persons},
    store::Store,
};

/// A built service: port bound, database migrated, token keys loading. Nothing is served until
/// [`Application::run_until_stopped`].
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    keys: Keys,
    cache: TokenCache,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().context("invalid configuration")?;
        let token_keys = config.token_keys()?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("failed to bind {}", config.grpc_addr))?;
        let local_addr = listener
            .local_addr()
            .context("failed to read the bound address")?;

        let store = Store::connect(config.database_url()?.expose_secret()).await?;
        if config.sample_data {
            let loaded = store.load_if_empty(&sample_persons()).await?;
            tracing::info!(loaded, "sample persons requested");
        }

        let audience = config.audience();
        let keys = match token_keys {
            TokenKeys::Hs256(secret) => Keys::fixed(Verifier::hs256(&secret, &audience)),
            TokenKeys::Jwks(urls) => {
                let mut jwks = JwksSourceConfig::new(urls, audience);
                jwks.refresh_interval = config.jwks_refresh_interval();
                JwksSource::start(jwks).await?
            }
        };
        tracing::info!(%local_addr, alg = %config.token_alg, "resource-service built");
        Ok(Self {
            listener,
            local_addr,
            store,
            keys,
            cache: TokenCache::new(config.token_cache_capacity),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The store the service uses; tests seed and inspect data through it.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops accepting calls and
    /// lets in-flight ones finish for at most [`telemetry::DRAIN_GRACE`].
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // Outermost first. The request id comes first so every later log line carries it; the
        // trace span wraps authentication so refused calls are logged too; authentication runs
        // before any service, so no handler ever sees an unverified or unauthorised call.
        let layers = tower::ServiceBuilder::new()
            .layer(telemetry::request_id_layers())
            .layer(telemetry::grpc_trace_layer::<tonic::body::Body>())
            .layer(AuthnLayer::new(
                grpc::policy(),
                self.keys.clone(),
                self.cache,
            ))
            .into_inner();

        let ready = tokio::spawn(report_ready(
            reporter.clone(),
            self.store.clone(),
            self.keys,
        ));
        let draining = async move {
            ready.abort();
            set_health(&reporter, ServingStatus::NotServing).await;
        };
        let server = |stop| {
            Server::builder()
                .layer(layers)
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(PersonServiceServer::new(Persons::new(self.store.clone())))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                    stop,
                )
        };
        let result = telemetry::serve_with_drain(server, shutdown, draining)
            .await
            .context("the gRPC server failed");
        self.store.close().await;
        tracing::info!("resource-service stopped");
        result
    }
}

/// SERVING once the database answers and at least one token key is known: before that every
/// call would fail, so a load balancer should not send any.
async fn report_ready(reporter: HealthReporter, store: Store, keys: Keys) {
    let mut waiting_logged = false;
    loop {
        let db = store.ping().await;
        let has_keys = keys.verifier().key_count() > 0;
        if db.is_ok() && has_keys {
            set_health(&reporter, ServingStatus::Serving).await;
            tracing::info!("serving");
            return;
        }
        if !waiting_logged {
            tracing::warn!(
                database_ok = db.is_ok(),
                has_keys,
                "not ready yet: waiting for the database and token keys"
            );
            waiting_logged = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reflection for grpcurl and friends, advertising only what this server serves.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(grpc::SERVICE)
        .with_service_name("grpc.health.v1.Health")
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(grpc::SERVICE, status).await;
}
