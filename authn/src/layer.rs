//! The tower layer that authenticates and authorizes every gRPC call before its handler runs.

use std::{
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, Either};
use http::{HeaderMap, Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{Gate, Keys, Policy, TokenCache, gate::Check, revocation::Revocations};

/// Wraps a whole tonic server: `Server::builder().layer(AuthnLayer::new(..))`. Each method's
/// rule comes from the [`Policy`]; a server whose methods all share one rule can use
/// [`crate::AuthnInterceptor`] instead.
#[derive(Clone)]
pub struct AuthnLayer {
    state: Arc<State>,
}

#[derive(Clone)]
struct State {
    gate: Gate,
    policy: Policy,
}

impl AuthnLayer {
    /// Build it after the binary installed its metrics recorder (if any): the outcome counters
    /// are made here.
    pub fn new(policy: Policy, keys: Keys, cache: TokenCache) -> Self {
        Self::from_gate(Gate::new(keys, cache), policy)
    }

    pub(crate) fn from_gate(gate: Gate, policy: Policy) -> Self {
        Self {
            state: Arc::new(State { gate, policy }),
        }
    }

    /// Also refuses every revoked token, whether it comes from the cache or not.
    pub fn with_revocations(self, revocations: Revocations) -> Self {
        let State { gate, policy } = Arc::unwrap_or_clone(self.state);
        Self::from_gate(gate.with_revocations(revocations), policy)
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

/// What [`Authn`] answers with: the inner service's future when the call was decided at once
/// (a cached token, or no token needed), a refusal, or the wait for a signature to be verified.
pub type AuthnFuture<F, E> = Either<
    Either<F, Ready<Result<Response<Body>, E>>>,
    BoxFuture<'static, Result<Response<Body>, E>>,
>;

impl<S, B> Service<Request<B>> for Authn<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AuthnFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let refuse = |status: Status| Either::Left(Either::Right(ready(Ok(status.into_http()))));
        let path = request.uri().path();
        let Some(access) = self.state.policy.access(path) else {
            return refuse(Status::unimplemented(format!("unknown method {path}")));
        };
        match self.state.gate.check(access, request.headers()) {
            // Decided without waiting (the common case: a token verified before): no task
            // state of our own, the call goes straight on.
            Check::Decided(Ok(claims)) => {
                if let Some(claims) = claims {
                    request.extensions_mut().insert(claims);
                }
                Either::Left(Either::Left(self.inner.call(request)))
            }
            Check::Decided(Err(status)) => refuse(status),
            Check::Verify { .. } => {
                // The clone is the one that was not polled ready; keep the ready one for this
                // call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let state = self.state.clone();
                Either::Right(Box::pin(async move {
                    match state.gate.authorize(access, request.headers()).await {
                        Ok(Some(claims)) => {
                            request.extensions_mut().insert(claims);
                            inner.call(request).await
                        }
                        Ok(None) => inner.call(request).await,
                        Err(status) => Ok(status.into_http()),
                    }
                }))
            }
        }
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
