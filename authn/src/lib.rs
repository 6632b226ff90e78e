//! Verifying access tokens inside a gRPC server, the same way in every service.
//!
//! [`AuthnLayer`] wraps a tonic server. For every call it looks up the method's [`Access`] rule in
//! the [`Policy`], reads the token from `authorization: Bearer …` or `x-access-token`, verifies it
//! locally with the current [`Keys`], checks roles, and hands the verified [`token::Claims`] to the
//! handler through the request extensions. Nothing on that path calls another service: keys come
//! from auth-service's JWKS in the background ([`JwksSource`]), and a verified token is cached
//! ([`TokenCache`]) so a repeat costs a hash lookup. Every token, cached or not, is also checked
//! against the revocations auth-service pushes ([`RevocationFollower`], [`Revocations`]), in
//! memory. Each check is counted by outcome ([`metrics`]).
//!
//! It is a tower layer rather than a tonic interceptor because an unknown key id must trigger an
//! (async) JWKS refetch, and because the access rule depends on the method path, which interceptors
//! never see.

mod cache;
mod jwk;
mod jwks;
mod keys;
mod layer;
pub mod metrics;
mod policy;
mod revocation;

pub use cache::TokenCache;
pub use jwk::{jwk_from_proto, jwk_to_proto};
pub use jwks::{JwksSource, JwksSourceConfig};
pub use keys::Keys;
pub use layer::{Authn, AuthnLayer, bearer_token};
pub use policy::{Access, Policy};
pub use revocation::{
    REVOCATION_HEALTH_SERVICE, RevocationConfig, RevocationFollower, RevocationSet, Revocations,
    RevokedSubject,
};
