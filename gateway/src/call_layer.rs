//! What every HTTP request passes through before its route's handler, as one layer: it is
//! counted and timed, gets a request id and its place in a trace, is logged in its span, has its
//! headers weighed, and its answer gets the request id and the security headers.
//!
//! One layer rather than a stack of them (as `telemetry::GrpcCallLayer` does for our gRPC
//! servers): one future per request, one clock read, the request id looked up once, the span
//! entered only while the route works, and no body wrapper, so axum does not box the answer's
//! body a second time.

use std::{
    future::{Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    response::Response,
};
use futures::future::Either;
use pin_project_lite::pin_project;
use telemetry::{
    MakeRequestSpan, REQUEST_ID, TraceContext, TraceContextLayer,
    access_log::{Latency, ON_REQUEST, ON_RESPONSE, failed},
    trace_context::{RequestSpan, SpanIds},
};
use tower::{Layer, Service};
use tower_http::classify::ServerErrorsFailureClass;

use crate::{
    limits,
    metrics::{self, HttpMetrics, RouteMetrics},
};

/// Every request, in this order: its route's series (so refusals by the limits are counted
/// too; axum has set the route's template before this layer runs), its request id (the
/// caller's if [`telemetry::is_valid_request_id`] accepts it, else a new one; the span records
/// it, and every answer echoes it, including those of the limits, the deadline and CORS), the
/// caller's `traceparent` read and the request's span made ([`TraceContextLayer`]), a refusal by
/// [`limits::refusal`] or the route called, and on the answer `Referrer-Policy: no-referrer`,
/// `X-Content-Type-Options: nosniff`, `x-request-id` and, under `/api/`, `Cache-Control:
/// no-store` (each unless the route set it).
///
/// Its log lines are those of `tower_http`'s `TraceLayer` with the gateway's settings, under the
/// same targets so log filters keep working: `started processing request` at DEBUG, one
/// `finished processing request` line per answer at INFO with its `latency` and `status`, and
/// `response failed` at ERROR for a 5xx.
#[derive(Clone)]
pub struct HttpCallLayer {
    shared: Arc<CallSettings>,
}

struct CallSettings {
    metrics: HttpMetrics,
    trace: TraceContextLayer<HttpRequestSpan>,
    max_header_bytes: usize,
}

impl HttpCallLayer {
    /// Requests whose headers weigh more than `max_header_bytes` are refused.
    pub fn new(max_header_bytes: usize) -> Self {
        Self {
            shared: Arc::new(CallSettings {
                metrics: HttpMetrics::default(),
                trace: TraceContextLayer::new(HttpRequestSpan),
                max_header_bytes,
            }),
        }
    }
}

impl<S> Layer<S> for HttpCallLayer {
    type Service = HttpCall<S>;

    fn layer(&self, inner: S) -> HttpCall<S> {
        HttpCall {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`HttpCallLayer`] wraps around each route.
#[derive(Clone)]
pub struct HttpCall<S> {
    inner: S,
    shared: Arc<CallSettings>,
}

impl<S, B> Service<Request<B>> for HttpCall<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Error: std::fmt::Display,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CallFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let shared = &*self.shared;
        let method = metrics::method_index(request.method());
        let route = shared
            .metrics
            .route(request.extensions().get::<MatchedPath>());
        let request_id = telemetry::request_id(request.headers_mut());
        let api = request.uri().path().starts_with("/api/");
        let span = start_trace(&shared.trace, &mut request);
        let inner = {
            let _entered = span.enter();
            tracing::debug!(target: ON_REQUEST, "started processing request");
            // Before the route, so nothing oversized reaches a handler, let alone a backend.
            match limits::refusal(request.headers(), shared.max_header_bytes) {
                Some(refusal) => Either::Left(ready(Ok(refusal))),
                None => Either::Right(self.inner.call(request)),
            }
        };
        CallFuture {
            inner,
            span,
            call: Some(Call {
                started,
                route,
                method,
                request_id,
                api,
            }),
        }
    }
}

/// Puts the request's [`TraceContext`] into its extensions (handlers pass it on to the backends)
/// and returns its span, which this layer keeps rather than the extensions.
fn start_trace<B>(
    trace: &TraceContextLayer<HttpRequestSpan>,
    request: &mut Request<B>,
) -> tracing::Span {
    use telemetry::RewriteRequest as _;

    trace.rewrite(request);
    request
        .extensions_mut()
        .remove::<RequestSpan>()
        .map_or_else(tracing::Span::none, |span| span.0)
}

/// What a request still has to do once its answer comes.
struct Call {
    started: Instant,
    route: Arc<RouteMetrics>,
    method: usize,
    request_id: HeaderValue,
    /// Under `/api/`: the answer gets `Cache-Control: no-store`.
    api: bool,
}

pin_project! {
    /// The answer of an [`HttpCall`].
    pub struct CallFuture<F, E> {
        #[pin]
        inner: Either<Ready<Result<Response, E>>, F>,
        span: tracing::Span,
        call: Option<Call>,
    }
}

impl<F, E> Future for CallFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
    E: std::fmt::Display,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        let Call {
            started,
            route,
            method,
            request_id,
            api,
        } = this
            .call
            .take()
            .expect("a CallFuture is not polled again after it answered");
        let latency = started.elapsed();
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                failed(ServerErrorsFailureClass::Error(error.to_string()), latency);
                return Poll::Ready(Err(error));
            }
        };
        let headers = response.headers_mut();
        for (name, value) in [
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ] {
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
        // API answers carry accounts, sessions and persons: never kept in a browser's cache,
        // where they would outlive the sign-out.
        if api && !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if !headers.contains_key(REQUEST_ID) {
            // Never in an HTTP/2 client's HPACK table: no two requests have the same id.
            let mut echoed = request_id;
            echoed.set_sensitive(true);
            headers.insert(REQUEST_ID, echoed);
        }
        let status = response.status();
        tracing::info!(
            target: ON_RESPONSE,
            latency = %Latency(latency),
            status = i32::from(status.as_u16()),
            "finished processing request"
        );
        if status.is_server_error() {
            failed(ServerErrorsFailureClass::StatusCode(status), latency);
        }
        route.record(method, status.as_u16(), latency);
        Poll::Ready(Ok(response))
    }
}

