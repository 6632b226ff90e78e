//! A process-wide bound on the request bodies being read or handled at once, whatever the number
//! of connections or HTTP/2 streams: a request that may carry a body takes its share of
//! [`BODY_BUDGET_BYTES`] before its route runs and gives it back when its answer is ready. A
//! client can keep a body unfinished for as long as the request deadline, so without this bound
//! every stream of every connection could hold `GATEWAY_BODY_LIMIT` (and its headers) at once.
//!
//! A request's share is its header bytes plus its body's `Content-Length`, or
//! `GATEWAY_BODY_LIMIT` without one (chunked HTTP/1, HTTP/2 without the header), capped by that
//! limit (the JSON extractor refuses a longer body with 413). A request known to have no body
//! (a GET, or anything without `Content-Length` or chunked encoding in HTTP/1, or whose HTTP/2
//! headers end the stream) takes nothing and pays nothing but one check of its body's size hint.
//! When the budget is spent, a request is refused at once with 503 `overloaded` and
//! `Retry-After: 1` rather than queued: its body would wait in the connection's buffers anyway.
//!
//! One client (its address as `crate::client_addr` resolves it, an IPv6 address by its /64, as
//! the services count clients) may hold at most an eighth of the budget, so a client that keeps
//! bodies unfinished cannot spend it all and turn everyone's sign-ins away: that takes eight.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
    response::{IntoResponse, Response},
};
use futures::future::Either;
use http_body::Body as _;
use ipnet::IpNet;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::{
    client_addr::{self, ForwardedHeader},
    error::ApiError,
    limits,
};

/// Bytes of request bodies (with their headers) the gateway holds at once: 128 bodies of the
/// default 64 KiB limit, or thousands of the API's usual few hundred bytes.
pub const BODY_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// One client may hold this fraction of the budget at most.
const CLIENT_SHARE_DIVISOR: usize = 8;

/// Takes each request's share of the budget before the route runs; see the module's comment.
#[derive(Clone, Debug)]
pub struct BodyBudgetLayer {
    budget: Arc<Semaphore>,
    /// The budget's size, the most one request may take.
    total: usize,
    body_limit: usize,
    clients: Arc<Clients>,
}

