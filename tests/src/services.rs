//! auth-service and resource-service replicas, configured as in production: PostgreSQL, Ed25519
//! keys sealed in the database, JSON logs.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::person::v1::person_service_client::PersonServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};

use crate::process::Process;

/// A username and its password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn random(prefix: &str) -> Self {
        Self {
            username: crate::unique(prefix),
            password: format!("pw-{}", uuid::Uuid::new_v4()),
        }
    }
}

/// What every auth-service replica of one deployment shares: the database, the key that seals
/// the signing key stored in it, and the first admin.
#[derive(Clone, Debug)]
pub struct AuthDeployment {
    pub database_url: String,
    pub key_encryption_key: String,
    pub admin: Credentials,
    /// More settings for every replica, e.g. a short `AUTH_KEY_PUBLISH_AHEAD`.
    pub env: Vec<(&'static str, String)>,
}

impl AuthDeployment {
    /// A fresh database, a random key encryption key and a random admin.
    pub async fn create() -> Self {
        Self::on_database(crate::create_database("auth").await)
    }

    /// The same with the database at `database_url`.
    pub fn on_database(database_url: String) -> Self {
        Self {
            database_url,
            key_encryption_key: STANDARD.encode(rand::random::<[u8; 32]>()),
            admin: Credentials::random("admin"),
            env: Vec::new(),
        }
    }
}

pub struct AuthReplica {
    pub process: Process,
    pub addr: SocketAddr,
    /// Where it serves `/metrics` (`AUTH_METRICS_ADDR`).
    pub metrics: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl AuthReplica {
    /// Starts a replica without waiting for it: start several, then wait for each, so their
    /// start-ups (key creation, the first admin) really overlap.
    pub fn spawn(deployment: &AuthDeployment, label: &str) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        Self::spawn_at(addr, deployment, label)
    }

    /// Starts a replica on a given address, e.g. where a stopped one was.
    pub fn spawn_at(addr: SocketAddr, deployment: &AuthDeployment, label: &str) -> Self {
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let mut env = vec![
            ("AUTH_GRPC_ADDR", addr.to_string()),
            ("AUTH_METRICS_ADDR", metrics.to_string()),
            ("AUTH_DATABASE_URL", deployment.database_url.clone()),
            (
                "AUTH_KEY_ENCRYPTION_KEY",
                deployment.key_encryption_key.clone(),
            ),
            (
                "AUTH_BOOTSTRAP_ADMIN_USERNAME",
                deployment.admin.username.clone(),
            ),
            (
                "AUTH_BOOTSTRAP_ADMIN_PASSWORD",
                deployment.admin.password.clone(),
            ),
            ("AUTH_DB_MAX_CONNECTIONS", "4".into()),
            ("AUTH_HASH_WORKERS", "1".into()),
            ("AUTH_FORWARDING_SECRET", crate::FORWARDING_SECRET.into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info,tower_http=debug".into()),
        ];
        env.extend(deployment.env.iter().cloned());
        let process = Process::spawn("auth-service", label, &env);
        Self {
            process,
            addr,
            metrics,
            url: format!("http://{addr}"),
        }
    }

    pub async fn start(deployment: &AuthDeployment, label: &str) -> Self {
        let mut replica = Self::spawn(deployment, label);
        replica.wait_until_serving().await;
        replica
    }

    pub async fn wait_until_serving(&mut self) {
        wait_until_serving(&mut self.process, &self.url).await;
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(connect(&self.url).await)
    }
}

pub struct ResourceReplica {
    pub process: Process,
    pub addr: SocketAddr,
    /// Where it serves `/metrics` (`RESOURCE_METRICS_ADDR`).
    pub metrics: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl ResourceReplica {
    /// Starts a replica without waiting for it. Every call's log lines carry its request id
    /// (`tower_http=debug` logs one line as each call starts), which is how the scenarios see
    /// which replica served a request.
    pub fn spawn(database_url: &str, auth_urls: &[String], label: &str) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        Self::spawn_at(addr, database_url, auth_urls, label)
    }

