//! Building the server from its settings and running it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use authn::{AuthnLayer, TokenCache};
use ipnet::IpNet;
use proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME};
use secrecy::{ExposeSecret, SecretString};
use telemetry::{
    metrics::MetricsServer,
    tls::{HealthPort, ServerTls},
};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    Settings,
    accounts::Accounts,
    feed::Feed,
    grpc::{self, AuthGrpc},
    keyring::KeyRing,
    password::{self, PasswordHasher},
    store::{self, Store},
    throttle::Throttle,
};

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    accounts: Arc<Accounts>,
    feed: Feed,
    store: Arc<Store>,
    throttle: Arc<Throttle>,
    trusted_peers: Vec<IpNet>,
    forwarding_secret: Option<SecretString>,
    prune_interval: Duration,
    metrics: Option<MetricsServer>,
    tls: Option<ServerTls>,
    health_port: Option<HealthPort>,
}

impl Application {
    /// Binds the listener, opens and migrates the database, loads (or creates) the signing key
    /// and the first admin. Nothing is served yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, local_addr) = telemetry::bind(settings.grpc_addr).await?;
        let health_port = HealthPort::bind(settings.health_addr).await?;
        // First, so the recorder is installed before anything makes its metric handles.
        let mut metrics = match settings.metrics_addr {
            Some(addr) => Some(MetricsServer::bind(addr).await?),
            None => None,
        };
        let url = settings.database.prepare()?;
        let store = store::connect(url.expose_secret(), settings.db_max_connections).await?;
        let keys = KeyRing::load(
            store.clone(),
            &settings.keys,
            &settings.audience,
            (settings.access_token_ttl, settings.service_token_ttl),
            settings.rotation,
        )
        .await?;
        let hasher = PasswordHasher::with_scheduling(
            settings.hash_workers,
            settings.hash_queue,
            settings.hash_per_client,
            settings.hash_priority,
            settings.hash_max_wait,
        )?;
        tracing::info!(
            workers = settings.hash_workers,
            priority = ?settings.hash_priority,
            max_wait_ms = settings.hash_max_wait.as_millis() as u64,
            memory_limit_mib = settings.memory_limit.map(|bytes| bytes >> 20),
            needed_mib = password::budget::needed(settings.hash_workers) >> 20,
            "password hashing workers"
        );
        let throttle = Arc::new(Throttle::new(store.clone(), settings.throttle));
        let feed = Feed::start(store.clone(), settings.feed)
            .await
            .context("failed to start the revocation feed")?;
        let accounts = Arc::new(Accounts::new(
            store.clone(),
            hasher,
            Arc::new(keys),
            settings.sessions,
            throttle.clone(),
            feed.clone(),
            settings.service_token_ttl,
        ));
        if let Some(admin) = settings.bootstrap_admin {
            accounts
                .ensure_admin(admin)
                .await
                .context("failed to create the bootstrap admin")?;
        }
        if let Some(metrics) = &mut metrics {
            let store = store.clone();
            metrics.sample(move || store.record_pool_metrics());
        }
        Ok(Self {
            listener,
            local_addr,
            accounts,
            feed,
            store,
            throttle,
            trusted_peers: settings.trusted_peers,
            forwarding_secret: settings.forwarding_secret,
            prune_interval: settings.prune_interval,
            metrics,
            tls: settings.tls,
            health_port,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when `AUTH_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Where grpc.health.v1 is served in plain text, when `AUTH_HEALTH_ADDR` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_port.as_ref().map(HealthPort::local_addr)
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops accepting, and gives
    /// in-flight calls up to `telemetry::DRAIN_GRACE` to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr;
        // Up until the gRPC server has drained, so the last calls are still scraped.
        let _metrics = self.metrics.map(MetricsServer::spawn);
        let (reporter, health) = tonic_health::server::health_reporter();
        // Up until the gRPC server has drained, so probes see NOT_SERVING while it drains.
        let _health_port = self.health_port.map(|port| port.spawn(health.clone()));
        let (reflection_v1, reflection_v1alpha) =
            telemetry::reflection(proto::FILE_DESCRIPTOR_SET, &[SERVICE_NAME])
                .context("failed to build reflection service")?;
        // The service verifies its own tokens (GetMe, admin calls) with the same layer every
        // other service uses, fed with its own keys instead of a JWKS fetch.
        let keys = self.accounts.keys().verifiers();
        // Follows the key table (activations, rotations, other replicas' keys) while serving.
        let ring = tokio::spawn(self.accounts.keys().clone().run());
        // Revoked tokens are refused here too, from the same feed verifiers follow.
        let layers = telemetry::grpc_layers(self.trusted_peers, self.forwarding_secret).layer(
            AuthnLayer::new(grpc::policy(), keys, TokenCache::default())
                .with_revocations(self.feed.local_view()),
        );
        let routes = Routes::new(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AuthServiceServer::new(AuthGrpc::new(
                self.accounts.clone(),
                self.feed.clone(),
            )));

        let sessions_pruning = tokio::spawn(prune_periodically(
            self.accounts.clone(),
            self.prune_interval,
        ));
        // Everything was loaded in `build`, so the service is ready as soon as it listens, and
        // for as long as its database answers: every call needs it.
        telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::Serving).await;
        tracing::info!(%addr, tls = self.tls.is_some(), "auth-service listening");
        let database = tokio::spawn(follow_database(reporter.clone(), self.store.clone()));
        let feed = self.feed;
        let draining = async move {
            // Stopped before the last word, so a late check cannot report SERVING again.
            database.abort();
            let _ = database.await;
            telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
            // Revocation streams never end on their own; followers resume on another replica.
            feed.stop();
        };
        // Every replica prunes old throttle events; only the serving ones need to.
        let pruning = tokio::spawn(self.throttle.prune_periodically());
        let result = telemetry::serve_grpc(
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
        ring.abort();
        sessions_pruning.abort();
        pruning.abort();
        self.store.close().await;
        tracing::info!("auth-service stopped");
        result
    }
}

/// Reports NOT_SERVING while the database does not answer, and SERVING again when it does, so
/// load balancers (the gateway, Kubernetes) send calls to replicas that can serve them.
async fn follow_database(reporter: HealthReporter, store: Arc<Store>) {
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

/// Deletes expired sessions now and then (the feed's watcher prunes revocations). Every replica does it; the deletes
/// are idempotent, so replicas doing it at once only repeat each other.
async fn prune_periodically(accounts: Arc<Accounts>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match accounts.prune().await {
            Ok(0) => {}
            Ok(sessions) => tracing::debug!(sessions, "pruned expired sessions"),
            Err(e) => tracing::warn!(error.cause_chain = ?e, "failed to prune expired sessions"),
        }
    }
}