/// What each client holds of the budget.
#[derive(Debug)]
struct Clients {
    /// The most one client may hold.
    limit: usize,
    /// How the client's address is found (`GATEWAY_TRUSTED_PROXIES`, `GATEWAY_FORWARDED_HEADER`).
    trusted_proxies: Vec<IpNet>,
    forwarded_header: ForwardedHeader,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl Clients {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client's part of a request's share, given back when dropped.
struct ClientShare {
    clients: Arc<Clients>,
    client: IpAddr,
    bytes: usize,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut held = self.clients.held();
        if let Some(bytes) = held.get_mut(&self.client) {
            *bytes = bytes.saturating_sub(self.bytes);
            if *bytes == 0 {
                held.remove(&self.client);
            }
        }
    }
}

impl BodyBudgetLayer {
    /// A budget of `total` bytes (at least `body_limit`, so that any one body fits) for bodies of
    /// at most `body_limit` bytes, of which one client (found as the gateway finds client
    /// addresses) may hold an eighth, or two bodies if that is more.
    pub fn new(
        total: usize,
        body_limit: usize,
        trusted_proxies: Vec<IpNet>,
        forwarded_header: ForwardedHeader,
    ) -> Self {
        let total = total.max(body_limit).min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(total)),
            total,
            body_limit,
            clients: Arc::new(Clients {
                limit: (total / CLIENT_SHARE_DIVISOR).max(body_limit.saturating_mul(2)),
                trusted_proxies,
                forwarded_header,
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bytes of the budget free now.
    pub fn available(&self) -> usize {
        self.budget.available_permits()
    }
}

impl<S> Layer<S> for BodyBudgetLayer {
    type Service = BodyBudget<S>;

    fn layer(&self, inner: S) -> BodyBudget<S> {
        BodyBudget {
            inner,
            budget: self.clone(),
        }
    }
}

/// The service [`BodyBudgetLayer`] wraps around each route.
#[derive(Clone, Debug)]
pub struct BodyBudget<S> {
    inner: S,
    budget: BodyBudgetLayer,
}

impl<S> BodyBudget<S> {
    /// The bytes `request` takes from the budget: nothing for a request without a body.
    fn share(&self, request: &Request<Body>) -> usize {
        let hint = request.body().size_hint();
        if hint.upper() == Some(0) {
            return 0;
        }
        let body = hint
            .upper()
            .map_or(self.budget.body_limit, |upper| {
                usize::try_from(upper).unwrap_or(usize::MAX)
            })
            .min(self.budget.body_limit);
        (limits::header_bytes(request.headers()) + body).min(self.budget.total)
    }
}

impl<S> Service<Request<Body>> for BodyBudget<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BudgetFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let share = self.share(&request);
        if share == 0 {
            return BudgetFuture {
                inner: Either::Left(self.inner.call(request)),
                _share: None,
            };
        }
        let client = match self.client_share(&request, share) {
            Ok(client) => client,
            Err(client) => {
                tracing::warn!(share, %client, "a client's share of the request body budget spent; refused");
                return BudgetFuture {
                    inner: Either::Right(std::future::ready(Ok(overloaded()))),
                    _share: None,
                };
            }
        };
        // `share` is at most `total`, itself at most `Semaphore::MAX_PERMITS` (below u32::MAX).
        let permits = u32::try_from(share).unwrap_or(u32::MAX);
        match self.budget.budget.clone().try_acquire_many_owned(permits) {
            Ok(permit) => BudgetFuture {
                inner: Either::Left(self.inner.call(request)),
                _share: Some((permit, client)),
            },
            Err(_) => {
                tracing::warn!(share, "request body budget spent; refused");
                BudgetFuture {
                    inner: Either::Right(std::future::ready(Ok(overloaded()))),
                    _share: None,
                }
            }
        }
    }
}

impl<S> BodyBudget<S> {
    /// Adds `share` to what the request's client holds, unless that would pass its limit (the
    /// client is the error). `None` for a request without a TCP peer (the router in-process).
    fn client_share(
        &self,
        request: &Request<Body>,
        share: usize,
    ) -> Result<Option<ClientShare>, IpAddr> {
        let clients = &self.budget.clients;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let Some(client) = client_addr::resolve(
            peer,
            request.headers(),
            &clients.trusted_proxies,
            clients.forwarded_header,
        ) else {
            return Ok(None);
        };
        let client = match client {
            // One subscriber holds a whole /64.
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
            v4 => v4,
        };
        let mut held = clients.held();
        let holds = held.entry(client).or_insert(0);
        if *holds + share > clients.limit {
            if *holds == 0 {
                held.remove(&client);
            }
            return Err(client);
        }
        *holds += share;
        Ok(Some(ClientShare {
            clients: clients.clone(),
            client,
            bytes: share,
        }))
    }
}

fn overloaded() -> Response {
    // `ApiError` adds `Retry-After: 1` to every 503.
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests are sending bodies at once; retry shortly",
    )
    .into_response()
}

pin_project! {
    /// The answer of a [`BodyBudget`]: holds the request's share until the answer is ready.
    pub struct BudgetFuture<F, E> {
        #[pin]
        inner: Either<F, std::future::Ready<Result<Response, E>>>,
        _share: Option<(OwnedSemaphorePermit, Option<ClientShare>)>,
    }
}

