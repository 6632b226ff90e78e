//! A client for one backend service that spreads calls over every replica, one pick per call.
//!
//! Why not one tonic `Channel` to a single address: HTTP/2 multiplexes every call over one
//! connection, so a connection-level balancer (a Kubernetes ClusterIP) pins all our traffic to a
//! single pod. Here each replica has its own lazily made connection ([`Conn`]), every call picks the next
//! usable replica in turn, and a background task re-resolves host names and checks each replica's
//! grpc.health.v1 status: a replica that fails is dropped from the rotation at once and taken
//! back when its health check passes again. A call that fails because its replica went away is
//! tried on another replica when that is safe ([`Safety`], [`failure::classify`]).

mod conn;
mod discovery;
mod failure;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::Status;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;

use authn::tls::{ClientTls, InvalidEndpoint};

pub use conn::Conn;
pub use discovery::Target;
pub use failure::{Failure, classify};

/// At most this many replicas are tried for one call.
const MAX_ATTEMPTS: usize = 3;

/// Whether a call may run twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safety {
    /// Reads and idempotent writes: retried on another replica after any transport failure.
    Idempotent,
    /// Other writes: retried only when the request provably never reached the replica.
    Once,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplicaState {
    /// Not checked yet: used, but does not make the backend ready.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

pub struct Replica {
    pub uri: String,
    conn: Conn,
    state: AtomicU8,
}

impl Replica {
    pub fn state(&self) -> ReplicaState {
        match self.state.load(Ordering::Relaxed) {
            1 => ReplicaState::Up,
            2 => ReplicaState::Down,
            _ => ReplicaState::Unknown,
        }
    }

    fn set_state(&self, state: ReplicaState, backend: &str) {
        let previous = self.state.swap(state as u8, Ordering::Relaxed);
        if previous != state as u8 {
            match state {
                ReplicaState::Up => tracing::info!(backend, replica = %self.uri, "replica up"),
                ReplicaState::Down => tracing::warn!(backend, replica = %self.uri, "replica down"),
                ReplicaState::Unknown => {}
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Names the backend in logs and errors, e.g. "auth-service".
    pub name: &'static str,
    /// The grpc.health.v1 service name to check, e.g. "auth.v1.AuthService".
    pub health_service: &'static str,
    /// The configured URLs; at least one.
    pub targets: Vec<Target>,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
    /// The CA `https://` replicas' certificates must come from.
    pub tls: Option<ClientTls>,
}

/// Cheap to clone; every clone shares the replicas.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    config: BackendConfig,
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    next: AtomicUsize,
}

impl Backend {
    /// Resolves the URLs once (so calls can start at once) and starts the background task that
    /// keeps the replicas and their health current for as long as the backend is in use.
    pub async fn start(config: BackendConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.targets.is_empty(),
            "no URL given for {}",
            config.name
        );
        let backend = Self {
            inner: Arc::new(Inner {
                config,
                replicas: RwLock::new(Arc::default()),
                next: AtomicUsize::new(0),
            }),
        };
        backend.inner.refresh_replicas().await;
        tokio::spawn(watch(Arc::downgrade(&backend.inner)));
        Ok(backend)
    }

    pub fn name(&self) -> &'static str {
        self.inner.config.name
    }

    pub fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.inner.snapshot()
    }

    /// Ready when at least one replica passed its last health check.
    pub fn is_ready(&self) -> bool {
        self.replicas()
            .iter()
            .any(|r| r.state() == ReplicaState::Up)
    }

    /// Runs `call` on a replica, and on another if it fails in a way [`Safety`] allows retrying.
    /// `call` builds the request afresh each time since a tonic request can be sent only once.
    pub async fn call<T, F, Fut>(&self, safety: Safety, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut tried: Vec<Arc<Replica>> = Vec::new();
        loop {
            let Some(replica) = self.inner.pick(&tried) else {
                return Err(Status::unavailable(format!(
                    "no replica of {} is reachable",
                    self.name()
                )));
            };
            let status = match attempt(self.name(), &replica, call(replica.conn.clone())).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            let failure = classify(&status);
            let retry = match failure {
                Failure::Answered => return Err(status),
                Failure::Refused => {
                    tracing::info!(backend = self.name(), replica = %replica.uri, error = %status, "replica refused the request as too large");
                    return Err(status);
                }
                Failure::NotReached => true,
                Failure::Lost => safety == Safety::Idempotent,
            };
            replica.set_state(ReplicaState::Down, self.name());
            tried.push(replica.clone());
            if !retry || tried.len() >= MAX_ATTEMPTS {
                tracing::warn!(backend = self.name(), replica = %replica.uri, ?failure, error = %status, "call failed");
                return Err(status);
            }
            tracing::info!(backend = self.name(), replica = %replica.uri, ?failure, error = %status, "retrying on another replica");
        }
    }
}

