//! Building the server from configuration and running it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use authn::{AuthnLayer, Keys, TokenCache};
use proto::auth::v1::auth_service_server::AuthServiceServer;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

use crate::{
    Config,
    accounts::Accounts,
    grpc::{self, AuthGrpc},
    password::PasswordHasher,
    signing::SigningKeys,
    store,
};

pub struct Application {
    listener: TcpListener,
    accounts: Arc<Accounts>,
}

impl Application {
    /// Validates the configuration, opens and migrates the database, loads (or creates) the
    /// signing key and the first admin, and binds the listener. Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let key_config = config.key_config()?;
        let admin = config.bootstrap_admin()?;

        let url = config
            .database_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned());
        let store =
            store::connect(url.as_deref(), &config.data_dir, config.db_max_connections).await?;
        let keys = SigningKeys::load_or_create(
            store.as_ref(),
            &key_config,
            &config.audience(),
            config.access_token_ttl,
        )
        .await?;
        let hasher = PasswordHasher::new(config.hash_workers(), config.hash_queue)?;
        let accounts = Arc::new(Accounts::new(store, hasher, Arc::new(keys)));
        if let Some(admin) = admin {
            accounts
                .ensure_admin(admin)
                .await
                .map_err(|e| anyhow::anyhow!("failed to create the bootstrap admin: {e}"))?;
        }

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("failed to bind {}", config.grpc_addr))?;
        Ok(Self { listener, accounts })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops accepting, and gives
    /// in-flight calls up to `telemetry::DRAIN_GRACE` to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build reflection service")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("failed to build reflection service")?;

        // The service verifies its own tokens (GetMe, admin calls) with the same layer every
        // other service uses, fed with its own keys instead of a JWKS fetch.
        let keys = Keys::fixed(self.accounts.keys().verifier.clone());
        // Outermost first: give the call a request id, open its span (so everything below,
        // including refusals, logs with that id), echo the id back, then authenticate.
        let (set_request_id, propagate_request_id) = telemetry::request_id_layers();
        let layers = ServiceBuilder::new()
            .layer(set_request_id)
            .layer(telemetry::grpc_trace_layer())
            .layer(propagate_request_id)
            .layer(AuthnLayer::new(grpc::policy(), keys, TokenCache::default()));

        let auth = AuthServiceServer::new(AuthGrpc::new(self.accounts.clone()));
        set_serving(&health, true).await;
        tracing::info!(%addr, "auth-service listening");

        let server = |stop| {
            Server::builder()
                .layer(layers)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(auth)
                .serve_with_incoming_shutdown(TcpIncoming::from(self.listener), stop)
        };
        telemetry::serve_with_drain(server, shutdown, set_serving(&health, false))
            .await
            .context("gRPC server failed")?;
        tracing::info!("auth-service stopped");
        Ok(())
    }
}

async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health
        .set_service_status("auth.v1.AuthService", status)
        .await;
    health.set_service_status("", status).await;
}