impl<F, E> Future for BudgetFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        // The answer is built; the request's body and headers are gone.
        this._share.take();
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::oneshot;
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// Calls a route behind `layer` that answers 200 once the returned sender fires (or is
    /// dropped). The share is taken when the call is made, before the answer is awaited.
    async fn call(
        layer: &BodyBudgetLayer,
        request: Request<Body>,
    ) -> (
        oneshot::Sender<()>,
        impl Future<Output = Result<Response, Infallible>>,
    ) {
        let (release, held) = oneshot::channel::<()>();
        let held = std::sync::Mutex::new(Some(held));
        let route = service_fn(move |_: Request<Body>| {
            let held = held.lock().unwrap().take();
            async move {
                if let Some(held) = held {
                    let _ = held.await;
                }
                Ok::<_, Infallible>(StatusCode::OK.into_response())
            }
        });
        let mut service = layer.layer(route);
        let answer = service.ready().await.unwrap().call(request);
        (release, answer)
    }

    #[tokio::test]
    async fn a_request_without_a_body_takes_nothing_one_with_a_body_its_size_until_answered() {
        let layer = BodyBudgetLayer::new(
            100_000,
            64 * 1024,
            Vec::new(),
            ForwardedHeader::XForwardedFor,
        );

        let (release, get) = call(&layer, Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(layer.available(), 100_000, "a GET paid");
        release.send(()).unwrap();
        assert_eq!(get.await.unwrap().status(), 200);

        let post = Request::post("/")
            .header("content-type", "application/json")
            .body(Body::from(vec![b' '; 1000]))
            .unwrap();
        let (release, post) = call(&layer, post).await;
        let headers = "content-type".len() + "application/json".len();
        assert_eq!(layer.available(), 100_000 - 1000 - headers);
        release.send(()).unwrap();
        assert_eq!(post.await.unwrap().status(), 200);
        assert_eq!(layer.available(), 100_000);
    }

    fn from(client: &str, body: usize) -> Request<Body> {
        let mut request = Request::post("/")
            .body(Body::from(vec![b' '; body]))
            .unwrap();
        let peer: SocketAddr = format!("{client}:4000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    #[tokio::test]
    async fn one_client_holds_at_most_an_eighth_of_the_budget() {
        let layer =
            BodyBudgetLayer::new(800_000, 10_000, Vec::new(), ForwardedHeader::XForwardedFor);
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(call(&layer, from("192.0.2.7", 10_000)).await);
        }
        // The eleventh body would take the client past 100,000 bytes.
        let (_release, refused) = call(&layer, from("192.0.2.7", 10_000)).await;
        assert_eq!(
            refused.await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Another address of the same IPv6 /64 is the same client; another client gets in.
        let mut v6 = Vec::new();
        for _ in 0..10 {
            v6.push(call(&layer, from("[2001:db8::1]", 10_000)).await);
        }
        let (_release, same_64) = call(&layer, from("[2001:db8::2]", 10_000)).await;
        assert_eq!(
            same_64.await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (release, other) = call(&layer, from("198.51.100.9", 10_000)).await;
        release.send(()).unwrap();
        assert_eq!(other.await.unwrap().status(), StatusCode::OK);
        // Answered, a client's requests give its share back.
        for (release, answer) in held {
            release.send(()).unwrap();
            assert_eq!(answer.await.unwrap().status(), StatusCode::OK);
        }
        let (release, again) = call(&layer, from("192.0.2.7", 10_000)).await;
        release.send(()).unwrap();
        assert_eq!(again.await.unwrap().status(), StatusCode::OK);
        assert!(layer.clients.held().keys().all(|c| c.is_ipv6()));
    }

    #[tokio::test]
    async fn a_spent_budget_is_a_503_with_retry_after() {
        let layer = BodyBudgetLayer::new(
            100_000,
            64 * 1024,
            Vec::new(),
            ForwardedHeader::XForwardedFor,
        );
        // No Content-Length known: the body limit is taken.
        let (_sender, unknown) = futures::channel::mpsc::channel::<Result<Vec<u8>, Infallible>>(1);
        let first = Request::post("/").body(Body::from_stream(unknown)).unwrap();
        let (_release, _first) = call(&layer, first).await;
        assert_eq!(layer.available(), 100_000 - 64 * 1024);

        let second = Request::post("/")
            .body(Body::from(vec![b' '; 40_000]))
            .unwrap();
        let (_release, second) = call(&layer, second).await;
        let response = second.await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
