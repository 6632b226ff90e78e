//! Turning the configured URLs into replica addresses, again and again: a URL whose host is an IP
//! address is one replica; a host name is resolved and each address it yields is a replica, so a
//! Kubernetes headless Service's pods come and go without a restart.

use std::net::IpAddr;

use anyhow::{Context, bail};
use http::Uri;

/// One configured URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .trim()
            .parse()
            .with_context(|| format!("invalid backend url {url:?}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        if scheme != "http" && scheme != "https" {
            bail!("backend url {url:?} must start with http:// or https://");
        }
        let Some(host) = uri.host() else {
            bail!("backend url {url:?} has no host");
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }

    /// The host name (or address) of the URL: what a TLS replica's certificate must be for,
    /// whichever address it resolved to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the replicas are dialled over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The replica URIs this target names right now. A failed lookup is an error so the caller
    /// can keep the replicas it knew rather than forget them over a DNS hiccup.
    pub async fn resolve(&self) -> anyhow::Result<Vec<String>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![self.uri(ip)]);
        }
        let mut addrs: Vec<String> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("failed to resolve {}", self.host))?
            .map(|addr| self.uri(addr.ip()))
            .collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    fn uri(&self, ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(ip) => format!("{}://{ip}:{}", self.scheme, self.port),
            IpAddr::V6(ip) => format!("{}://[{ip}]:{}", self.scheme, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ip_address_is_one_replica() {
        let target = Target::parse("http://127.0.0.1:50052").unwrap();
        assert_eq!(target.resolve().await.unwrap(), ["http://127.0.0.1:50052"]);
        let target = Target::parse("http://[::1]:7").unwrap();
        assert_eq!(target.resolve().await.unwrap(), ["http://[::1]:7"]);
    }

    #[tokio::test]
    async fn a_host_name_is_every_address_it_resolves_to() {
        let target = Target::parse("http://localhost:50052").unwrap();
        let replicas = target.resolve().await.unwrap();
        assert!(!replicas.is_empty());
        assert!(
            replicas.iter().all(|r| r.ends_with(":50052")),
            "{replicas:?}"
        );
    }

    #[test]
    fn rejects_urls_that_name_no_server() {
        assert!(Target::parse("ftp://x:1").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