/// One attempt of a call on `replica`. When spans are exported it runs in a client span of its
/// own, a child of the request's, whose id the replica gets as its parent in `traceparent`
/// ([`crate::rpc::Outgoing`] names it after the method).
async fn attempt<T>(
    backend: &'static str,
    replica: &Replica,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<tonic::Response<T>, Status> {
    if !telemetry::otlp::exporting() {
        return call.await;
    }
    let span = tracing::info_span!(
        "backend call",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = %replica.uri,
        backend,
    );
    let result = call.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => {
            span.record("otel.status_code", "ERROR");
            status.code()
        }
    };
    span.record("rpc.grpc.status_code", code as i64);
    result
}

impl Inner {
    fn snapshot(&self) -> Arc<Vec<Arc<Replica>>> {
        // A poisoned lock only means a writer panicked after replacing the whole list.
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The next replica in turn that is not down and not tried yet; if every untried replica is
    /// down, one of those anyway (health may lag behind a recovery), so a call is never refused
    /// here while any replica might answer.
    fn pick(&self, tried: &[Arc<Replica>]) -> Option<Arc<Replica>> {
        let replicas = self.snapshot();
        let untried: Vec<&Arc<Replica>> = replicas
            .iter()
            .filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)))
            .collect();
        let usable: Vec<&Arc<Replica>> = untried
            .iter()
            .copied()
            .filter(|r| r.state() != ReplicaState::Down)
            .collect();
        let candidates = if usable.is_empty() { untried } else { usable };
        if candidates.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(candidates[turn % candidates.len()].clone())
    }

    /// Re-resolves every target, keeping the replicas (and their connections) that remain.
    async fn refresh_replicas(&self) {
        let current = self.snapshot();
        let mut uris = Vec::new();
        for target in &self.config.targets {
            match target.resolve().await {
                // Each address is checked against the name it was resolved from.
                Ok(found) => uris.extend(found.into_iter().map(|uri| (uri, target.host()))),
                Err(error) => {
                    tracing::warn!(
                        backend = self.config.name,
                        error = format!("{error:#}"),
                        "keeping the last known replicas"
                    );
                    return;
                }
            }
        }
        uris.sort();
        uris.dedup();
        let known: HashMap<&str, &Arc<Replica>> =
            current.iter().map(|r| (r.uri.as_str(), r)).collect();
        let mut next = Vec::with_capacity(uris.len());
        for (uri, host) in uris {
            if let Some(replica) = known.get(uri.as_str()) {
                next.push(Arc::clone(replica));
            } else {
                match self.connect(&uri, host) {
                    Ok(replica) => next.push(Arc::new(replica)),
                    Err(error) => {
                        tracing::warn!(backend = self.config.name, %uri, %error, "skipping replica")
                    }
                }
            }
        }
        let changed = next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            let list: Vec<&str> = next.iter().map(|r| r.uri.as_str()).collect();
            tracing::info!(backend = self.config.name, replicas = ?list, "replicas changed");
            *self.replicas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
    }

    fn connect(&self, uri: &str, host: &str) -> Result<Replica, InvalidEndpoint> {
        let conn = Conn::lazy(
            uri,
            host,
            self.config.tls.as_ref(),
            self.config.connect_timeout,
        )?;
        Ok(Replica {
            uri: uri.to_owned(),
            conn,
            state: AtomicU8::new(ReplicaState::Unknown as u8),
        })
    }

    async fn check_health(&self) {
        let replicas = self.snapshot();
        let checks = replicas.iter().map(|replica| async move {
            match self.is_serving(replica.conn.clone()).await {
                Ok(()) => replica.set_state(ReplicaState::Up, self.config.name),
                Err(reason) => {
                    if replica.state() != ReplicaState::Down {
                        // Why, once per fall: e.g. a TLS handshake the replica's certificate
                        // failed.
                        tracing::warn!(backend = self.config.name, replica = %replica.uri, %reason, "health check failed");
                    }
                    replica.set_state(ReplicaState::Down, self.config.name);
                }
            }
        });
        futures::future::join_all(checks).await;
    }

    /// `Ok` when the replica reports SERVING, else why not.
    async fn is_serving(&self, conn: Conn) -> Result<(), String> {
        let timeout = self.config.health_interval.max(Duration::from_secs(1));
        let mut client = HealthClient::new(conn);
        // The service's own name first; a server that registered only the overall status ("")
        // answers NotFound for it, so fall back to that.
        for service in [self.config.health_service, ""] {
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            match tokio::time::timeout(timeout, client.check(request)).await {
                Ok(Ok(response)) => {
                    let status = response.into_inner().status();
                    return match status {
                        ServingStatus::Serving => Ok(()),
                        other => Err(format!("reports {}", other.as_str_name())),
                    };
                }
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => continue,
                Ok(Err(status)) => return Err(telemetry::tls::error_chain(&status)),
                Err(_) => return Err(format!("no answer within {timeout:?}")),
            }
        }
        Err("no health status".into())
    }
}

/// Keeps the replica list and health current until the backend is dropped.
async fn watch(inner: Weak<Inner>) {
    loop {
        let Some(backend) = inner.upgrade() else {
            return;
        };
        backend.check_health().await;
        let interval = backend.config.health_interval;
        drop(backend);
        tokio::time::sleep(interval).await;
        let Some(backend) = inner.upgrade() else {
            return;
        };
        backend.refresh_replicas().await;
    }
}

#[cfg(test)]
mod tests;
