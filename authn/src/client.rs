//! The caller's side: a tower layer for tonic clients that sends `authorization: Bearer …` with
//! every call and renews the token before it expires.
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel, token: String) {
//! use authn::client::BearerLayer;
//! use tower::ServiceBuilder;
//! // Forward the token the caller sent us (never renewed; refused locally once expired):
//! let service = ServiceBuilder::new()
//!     .layer(BearerLayer::forward(token))
//!     .service(channel.clone());
//! // Or fetch tokens from anywhere, renewed at 80 % of their lifetime:
//! let service = ServiceBuilder::new()
//!     .layer(BearerLayer::new(|| async { Ok::<_, authn::client::TokenError>(fetch().await) }))
//!     .service(channel);
//! # async fn fetch() -> String { String::new() }
//! # }
//! ```
//!
//! Where tokens come from is a [`TokenSource`]: a closure returning a future, [`Forwarded`],
//! [`ClientCredentials`] (the service's own token from its service account, with auth-service's
//! client-credentials grant), or any type implementing the trait. [`Tokens`] holds the current token: every call reuses it until 80 % of its lifetime
//! (`iat` to `exp`, read without verifying: it is our own token, the server verifies it) has
//! passed, then one call renews it while concurrent calls wait for that one renewal. If renewal
//! fails while the old token is still valid, calls go on with the old one and renewal is retried
//! a second later. A call for which no valid token can be had never leaves the process: it fails
//! with the source's code (UNAUTHENTICATED or UNAVAILABLE) and a message saying so, and for a
//! second after a failure calls fail the same way without asking the source again. When the
//! called service refuses a token as UNAUTHENTICATED (revoked, say, after its account was
//! disabled and enabled again), the token is dropped so the next call fetches a new one (at
//! most once a second).

mod credentials;

pub use credentials::ClientCredentials;

use std::{
    future::Future,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use token::unix_now;
use tonic::{Code, Status};
use tower::{Layer, Service};

/// The share of a token's lifetime after which it is renewed.
const RENEW_AT: f64 = 0.8;

/// How long after a failed renewal the next is tried, while the old token is still valid.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why no token could be had, and which code the refused call gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    code: Code,
    message: String,
}

impl TokenError {
    /// The credentials were refused or the token can no longer be used: retrying will not help.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            code: Code::Unauthenticated,
            message: message.into(),
        }
    }

    /// Whoever issues tokens cannot be reached right now: a retry may succeed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: Code::Unavailable,
            message: message.into(),
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TokenError {}

impl From<TokenError> for Status {
    fn from(error: TokenError) -> Self {
        Status::new(
            error.code,
            format!("no access token for this call: {}", error.message),
        )
    }
}

/// Where a caller's tokens come from. [`Tokens`] asks for one when it holds none or the one it
/// holds is due for renewal, one request at a time.
pub trait TokenSource: Send + Sync + 'static {
    /// A token to send from now on.
    fn fetch(&self) -> BoxFuture<'_, Result<String, TokenError>>;
}

/// Any `Fn() -> impl Future<Output = Result<String, TokenError>>` is a source.
impl<F, Fut> TokenSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
{
    fn fetch(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        Box::pin(self())
    }
}

/// A token received from a caller, sent on as it is: a service acting for a user forwards the
/// user's token, so the next service applies the user's roles. It cannot be renewed; once it
/// has expired, calls fail with UNAUTHENTICATED.
#[derive(Clone)]
pub struct Forwarded(String);

impl Forwarded {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl TokenSource for Forwarded {
    fn fetch(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        let result = match Lifetime::of(&self.0) {
            Ok(lifetime) if lifetime.expired(unix_now()) => Err(TokenError::unauthenticated(
                "the forwarded access token has expired; the caller must sign in again",
            )),
            _ => Ok(self.0.clone()),
        };
        Box::pin(std::future::ready(result))
    }
}

/// The current token of one caller, renewed before it expires; cloning it is cheap and clones
/// share the token.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn TokenSource>,
    current: RwLock<Option<Held>>,
    /// Held by the one call renewing the token; holds when and how the last renewal failed.
    renewing: tokio::sync::Mutex<Option<(Instant, TokenError)>>,
}

#[derive(Clone)]
struct Held {
    header: HeaderValue,
    lifetime: Lifetime,
    fetched: Instant,
}

