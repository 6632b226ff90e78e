//! Access tokens: the claims they carry, the keys that sign them, and the checks every verifier
//! makes. auth-service issues with [`Issuer`]; resource-service, the gateway and any internal Rust
//! service verify with [`Verifier`]. This crate knows nothing of gRPC or databases.

mod claims;
mod issuer;
mod jwks;
mod keys;
mod role;
mod verifier;

pub use claims::{Claims, SERVICE_ACCOUNT_PREFIX};
pub use issuer::{IssueError, Issued, Issuer};
pub use jwks::{Jwk, JwkSet};
pub use keys::{Algorithm, Ed25519Key, Hs256Secret, KeyError, SigningKey};
pub use role::{Role, UnknownRole};
pub use verifier::{LEEWAY_SECS, Verifier, VerifyError};

/// Who issues tokens and for whom: both sides must agree on these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    /// The `iss` claim: auth-service's public base URL (RFC 8414: the issuer is the server's
    /// URL), the gateway's under `scripts/dev` by default.
    pub issuer: String,
    /// The `aud` claim: names the set of services that accept the token.
    pub audience: String,
}

impl Default for Audience {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".to_owned(),
            audience: "persons-api".to_owned(),
        }
    }
}

/// Seconds since the Unix epoch, the unit of every time claim.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
