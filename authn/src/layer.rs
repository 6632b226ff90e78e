//! The tower layer that authenticates and authorizes every gRPC call before its handler runs.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use token::Claims;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    Access, Keys, Policy, TokenCache,
    keys::Refusal,
    metrics::{Outcome, Verifications},
    revocation::{Revocations, Revoked},
};

/// Wraps a whole tonic server: `Server::builder().layer(AuthnLayer::new(..))`.
#[derive(Clone)]
pub struct AuthnLayer {
    state: Arc<State>,
}

#[derive(Clone)]
struct State {
    policy: Policy,
    keys: Keys,
    cache: TokenCache,
    verifications: Verifications,
    revocations: Revocations,
}

impl AuthnLayer {
    /// Build it after the binary installed its metrics recorder (if any): the outcome counters
    /// are made here.
    pub fn new(policy: Policy, keys: Keys, cache: TokenCache) -> Self {
        Self {
            state: Arc::new(State {
                policy,
                keys,
                cache,
                verifications: Verifications::new(),
                revocations: Revocations::none(),
            }),
        }
    }

    /// Also refuses every revoked token, whether it comes from the cache or not.
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        Arc::make_mut(&mut self.state).revocations = revocations;
        self
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, B> Service<Request<B>> for Authn<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is the one that was not polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            match state
                .authorize(request.uri().path(), request.headers())
                .await
            {
                Ok(Some(claims)) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Ok(None) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl State {
    /// The verified caller for this call, `None` for an anonymous call the policy allows,
    /// or the status that refuses it.
    async fn authorize(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Claims>>, Status> {
        let Some(access) = self.policy.access(path) else {
            return Err(Status::unimplemented(format!("unknown method {path}")));
        };
        if access == Access::Public {
            return Ok(None);
        }
        let token = match bearer_token(headers) {
            Ok(Some(token)) => token,
            Ok(None) if access == Access::OptionalToken => return Ok(None),
            Ok(None) => {
                self.verifications.record(Outcome::Missing);
                return Err(Status::unauthenticated("missing access token"));
            }
            Err(message) => {
                self.verifications.record(Outcome::Malformed);
                return Err(Status::unauthenticated(message));
            }
        };
        let claims = match self.verify(token).await {
            Ok(claims) => claims,
            Err((outcome, status)) => {
                self.verifications.record(outcome);
                return Err(status);
            }
        };
        // After the cache on purpose: a token verified before its session ended is still in it.
        if let Err(revoked) = self.revocations.check(&claims) {
            self.verifications.record(Outcome::Revoked);
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
            self.verifications.record(Outcome::Forbidden);
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "this requires the role {}",
                names.join(" or ")
            )));
        }
        self.verifications.record(Outcome::Ok);
        Ok(Some(claims))
    }

    async fn verify(&self, token: &str) -> Result<Arc<Claims>, (Outcome, Status)> {
        // Read before verifying: if a key is withdrawn meanwhile, the entry is already stale.
        let removals = self.keys.removals();
        if let Some(claims) = self.cache.get(token, removals) {
            return Ok(claims);
        }
        match self.keys.verify(token).await {
            Ok(claims) => {
                let claims = Arc::new(claims);
                self.cache.insert(token, claims.clone(), removals);
                Ok(claims)
            }
            Err(refusal) => {
                let outcome = Outcome::of(&refusal);
                Err((outcome, refused(refusal)))
            }
        }
    }
}

fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Invalid(e) => {
            tracing::debug!(reason = %e, "refused token");
            Status::unauthenticated(format!("invalid access token: {e}"))
        }
        Refusal::NoKeys => Status::unavailable("token keys are not available yet; retry shortly"),
    }
}

/// The access token of a request: `authorization: Bearer <token>` (scheme in any case) or the
/// tutorials' `x-access-token: <token>`. `Err` carries a message for a header that is present
/// but unusable.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| "authorization header is not valid text")?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or("authorization header must be \"Bearer <token>\"")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("authorization header must use the Bearer scheme");
        }
        let token = token.trim();
        if token.is_empty() {
            return Err("authorization header has an empty token");
        }
        return Ok(Some(token));
    }
    if let Some(value) = headers.get("x-access-token") {
        let token = value
            .to_str()
            .map_err(|_| "x-access-token header is not valid text")?
            .trim();
        if token.is_empty() {
            return Err("x-access-token header is empty");
        }
        return Ok(Some(token));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn reads_either_header_style() {
        assert_eq!(
            bearer_token(&headers("authorization", "Bearer abc")),
            Ok(Some("abc"))
        );
        assert_eq!(
            bearer_token(&headers("authorization", "bearer  abc ")),
            Ok(Some("abc"))
        );
        assert_eq!(
            bearer_token(&headers("x-access-token", "abc")),
            Ok(Some("abc"))
        );
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn refuses_other_schemes_and_empty_tokens() {
        assert!(bearer_token(&headers("authorization", "Basic YTpi")).is_err());
        assert!(bearer_token(&headers("authorization", "Bearer ")).is_err());
        assert!(bearer_token(&headers("authorization", "abc")).is_err());
        assert!(bearer_token(&headers("x-access-token", " ")).is_err());
    }
}
