//! Building the server from its [`Settings`] and running it until asked to stop.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use authn::{
    AuthnLayer, JwksSource, JwksSourceConfig, Keys, REVOCATION_HEALTH_SERVICE, RevocationConfig,
    RevocationFollower, Revocations, TokenCache,
};
use ipnet::IpNet;
use proto::person::v1::person_service_server::SERVICE_NAME;
use secrecy::{ExposeSecret, SecretString};
use telemetry::{
    metrics::MetricsServer,
    tls::{HealthPort, ServerTls},
};
use token::Verifier;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{Settings, TokenKeys},
    domain::sample_persons,
    grpc::{self, Persons, Services},
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
    revocations: Revocations,
    trusted_peers: Vec<IpNet>,
    forwarding_secret: Option<SecretString>,
    metrics: Option<MetricsServer>,
    tls: Option<ServerTls>,
    health_port: Option<HealthPort>,
}

impl Application {
    /// Binds the listener, opens and migrates the database (loading the sample persons if
    /// asked), and starts following the token keys.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, local_addr) = telemetry::bind(settings.grpc_addr).await?;
        let health_port = HealthPort::bind(settings.health_addr).await?;
        // First, so the recorder is installed before anything makes its metric handles.
        let mut metrics = match settings.metrics_addr {
            Some(addr) => Some(MetricsServer::bind(addr).await?),
            None => None,
        };
        let url = settings.database.prepare()?;
        let store = Store::connect_with(url.expose_secret(), settings.db_max_connections).await?;
        if settings.sample_data {
            let loaded = store.load_if_empty(&sample_persons()).await?;
            tracing::info!(loaded, "sample persons requested");
        }

        let keys = match settings.token_keys {
            TokenKeys::Hs256(secret) => Keys::fixed(Verifier::hs256(&secret, &settings.audience)),
            TokenKeys::Jwks(urls) => {
                let mut jwks = JwksSourceConfig::new(urls, settings.audience);
                jwks.refresh_interval = settings.jwks_refresh;
                jwks.tls = settings.auth_tls.clone();
                JwksSource::start(jwks).await?
            }
        };
        let revocations = match settings.revocation {
            Some(feed) => {
                let mut config = RevocationConfig::new(feed.auth_urls);
                config.max_staleness = feed.max_staleness;
                config.fail_closed = feed.fail_closed;
                config.tls = settings.auth_tls.clone();
                RevocationFollower::start(config)?
            }
            None => {
                tracing::warn!(
                    "no auth-service URL: revocations are not followed, and a revoked token \
                     stays valid until it expires"
                );
                Revocations::none()
            }
        };
        if let Some(metrics) = &mut metrics {
            let (store, keys, followed) = (store.clone(), keys.clone(), revocations.clone());
            metrics.sample(move || {
                store.record_pool_metrics();
                authn::metrics::record_jwks_age(&keys);
                authn::metrics::record_revocation_staleness(&followed);
            });
        }
        tracing::info!(%local_addr, tls = settings.tls.is_some(), "resource-service built");
        Ok(Self {
            listener,
            local_addr,
            store,
            keys,
            cache: TokenCache::new(settings.token_cache_capacity),
            revocations,
            trusted_peers: settings.trusted_peers,
            forwarding_secret: settings.forwarding_secret,
            metrics,
            tls: settings.tls,
            health_port,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when `RESOURCE_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Where grpc.health.v1 is served in plain text, when `RESOURCE_HEALTH_ADDR` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_port.as_ref().map(HealthPort::local_addr)
    }

    /// What the service knows of revoked tokens: its staleness is the
    /// `authn_revocation_staleness_seconds` figure.
    pub fn revocations(&self) -> Revocations {
        self.revocations.clone()
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
        // Up until the gRPC server has drained, so the last calls are still scraped.
        let _metrics = self.metrics.map(MetricsServer::spawn);
        let (reporter, health) = tonic_health::server::health_reporter();
        // Up until the gRPC server has drained, so probes see NOT_SERVING while it drains.
        let _health_port = self.health_port.map(|port| port.spawn(health.clone()));
        telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
        let (reflection_v1, reflection_v1alpha) =
            telemetry::reflection(proto::FILE_DESCRIPTOR_SET, &[SERVICE_NAME])
                .context("failed to build reflection service")?;
        let layers = telemetry::grpc_layers(self.trusted_peers, self.forwarding_secret).layer(
            AuthnLayer::new(grpc::policy(), self.keys.clone(), self.cache)
                .with_revocations(self.revocations.clone()),
        );
        // The revocation view has a health entry of its own and never touches the service's:
        // an auth-service outage must not take every resource replica out of rotation.
        let freshness = self
            .revocations
            .freshness()
            .map(|fresh| tokio::spawn(report_revocations(reporter.clone(), fresh)));
        let others = Routes::new(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes = Services::new(Persons::new(self.store.clone()), others);

        let ready = tokio::spawn(report_ready(
            reporter.clone(),
            self.store.clone(),
            self.keys,
        ));
        let draining = async move {
            // Stopped before the last word, so a late check cannot report SERVING again.
            ready.abort();
            let _ = ready.await;
            if let Some(freshness) = freshness {
                freshness.abort();
            }
            telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
        };
        let result = telemetry::serve_grpc_service(
            telemetry::GrpcLimits::default(),
            self.tls.as_ref(),
            self.listener,
            layers,
            routes,
            shutdown,
            draining,
        )
        .await
        .context("the gRPC server failed");
        self.store.close().await;
        tracing::info!("resource-service stopped");
        result
    }
}

/// `authn.revocation`: SERVING while the revocation view is current.
async fn report_revocations(
    reporter: HealthReporter,
    mut fresh: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let status = if *fresh.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter
            .set_service_status(REVOCATION_HEALTH_SERVICE, status)
            .await;
        if fresh.changed().await.is_err() {
            return;
        }
    }
}

/// SERVING once the database answers and at least one token key is known: before that every
/// call would fail, so a load balancer should not send any. From then on, NOT_SERVING while the
/// database does not answer and SERVING again when it does (the keys, once known, stay).
async fn report_ready(reporter: HealthReporter, store: Store, keys: Keys) {
    let mut waiting_logged = false;
    loop {
        let db = store.ping().await;
        let has_keys = keys.verifier().key_count() > 0;
        if db.is_ok() && has_keys {
            telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::Serving).await;
            tracing::info!("serving");
            break;
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
    database::follow_reachability(
        database::Checks::default(),
        || {
            let store = store.clone();
            async move { store.ping().await }
        },
        |reachable| telemetry::report_serving(reporter.clone(), SERVICE_NAME, reachable),
    )
    .await;
}
