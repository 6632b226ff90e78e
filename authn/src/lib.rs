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
//! [`AuthnInterceptor`] runs the same check ([`Gate`]: one verification path, cache, key set and
//! revocation view) as a tonic interceptor on one generated server whose methods share one rule.
//! An interceptor never sees the method path and cannot wait, so a token naming an unknown key
//! id is refused while the JWKS refetch runs in the background; the layer waits for it. Use the
//! layer for a server whose methods have different rules.
//!
//! [`client`] is the other side: a tower layer for tonic clients that attaches a bearer token to
//! every call and renews it before it expires.

mod cache;
pub mod client;
mod gate;
mod interceptor;
mod jwk;
mod jwks;
mod keys;
mod layer;
pub mod metrics;
mod policy;
mod revocation;
pub mod tls;

pub use cache::TokenCache;
pub use gate::Gate;
pub use interceptor::AuthnInterceptor;
pub use jwk::{jwk_from_proto, jwk_to_proto};
pub use jwks::{JwksSource, JwksSourceConfig};
pub use keys::{Keys, Refusal};
pub use layer::{Authn, AuthnFuture, AuthnLayer, bearer_token};
pub use policy::{Access, Policy};
pub use revocation::{
    REVOCATION_HEALTH_SERVICE, RevocationConfig, RevocationFollower, RevocationSet, Revocations,
    RevokedSubject,
};