    /// Starts a replica on a given address, e.g. where a stopped one was.
    pub fn spawn_at(
        addr: SocketAddr,
        database_url: &str,
        auth_urls: &[String],
        label: &str,
    ) -> Self {
        Self::spawn_with(addr, database_url, auth_urls, label, &[])
    }

    /// [`ResourceReplica::spawn_at`] with more settings, e.g. a short `RESOURCE_JWKS_REFRESH`.
    pub fn spawn_with(
        addr: SocketAddr,
        database_url: &str,
        auth_urls: &[String],
        label: &str,
        extra: &[(&'static str, String)],
    ) -> Self {
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let mut env = vec![
            ("RESOURCE_GRPC_ADDR", addr.to_string()),
            ("RESOURCE_METRICS_ADDR", metrics.to_string()),
            ("RESOURCE_DATABASE_URL", database_url.to_owned()),
            ("RESOURCE_AUTH_URL", auth_urls.join(",")),
            ("RESOURCE_SAMPLE_DATA", "false".into()),
            (
                "RESOURCE_FORWARDING_SECRET",
                crate::FORWARDING_SECRET.into(),
            ),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info,tower_http=debug".into()),
        ];
        env.extend(extra.iter().cloned());
        let process = Process::spawn("resource-service", label, &env);
        Self {
            process,
            addr,
            metrics,
            url: format!("http://{addr}"),
        }
    }

    pub async fn start(database_url: &str, auth_urls: &[String], label: &str) -> Self {
        let mut replica = Self::spawn(database_url, auth_urls, label);
        replica.wait_until_serving().await;
        replica
    }

    pub async fn wait_until_serving(&mut self) {
        wait_until_serving(&mut self.process, &self.url).await;
    }

    pub async fn client(&self) -> PersonServiceClient<Channel> {
        PersonServiceClient::new(connect(&self.url).await)
    }
}

/// A connected channel to a service that is up; fails the test otherwise.
pub async fn connect(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .unwrap_or_else(|e| panic!("bad URL {url}: {e}"))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("failed to connect to {url}: {e}"))
}

/// The overall grpc.health.v1 status (service "") of the server at `url`, or why it could not
/// be read.
pub async fn health_status(url: &str) -> Result<ServingStatus, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut client = HealthClient::new(channel);
    match tokio::time::timeout(Duration::from_secs(5), client.check(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner().status()),
        Ok(Err(status)) => Err(format!("check: {status}")),
        Err(_) => Err("check: no answer within 5s".into()),
    }
}

/// Polls grpc.health.v1 until the server reports SERVING, failing the test if the process exits
/// or [`crate::READY_TIMEOUT`] passes first.
pub async fn wait_until_serving(process: &mut Process, url: &str) {
    let deadline = Instant::now() + crate::READY_TIMEOUT;
    loop {
        process.assert_running();
        let last = match health_status(url).await {
            Ok(ServingStatus::Serving) => return,
            other => other,
        };
        assert!(
            Instant::now() < deadline,
            "{} at {url} is not SERVING after {:?} (last: {last:?}): {}",
            process.label(),
            crate::READY_TIMEOUT,
            process.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gRPC request carrying `token` as `authorization: Bearer …`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .expect("a JWT is valid ASCII metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The grpc.health.v1 Watch stream of the overall status (service "") of the server at `url`.
/// While it is open the server has a call in flight, which a draining server must let finish.
pub async fn watch_health(url: &str) -> tonic::Streaming<HealthCheckResponse> {
    HealthClient::new(connect(url).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("failed to watch the health of {url}: {s}"))
        .into_inner()
}

/// The next status on a Watch stream, failing the test if none comes within `within`.
pub async fn next_health(
    stream: &mut tonic::Streaming<HealthCheckResponse>,
    within: Duration,
) -> ServingStatus {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(response))) => response.status(),
        Ok(Ok(None)) => panic!("the health stream ended without a new status"),
        Ok(Err(status)) => panic!("the health stream failed: {status}"),
        Err(_) => panic!("no new health status within {within:?}"),
    }
}