impl Tokens {
    pub fn new(source: impl TokenSource) -> Self {
        Self {
            inner: Arc::new(Inner {
                source: Box::new(source),
                current: RwLock::new(None),
                renewing: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// `authorization: Bearer <token>` for the next call: the token held while it is fresh,
    /// else a renewed one (one renewal shared by every call that needs it).
    pub async fn header(&self) -> Result<HeaderValue, Status> {
        if let Some(held) = self.held()
            && !held.lifetime.due(unix_now())
        {
            return Ok(held.header);
        }
        let mut last_failure = self.inner.renewing.lock().await;
        // Whoever held the lock before us may have renewed it already.
        let held = self.held();
        let now = unix_now();
        if let Some(held) = &held
            && !held.lifetime.due(now)
        {
            return Ok(held.header.clone());
        }
        let usable = held.filter(|held| !held.lifetime.expired(now));
        // Right after a failure the source is not asked again: calls go on with a token that
        // is still valid, or fail as the last renewal did.
        if let Some((at, error)) = &*last_failure
            && at.elapsed() < RETRY_AFTER
        {
            return match usable {
                Some(held) => Ok(held.header),
                None => Err(error.clone().into()),
            };
        }
        match self.renew().await {
            Ok(held) => {
                *last_failure = None;
                let header = held.header.clone();
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some(held);
                Ok(header)
            }
            Err(error) => {
                *last_failure = Some((Instant::now(), error.clone()));
                match usable {
                    Some(held) => {
                        tracing::warn!(%error, "failed to renew the access token; using the current one until it expires");
                        Ok(held.header)
                    }
                    None => Err(error.into()),
                }
            }
        }
    }

    /// The called service refused `header` as UNAUTHENTICATED: if it is still the token held,
    /// and was not fetched within the last second, forget it so the next call fetches another.
    pub fn refused(&self, header: &HeaderValue) {
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|held| held.header == header && held.fetched.elapsed() >= RETRY_AFTER)
        {
            tracing::info!("the called service refused the access token; fetching a new one");
            *current = None;
        }
    }

    fn held(&self) -> Option<Held> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn renew(&self) -> Result<Held, TokenError> {
        let token = self.inner.source.fetch().await?;
        let lifetime = Lifetime::of(&token)?;
        if lifetime.expired(unix_now()) {
            return Err(TokenError::unauthenticated(
                "the token source gave an access token that has already expired",
            ));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            TokenError::unauthenticated("the token source gave an access token that is not text")
        })?;
        header.set_sensitive(true);
        Ok(Held {
            header,
            lifetime,
            fetched: Instant::now(),
        })
    }
}

/// When a token was issued and when it expires, as it says itself (unverified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lifetime {
    iat: i64,
    exp: i64,
}

impl Lifetime {
    /// Reads `iat` and `exp` from a JWT's payload without checking its signature; a token
    /// without `iat` counts as issued now.
    fn of(token: &str) -> Result<Self, TokenError> {
        #[derive(serde::Deserialize)]
        struct Times {
            exp: i64,
            iat: Option<i64>,
        }
        let unreadable = || {
            TokenError::unauthenticated(
                "the token source gave an access token whose expiry cannot be read",
            )
        };
        let payload = token.split('.').nth(1).ok_or_else(unreadable)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| unreadable())?;
        let times: Times = serde_json::from_slice(&json).map_err(|_| unreadable())?;
        Ok(Self {
            iat: times.iat.unwrap_or_else(unix_now).min(times.exp),
            exp: times.exp,
        })
    }

    /// Whether `RENEW_AT` of the lifetime has passed at `now`.
    fn due(&self, now: i64) -> bool {
        let renew_at = self.iat + ((self.exp - self.iat) as f64 * RENEW_AT) as i64;
        now >= renew_at
    }

    fn expired(&self, now: i64) -> bool {
        now >= self.exp
    }
}

/// Wraps a tonic client's channel: `ServiceBuilder::new().layer(BearerLayer::new(source))
/// .service(channel)`, then `FooClient::new(service)`.
#[derive(Clone)]
pub struct BearerLayer {
    tokens: Tokens,
}

impl BearerLayer {
    /// Tokens from `source`, renewed before they expire.
    pub fn new(source: impl TokenSource) -> Self {
        Self::with_tokens(Tokens::new(source))
    }

    /// The caller's own token, sent on as it is ([`Forwarded`]).
    pub fn forward(token: impl Into<String>) -> Self {
        Self::new(Forwarded::new(token))
    }

    /// Shares `tokens` with other clients of the same caller.
    pub fn with_tokens(tokens: Tokens) -> Self {
        Self { tokens }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bearer {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`BearerLayer`] makes.
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    tokens: Tokens,
}

impl<S, B, ResBody> Service<Request<B>> for Bearer<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is the one that was not polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            match tokens.header().await {
                Ok(header) => {
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, header.clone());
                    let response = inner.call(request).await?;
                    // A refusal by the callee's authn check comes as a trailers-only answer.
                    if response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|code| code.as_bytes() == b"16")
                    {
                        tokens.refused(&header);
                    }
                    Ok(response)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn a_token_is_due_at_four_fifths_of_its_lifetime() {
        let lifetime = Lifetime::of(&jwt(r#"{"iat":1000,"exp":1100,"sub":"s"}"#)).unwrap();
        assert_eq!(
            lifetime,
            Lifetime {
                iat: 1000,
                exp: 1100
            }
        );
        assert!(!lifetime.due(1079));
        assert!(lifetime.due(1080));
        assert!(!lifetime.expired(1099));
        assert!(lifetime.expired(1100));
    }

    #[test]
    fn a_token_whose_expiry_cannot_be_read_is_refused_with_a_reason() {
        for token in [
            "opaque".to_owned(),
            "a.%%%.c".to_owned(),
            jwt(r#"{"iat":1000}"#),
            jwt("not json"),
        ] {
            let error = Lifetime::of(&token).unwrap_err();
            assert_eq!(error.code(), Code::Unauthenticated, "{token}");
            assert!(error.message().contains("expiry cannot be read"), "{token}");
        }
    }

    #[test]
    fn a_token_error_becomes_a_status_with_its_code() {
        let status = Status::from(TokenError::unavailable("auth-service is unreachable"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "no access token for this call: auth-service is unreachable"
        );
    }
}
