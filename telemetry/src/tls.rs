//! TLS for our gRPC servers, and the plain-text health port that goes with it.
//!
//! A server given a certificate chain and its key serves only TLS (rustls with ring). Kubelet's
//! gRPC probes cannot speak TLS, so such a server can also answer grpc.health.v1, and nothing
//! else, in plain text on a port of its own ([`serve_health`]). The files are read once at start:
//! a renewed certificate is served after a restart.

use std::{future::Future, net::SocketAddr, path::Path};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use settings::ConfigError;
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::pb::health_server::{Health, HealthServer};

/// A server's certificate chain and key, checked to belong together.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The settings a service names its certificate and key files with, e.g. `AUTH_TLS_CERT_FILE`.
#[derive(Clone, Copy, Debug)]
pub struct ServerTlsSettings {
    pub cert_file: &'static str,
    pub key_file: &'static str,
}

impl ServerTls {
    /// Reads the PEM certificate chain (the server's first) and its PEM private key. Neither
    /// file set: no TLS. One without the other, an unreadable file, a file without a
    /// certificate or key, or a key that does not match the certificate: an error naming the
    /// setting. Never prints the key.
    pub fn load(
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        names: ServerTlsSettings,
    ) -> Result<Option<Self>, ConfigError> {
        let (cert_file, key_file) = match (cert_file, key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    names.key_file,
                    format!("{} is set, so the key file is needed too", names.cert_file),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    names.cert_file,
                    format!(
                        "{} is set, so the certificate file is needed too",
                        names.key_file
                    ),
                ));
            }
        };
        let cert = read(cert_file, names.cert_file)?;
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::new(
                    names.cert_file,
                    format!(
                        "{}: not a valid PEM certificate file ({e})",
                        cert_file.display()
                    ),
                )
            })?;
        if chain.is_empty() {
            return Err(ConfigError::new(
                names.cert_file,
                format!("{} holds no PEM certificate", cert_file.display()),
            ));
        }
        let key = read(key_file, names.key_file)?;
        // The error says what was wrong, never what the file holds.
        PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
            ConfigError::new(
                names.key_file,
                format!("{} holds no PEM private key", key_file.display()),
            )
        })?;
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        // Builds the rustls configuration as serving will, so a key that does not match the
        // certificate is refused here.
        Server::builder().tls_config(config.clone()).map_err(|e| {
            ConfigError::new(
                names.key_file,
                format!(
                    "{} and {} cannot serve TLS: {}",
                    cert_file.display(),
                    key_file.display(),
                    error_chain(&e)
                ),
            )
        })?;
        Ok(Some(Self { config }))
    }

    pub(crate) fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

/// An error and its sources on one line: tonic's own message alone is often just "transport
/// error".
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))
}

/// The plain-text grpc.health.v1 port, bound while the service is built so a taken port fails
/// the start like the main one.
pub struct HealthPort {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HealthPort {
    /// Binds `addr` when given (port 0 picks a free one).
    pub async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<Self>> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let (listener, local_addr) = crate::bind(addr).await?;
        Ok(Some(Self {
            listener,
            local_addr,
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `health` (a clone of the service's own health service, so both report the same)
    /// until the returned guard is dropped.
    pub fn spawn<S>(self, health: HealthServer<S>) -> HealthPortGuard
    where
        S: Health,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = self.local_addr;
        tracing::info!(%addr, "plain-text health port listening");
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(e) = serve_health(self.listener, health, stopped).await {
                tracing::error!(%addr, error = error_chain(&e), "the health port failed");
            }
        });
        HealthPortGuard { _stop: stop }
    }
}

/// Stops the health port when dropped.
pub struct HealthPortGuard {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves grpc.health.v1 and nothing else, in plain text, on `listener` until `stop` resolves:
/// the port kubelet's gRPC probes ask when the service port speaks only TLS. It reports what the
/// service's own health service reports (`health` is a clone of it).
pub async fn serve_health<S>(
    listener: TcpListener,
    health: HealthServer<S>,
    stop: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    S: Health,
{
    Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await
}
