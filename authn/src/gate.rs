//! The one token check behind both [`crate::AuthnLayer`] and [`crate::AuthnInterceptor`]: the
//! token from the headers, the cache, the keys, the revocation view, the roles, and the outcome
//! counted. The two differ only in whether a token naming an unknown key waits for the JWKS
//! refetch (the layer) or is refused while the refetch runs in the background (the interceptor).

use std::sync::Arc;

use http::HeaderMap;
use token::Claims;
use tonic::Status;

use crate::{
    Access, AuthnInterceptor, AuthnLayer, Keys, Policy, TokenCache, bearer_token,
    keys::Refusal,
    metrics::{Outcome, Verifications},
    revocation::{Revocations, Revoked},
};

/// Keys, token cache, revocation view and outcome counters, shared by every layer and
/// interceptor made from it; cloning it is cheap.
///
/// ```no_run
/// # async fn example(keys: authn::Keys, revocations: authn::Revocations) {
/// use authn::{Access, Gate, TokenCache};
/// let gate = Gate::new(keys, TokenCache::default()).with_revocations(revocations);
/// let interceptor = gate.interceptor(Access::SignedIn);
/// // FooServer::with_interceptor(service, interceptor)
/// # }
/// ```
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    keys: Keys,
    cache: TokenCache,
    verifications: Verifications,
    revocations: Revocations,
}

impl Gate {
    /// Build it after the binary installed its metrics recorder (if any): the outcome counters
    /// are made here.
    pub fn new(keys: Keys, cache: TokenCache) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys,
                cache,
                verifications: Verifications::new(),
                revocations: Revocations::none(),
            }),
        }
    }

    /// Also refuses every revoked token, whether it comes from the cache or not.
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        Arc::make_mut(&mut self.inner).revocations = revocations;
        self
    }

    /// A tower layer for a whole tonic server whose methods have different rules.
    pub fn layer(&self, policy: Policy) -> AuthnLayer {
        AuthnLayer::from_gate(self.clone(), policy)
    }

    /// A tonic interceptor for one generated server whose methods all share `access`.
    pub fn interceptor(&self, access: Access) -> AuthnInterceptor {
        AuthnInterceptor::from_gate(self.clone(), access)
    }

    /// The verified caller, `None` for an anonymous call `access` allows, or the status that
    /// refuses the call. A token naming a key id we do not have waits for the JWKS refetch.
    pub(crate) async fn authorize(
        &self,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Claims>>, Status> {
        match self.check(access, headers) {
            Check::Decided(decision) => decision,
            Check::Verify { token, removals } => {
                let verified = self.inner.keys.verify(token).await;
                self.admit(access, self.remember(token, removals, verified))
                    .map(Some)
            }
        }
    }

    /// [`Gate::authorize`] without waiting: a token naming a key id we do not have starts the
    /// refetch in the background and is refused as "unknown signing key".
    pub(crate) fn authorize_now(
        &self,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Claims>>, Status> {
        match self.check(access, headers) {
            Check::Decided(decision) => decision,
            Check::Verify { token, removals } => {
                let verified = self.inner.keys.verify_without_waiting(token);
                self.admit(access, self.remember(token, removals, verified))
                    .map(Some)
            }
        }
    }

    /// Everything [`Gate::authorize`] decides without verifying a signature: no token needed,
    /// an unusable header, or a token found in the cache (then revocation and roles). Otherwise
    /// the token to verify.
    pub(crate) fn check<'h>(&self, access: Access, headers: &'h HeaderMap) -> Check<'h> {
        let token = match self.token(access, headers) {
            Ok(Some(token)) => token,
            Ok(None) => return Check::Decided(Ok(None)),
            Err(status) => return Check::Decided(Err(status)),
        };
        match self.cached(token) {
            Ok(claims) => Check::Decided(self.admit(access, Ok(claims)).map(Some)),
            Err(removals) => Check::Verify { token, removals },
        }
    }

    /// The token the call carries, if `access` needs one; `None` when the call may go on
    /// without.
    fn token<'h>(&self, access: Access, headers: &'h HeaderMap) -> Result<Option<&'h str>, Status> {
        if access == Access::Public {
            return Ok(None);
        }
        match bearer_token(headers) {
            Ok(Some(token)) => Ok(Some(token)),
            Ok(None) if access == Access::OptionalToken => Ok(None),
            Ok(None) => {
                self.inner.verifications.record(Outcome::Missing);
                Err(Status::unauthenticated("missing access token"))
            }
            Err(message) => {
                self.inner.verifications.record(Outcome::Malformed);
                Err(Status::unauthenticated(message))
            }
        }
    }

    /// The claims of a token verified before, or the key-removal count to verify it under.
    fn cached(&self, token: &str) -> Result<Arc<Claims>, u64> {
        // Read before verifying: if a key is withdrawn meanwhile, the entry is already stale.
        let removals = self.inner.keys.removals();
        self.inner.cache.get(token, removals).ok_or(removals)
    }

    /// Caches a fresh verification's claims.
    fn remember(
        &self,
        token: &str,
        removals: u64,
        verified: Result<Claims, Refusal>,
    ) -> Result<Arc<Claims>, Refusal> {
        let claims = Arc::new(verified?);
        self.inner.cache.insert(token, claims.clone(), removals);
        Ok(claims)
    }

    /// Whether verified (or refused) claims may make this call: not revoked, with a role
    /// `access` allows. Counts the outcome.
    fn admit(
        &self,
        access: Access,
        claims: Result<Arc<Claims>, Refusal>,
    ) -> Result<Arc<Claims>, Status> {
        let verifications = &self.inner.verifications;
        let claims = claims.map_err(|refusal| {
            verifications.record(Outcome::of(&refusal));
            refused(refusal)
        })?;
        // After the cache on purpose: a token verified before its session ended is still in it.
        if let Err(revoked) = self.inner.revocations.check(&claims) {
            verifications.record(Outcome::Revoked);
            return Err(Status::unauthenticated(match revoked {
                Revoked::Revoked => "token revoked",
                Revoked::Unknown => {
                    "token revoked: issued before the last revocation update this service \
                     received; sign in again"
                }
            }));
        }
        if let Access::AnyRole(roles) = access
            && !claims.has_any_role(roles)
        {
            verifications.record(Outcome::Forbidden);
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "this requires the role {}",
                names.join(" or ")
            )));
        }
        verifications.record(Outcome::Ok);
        Ok(claims)
    }
}

/// What [`Gate::check`] found.
pub(crate) enum Check<'h> {
    /// The call's outcome: its caller (`None`: anonymous and allowed), or the refusal.
    Decided(Result<Option<Arc<Claims>>, Status>),
    /// A token the cache does not hold: its signature must be verified, under the key-removal
    /// count read before.
    Verify { token: &'h str, removals: u64 },
}

fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Invalid(e) => {
            tracing::debug!(reason = %e, "refused token");
            Status::unauthenticated(format!("invalid access token: {e}"))
        }
        Refusal::NoKeys => Status::unavailable("token keys are not available yet; retry shortly"),
        Refusal::KeyPending => Status::unauthenticated(
            "invalid access token: unknown signing key (a token from a new key works once this \
             service has fetched it; retry shortly)",
        ),
    }
}
