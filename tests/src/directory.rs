//! The example internal service (`examples/directory`) as a child process, in front of the
//! stack's auth-service and resource-service replicas.

use std::net::{Ipv4Addr, SocketAddr};

use directory::pb::directory_client::DirectoryClient;
use tonic::transport::Channel;

use crate::{process::Process, services::connect};

pub struct DirectoryReplica {
    pub process: Process,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

impl DirectoryReplica {
    /// Starts the service and waits until it reports SERVING (it has auth-service's keys).
    pub async fn start(auth_urls: &[String], resource_urls: &[String], label: &str) -> Self {
        Self::start_with(auth_urls, resource_urls, label, &[]).await
    }

    /// [`DirectoryReplica::start`] with more settings, e.g. its `DIRECTORY_CLIENT_ID`.
    pub async fn start_with(
        auth_urls: &[String],
        resource_urls: &[String],
        label: &str,
        extra: &[(&'static str, String)],
    ) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let mut env = vec![
            ("DIRECTORY_GRPC_ADDR", addr.to_string()),
            ("DIRECTORY_AUTH_URL", auth_urls.join(",")),
            ("DIRECTORY_RESOURCE_URL", resource_urls.join(",")),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info,tower_http=debug".into()),
        ];
        env.extend(extra.iter().cloned());
        let mut process = Process::spawn("directory", label, &env);
        let url = format!("http://{addr}");
        crate::services::wait_until_serving(&mut process, &url).await;
        Self { process, addr, url }
    }

    pub async fn client(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(connect(&self.url).await)
    }
}