/// The span of every HTTP request: method, path, request id, trace and span ids. Exported, it is
/// a server span named after the route (`GET /api/persons/{id}`).
#[derive(Clone, Copy, Debug)]
struct HttpRequestSpan;

impl MakeRequestSpan for HttpRequestSpan {
    fn make_span<B>(
        &self,
        request: &axum::http::Request<B>,
        trace: Option<&TraceContext>,
    ) -> tracing::Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let ids = telemetry::trace_context::span_fields(trace);
        let otel_name = telemetry::otlp::exporting().then(|| {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            format!("{} {route}", request.method())
        });
        tracing::info_span!(
            "request",
            // As `&str`, which the JSON log copies as it is, rather than formatted with `%`.
            method = request.method().as_str(),
            path = request.uri().path(),
            request_id,
            trace_id = ids.as_ref().map(SpanIds::trace_id),
            span_id = ids.as_ref().map(SpanIds::span_id),
            otel.name = otel_name,
            otel.kind = otel_name.is_some().then_some("server"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::{body::Body, http::StatusCode};
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// What the route saw of a request: its request ids and whether it had a trace.
    #[derive(Debug, PartialEq)]
    struct Seen {
        request_ids: Vec<String>,
        traced: bool,
    }

    /// Sends `request` through the layer to a route that answers 200 with `route_headers` and
    /// what it saw in the body.
    async fn send(
        request: Request<Body>,
        route_headers: &'static [(&'static str, &'static str)],
    ) -> (Response, Option<Seen>) {
        let route = service_fn(move |request: Request<Body>| async move {
            let seen = serde_json::json!({
                "request_ids": request
                    .headers()
                    .get_all(REQUEST_ID)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect::<Vec<_>>(),
                "traced": request.extensions().get::<TraceContext>().is_some()
                    && request.extensions().get::<RequestSpan>().is_none(),
            });
            let mut response = Response::new(Body::from(seen.to_string()));
            for (name, value) in route_headers {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            Ok::<_, Infallible>(response)
        });
        let response = HttpCallLayer::new(1024)
            .layer(route)
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let seen = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(|v| v.get("traced").is_some())
            .map(|v| Seen {
                request_ids: serde_json::from_value(v["request_ids"].clone()).unwrap(),
                traced: v["traced"].as_bool().unwrap(),
            });
        (Response::from_parts(parts, Body::from(bytes)), seen)
    }

    fn request_with_ids(ids: &[&str]) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        for id in ids {
            request
                .headers_mut()
                .append(REQUEST_ID, HeaderValue::from_str(id).unwrap());
        }
        request
    }

    fn echoed(response: &Response) -> &str {
        response.headers()[REQUEST_ID].to_str().unwrap()
    }

    #[tokio::test]
    async fn a_valid_request_id_reaches_the_route_alone_and_is_echoed() {
        for ids in [&["trace-me-42"][..], &["trace-me-42", "another"]] {
            let (response, seen) = send(request_with_ids(ids), &[]).await;
            let seen = seen.unwrap();
            assert_eq!(seen.request_ids, ["trace-me-42"]);
            assert!(seen.traced);
            assert_eq!(echoed(&response), "trace-me-42");
        }
    }

    #[tokio::test]
    async fn a_missing_or_odd_request_id_is_replaced_by_a_generated_one() {
        for ids in [&[][..], &["a b"], &["a b", "fine"]] {
            let (response, seen) = send(request_with_ids(ids), &[]).await;
            let seen = seen.unwrap();
            assert_eq!(seen.request_ids.len(), 1);
            let id = &seen.request_ids[0];
            assert!(uuid_v4(id), "{id}");
            assert_eq!(echoed(&response), id);
        }
    }

    fn uuid_v4(id: &str) -> bool {
        id.len() == 36 && id.as_bytes()[14] == b'4' && telemetry::is_valid_request_id(id.as_bytes())
    }

    #[tokio::test]
    async fn every_answer_gets_the_security_headers_unless_the_route_chose_its_own() {
        let (response, _) = send(request_with_ids(&[]), &[]).await;
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );

        let (response, _) = send(
            request_with_ids(&["mine"]),
            &[
                ("referrer-policy", "same-origin"),
                ("x-request-id", "route"),
            ],
        )
        .await;
        assert_eq!(response.headers()[header::REFERRER_POLICY], "same-origin");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert_eq!(echoed(&response), "route");
    }

    #[tokio::test]
    async fn oversized_headers_are_refused_before_the_route_with_the_request_id() {
        let mut request = request_with_ids(&["big-one"]);
        request.headers_mut().insert(
            "x-padding",
            HeaderValue::from_str(&"p".repeat(2000)).unwrap(),
        );
        let (response, seen) = send(request, &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(seen.is_none(), "the route was not called");
        assert_eq!(echoed(&response), "big-one");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["code"], "header_fields_too_large");
    }
}
