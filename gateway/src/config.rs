//! The gateway's configuration: flags for local runs, `GATEWAY_*` environment variables in the
//! cluster, every default visible here.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "gateway",
    about = "HTTP/JSON gateway in front of auth-service and resource-service"
)]
pub struct Config {
    /// Where the HTTP server listens.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// auth-service replicas: comma-separated URLs; a host name is re-resolved periodically and
    /// each address it yields is one replica (a Kubernetes headless Service).
    #[arg(
        long,
        env = "GATEWAY_AUTH_URL",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub auth_urls: Vec<String>,

    /// resource-service replicas, in the same form as the auth-service URLs.
    #[arg(
        long,
        env = "GATEWAY_RESOURCE_URL",
        default_value = "http://127.0.0.1:50052",
        value_delimiter = ','
    )]
    pub resource_urls: Vec<String>,

    /// Origins allowed to call the API from a browser (comma-separated; `*` for any). Empty means
    /// same-origin only, which is all the bundled page needs.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Longest time a request may take end to end, backend retries included.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "GATEWAY_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// How often each replica's grpc.health.v1 status is checked and host names re-resolved.
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// How long to wait for a connection to a replica before trying another.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl Config {
    /// A gateway on a random local port in front of the given replicas, checking health often so
    /// tests see a stopped replica dropped quickly.
    pub fn for_tests(auth_urls: Vec<String>, resource_urls: Vec<String>) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_urls,
            resource_urls,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            health_interval: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ports() {
        let config = Config::try_parse_from(["gateway"]).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.auth_urls, ["http://127.0.0.1:50051"]);
        assert_eq!(config.resource_urls, ["http://127.0.0.1:50052"]);
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn url_lists_split_on_commas() {
        let config = Config::try_parse_from([
            "gateway",
            "--resource-urls",
            "http://127.0.0.1:50052,http://127.0.0.1:50062",
            "--request-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(config.resource_urls.len(), 2);
        assert_eq!(config.request_timeout, Duration::from_secs(3));
    }
}
