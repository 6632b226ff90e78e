//! How our gRPC clients dial a service: an `http://` URL in plain text, an `https://` URL over
//! TLS (rustls with ring), trusting only the CA certificates of one PEM file and checking the
//! name the server's certificate is for. Every client of the product (JWKS, the revocation feed,
//! the example service) builds its endpoints here; the gateway's backend connections take the
//! CA certificates from [`ClientTls`] and set up the same check themselves.

use std::{fmt, path::Path};

use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

/// The CA certificates an `https://` service must present a certificate from.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the PEM file of CA certificates (a mounted Secret or ConfigMap). The message of an
    /// error names the file and what is wrong with it, for the caller to put after its setting.
    pub fn from_ca_file(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(pem).map_err(|problem| format!("{}: {problem}", path.display()))
    }

    /// The CA certificates in PEM form: at least one, every one well-formed.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, String> {
        let pem = pem.as_ref();
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a valid PEM certificate file ({e})"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Ok(Self {
            ca: Certificate::from_pem(pem),
        })
    }

    /// The CA certificates, for a client that sets up rustls itself.
    pub fn ca_certificates(&self) -> Vec<CertificateDer<'static>> {
        // `from_pem` checked that every one parses.
        CertificateDer::pem_slice_iter(self.ca.get_ref())
            .filter_map(Result::ok)
            .collect()
    }

    fn config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .domain_name(server_name)
    }
}

/// Why a URL cannot be dialled.
#[derive(Debug)]
pub struct InvalidEndpoint {
    pub url: String,
    pub problem: EndpointProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointProblem {
    /// Not an `http://` or `https://` URL with a host.
    NotAUrl,
    /// An `https://` URL, and no CA to check the server's certificate against.
    NoCa,
    /// The TLS settings were refused (e.g. a server name rustls cannot check).
    Tls,
}

impl fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        match self.problem {
            EndpointProblem::NotAUrl => write!(f, "{url:?} is not an http:// or https:// URL"),
            EndpointProblem::NoCa => write!(
                f,
                "{url:?} is an https:// URL, and no CA file is set to check its certificate"
            ),
            EndpointProblem::Tls => write!(f, "{url:?}: TLS cannot be set up for this host"),
        }
    }
}

impl std::error::Error for InvalidEndpoint {}

/// The endpoint for `url`: TLS when it is `https://`, checking that the server's certificate is
/// for the URL's host and signed by `tls`' CA.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, InvalidEndpoint> {
    endpoint_for(url, None, tls)
}

/// [`endpoint`], checking the certificate against `server_name` instead of the URL's host: the
/// gateway dials each address a host name resolves to and checks the name it resolved.
pub fn endpoint_for(
    url: &str,
    server_name: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<Endpoint, InvalidEndpoint> {
    let invalid = |problem| InvalidEndpoint {
        url: url.to_owned(),
        problem,
    };
    let uri: Uri = url.parse().map_err(|_| invalid(EndpointProblem::NotAUrl))?;
    let Some(host) = uri.host() else {
        return Err(invalid(EndpointProblem::NotAUrl));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid(EndpointProblem::NotAUrl)),
    };
    let endpoint = Endpoint::from(uri);
    if !https {
        return Ok(endpoint);
    }
    let tls = tls.ok_or_else(|| invalid(EndpointProblem::NoCa))?;
    endpoint
        .tls_config(tls.config(server_name.unwrap_or(&host)))
        .map_err(|_| invalid(EndpointProblem::Tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate, made once for these tests (its key is not kept).
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUMAewcj4TS9XQZJPsh49q4OlUVnQwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdGVzdC1yb290MB4XDTI2MTEyNjE2MjEzN1oXDTM2MTEyMzE2
MjEzN1owFDESMBAGA1UEAwwJdGVzdC1yb290MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEOXZ95T8qK5gEPi2naPvKYyExFtYnP+BsNq+qKxVZ4DN4mavjc3yFunnx
O0N8VE8lXrJeeKNiXj5h8iIo5fCxs6NTMFEwHQYDVR0OBBYEFAEGb2m5GDtk8Xyw
6smjbdNpt+psMB8GA1UdIwQYMBaAFAEGb2m5GDtk8Xyw6smjbdNpt+psMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgc/ZCJlXsUqfIz2SPlXm5vtqP
rfMgUjgzhaW5S1xrAugCIQDde8IXmroivTzEQuZzm/oUyhXpYAY85qEPq3WkYMtP
Ew==
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_file_holds_at_least_one_certificate() {
        assert!(ClientTls::from_pem(CA).is_ok());
        assert!(
            ClientTls::from_pem("")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(ClientTls::from_pem("hello").is_err());
        let error = ClientTls::from_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn an_https_url_needs_a_ca() {
        let error = endpoint("https://auth:50051", None).unwrap_err();
        assert_eq!(error.problem, EndpointProblem::NoCa);
        let tls = ClientTls::from_pem(CA).unwrap();
        assert!(endpoint("https://auth:50051", Some(&tls)).is_ok());
        assert!(endpoint_for("https://10.0.0.7:50051", Some("auth"), Some(&tls)).is_ok());
        assert!(endpoint("http://auth:50051", None).is_ok());
        assert!(endpoint("http://auth:50051", Some(&tls)).is_ok());
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_dialled() {
        for url in ["ftp://auth:1", "auth:50051", "not a url", "/path"] {
            let error = endpoint(url, None).unwrap_err();
            assert_eq!(error.problem, EndpointProblem::NotAUrl, "{url}");
        }
    }
}
