//! The tonic interceptor: the same check as [`crate::AuthnLayer`], for one generated server
//! whose methods all share one rule.

use tonic::{Request, Status, service::Interceptor};

use crate::{Access, Gate, Keys, TokenCache, revocation::Revocations};

/// `FooServer::with_interceptor(service, AuthnInterceptor::new(Access::SignedIn, keys, cache))`.
///
/// Every call to that server must satisfy `access`; the verified [`token::Claims`] reach the
/// handler as `Arc<Claims>` in the request extensions, exactly as with the layer. An
/// interceptor cannot wait, so a token naming a key id the service does not know yet starts the
/// JWKS refetch in the background and is refused with UNAUTHENTICATED "…unknown signing key…";
/// the caller's retry succeeds once the key has arrived. Health and reflection, served
/// beside the intercepted server, stay open.
#[derive(Clone)]
pub struct AuthnInterceptor {
    gate: Gate,
    access: Access,
}

impl AuthnInterceptor {
    /// Build it after the binary installed its metrics recorder (if any): the outcome counters
    /// are made here. Use [`Gate::interceptor`] to share one cache with a layer or another
    /// interceptor.
    pub fn new(access: Access, keys: Keys, cache: TokenCache) -> Self {
        Self::from_gate(Gate::new(keys, cache), access)
    }

    pub(crate) fn from_gate(gate: Gate, access: Access) -> Self {
        Self { gate, access }
    }

    /// Also refuses every revoked token, whether it comes from the cache or not.
    pub fn with_revocations(self, revocations: Revocations) -> Self {
        Self::from_gate(self.gate.with_revocations(revocations), self.access)
    }
}

impl Interceptor for AuthnInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(claims) = self
            .gate
            .authorize_now(self.access, request.metadata().as_ref())?
        {
            request.extensions_mut().insert(claims);
        }
        Ok(request)
    }
}
