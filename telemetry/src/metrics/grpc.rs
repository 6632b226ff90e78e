//! `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}` and
//! `grpc_server_handling_seconds{grpc_service,grpc_method}`, the names and code spellings of
//! go-grpc-prometheus, so existing dashboards and alerts work unchanged.
//!
//! The code is read where tonic puts it: in the response headers for a trailers-only answer (a
//! unary error), otherwise in the trailers at the end of the body. A call whose body is dropped
//! before its trailers (the client went away) counts as `Canceled`. The handles of each method
//! are made once and found again by the path with one read-locked lookup, so the hot path
//! allocates nothing. Paths no service serves (answered `Unimplemented`) share one
//! `unknown` entry, so a caller making up method names cannot grow the series.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, RwLock},
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram, SharedString};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// go-grpc-prometheus' spelling of each code (Go's `codes.Code.String()`), by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;
const UNIMPLEMENTED: usize = 12;

/// The label value of gRPC status code `code`; `Unknown` for numbers outside the standard codes.
pub fn code_name(code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| CODE_NAMES.get(i))
        .copied()
        .unwrap_or(CODE_NAMES[UNKNOWN])
}

/// Counts and times every call through the service it wraps; one per server, so its handles
/// are made after that server's recorder was installed.
#[derive(Clone, Default)]
pub struct GrpcMetricsLayer {
    methods: Arc<Methods>,
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

impl GrpcMetricsLayer {
    /// Starts measuring a call to `uri` that began at `started`: for a layer that does more per
    /// call than count it (`crate::grpc::GrpcCall`), so the call reads the clock once.
    pub(crate) fn begin(&self, uri: &Uri, started: Instant) -> CallGuard {
        begin(&self.methods, uri, started)
    }
}

fn begin(methods: &Arc<Methods>, uri: &Uri, started: Instant) -> CallGuard {
    let method = methods.get(uri.path());
    let uri = method.is_none().then(|| uri.clone());
    CallGuard(Some(Call {
        methods: methods.clone(),
        method,
        uri,
        started,
    }))
}

#[derive(Default)]
struct Methods {
    known: RwLock<HashMap<Box<str>, Arc<MethodMetrics>>>,
    unknown: OnceLock<Arc<MethodMetrics>>,
}

impl Methods {
    fn get(&self, path: &str) -> Option<Arc<MethodMetrics>> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.get(path).cloned()
    }

    /// The entry for a path seen for the first time, once its code is known.
    fn resolve(&self, path: &str, code: usize) -> Arc<MethodMetrics> {
        let split = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .filter(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            });
        let Some((service, method)) = split.filter(|_| code != UNIMPLEMENTED) else {
            return self
                .unknown
                .get_or_init(|| Arc::new(MethodMetrics::new("unknown".into(), "unknown".into())))
                .clone();
        };
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known
            .entry(path.into())
            .or_insert_with(|| {
                Arc::new(MethodMetrics::new(
                    service.to_owned().into(),
                    method.to_owned().into(),
                ))
            })
            .clone()
    }
}

struct MethodMetrics {
    service: SharedString,
    method: SharedString,
    seconds: Histogram,
    /// One counter per code, made on first use.
    handled: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    fn new(service: SharedString, method: SharedString) -> Self {
        let seconds = metrics::histogram!(
            "grpc_server_handling_seconds",
            "grpc_service" => service.clone(),
            "grpc_method" => method.clone(),
        );
        Self {
            service,
            method,
            seconds,
            handled: Default::default(),
        }
    }

    fn record(&self, code: usize, started: Instant) {
        self.seconds.record(started.elapsed().as_secs_f64());
        self.handled[code]
            .get_or_init(|| {
                metrics::counter!(
                    "grpc_server_handled_total",
                    "grpc_service" => self.service.clone(),
                    "grpc_method" => self.method.clone(),
                    "grpc_code" => CODE_NAMES[code],
                )
            })
            .increment(1);
    }
}

/// A call being measured: recorded exactly once, when its code is known or it is abandoned.
struct Call {
    methods: Arc<Methods>,
    method: Option<Arc<MethodMetrics>>,
    /// The path, kept only for a method not seen before (cloning a `Uri` shares its bytes).
    uri: Option<Uri>,
    started: Instant,
}

impl Call {
    fn finish(self, code: usize) {
        let method = match self.method {
            Some(method) => method,
            None => {
                let path = self.uri.as_ref().map_or("", Uri::path);
                self.methods.resolve(path, code)
            }
        };
        method.record(code, self.started);
    }
}

fn status_code(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c < CODE_NAMES.len())
        .unwrap_or(UNKNOWN);
    Some(code)
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S, B, ResBody> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = begin(&self.methods, request.uri(), Instant::now());
        ResponseFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<CallGuard>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<MetricsBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take().unwrap_or(CallGuard(None));
        Poll::Ready(match result {
            Ok(response) => {
                call.response(response.headers());
                Ok(response.map(|inner| MetricsBody { inner, call }))
            }
            Err(error) => {
                call.failed();
                Err(error)
            }
        })
    }
}

/// A call being counted; records it, if still open when dropped, as `Canceled`: the client
/// went away.
pub(crate) struct CallGuard(Option<Call>);

impl CallGuard {
    /// A trailers-only answer carries its code in the headers: then the call is over.
    pub(crate) fn response(&mut self, headers: &HeaderMap) {
        if let Some(code) = status_code(headers)
            && let Some(call) = self.0.take()
        {
            call.finish(code);
        }
    }

    /// Watches the response body's frames for the trailers that carry the code.
    pub(crate) fn frame<D, E>(&mut self, frame: Option<&Result<Frame<D>, E>>) {
        let Some(call) = self.0.take() else {
            return;
        };
        match frame {
            Some(Ok(frame)) => match frame.trailers_ref().map(status_code) {
                // Trailers without a status are a broken answer; gRPC clients read it so.
                Some(code) => call.finish(code.unwrap_or(UNKNOWN)),
                None => self.0 = Some(call),
            },
            Some(Err(_)) | None => call.finish(UNKNOWN),
        }
    }

    /// The call failed without an answer.
    pub(crate) fn failed(&mut self) {
        if let Some(call) = self.0.take() {
            call.finish(UNKNOWN);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.finish(CANCELED);
        }
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the call's code.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        call: CallGuard,
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        this.call.frame(frame.as_ref());
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    #[test]
    fn codes_are_spelled_as_go_grpc_prometheus_spells_them() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(1), "Canceled");
        assert_eq!(code_name(16), "Unauthenticated");
        assert_eq!(code_name(17), "Unknown");
        assert_eq!(code_name(-1), "Unknown");
    }

    fn handled(body: &str, service: &str, method: &str, code: &str) -> Option<u64> {
        let series = format!(
            "grpc_server_handled_total{{grpc_service=\"{service}\",grpc_method=\"{method}\",grpc_code=\"{code}\"}} "
        );
        body.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn the_code_comes_from_the_headers_of_a_trailers_only_answer_or_from_the_trailers() {
        let handle = crate::metrics::install();
        let service = ServiceBuilder::new()
            .layer(GrpcMetricsLayer::default())
            .service_fn(|request: Request<()>| async move {
                let response = match request.uri().path() {
                    // What tonic sends for a unary error: the status in the headers.
                    "/test.v1.Unit/Refuse" => Response::builder()
                        .header("grpc-status", "16")
                        .body(StreamBody::new(futures_stream(None)))
                        .unwrap(),
                    // A success: data, then the status in the trailers.
                    _ => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        Response::new(StreamBody::new(futures_stream(Some(trailers))))
                    }
                };
                Ok::<_, Infallible>(response)
            });
        for path in ["/test.v1.Unit/Refuse", "/test.v1.Unit/Answer"] {
            let request = Request::builder().uri(path).body(()).unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap();
        }
        let body = handle.render();
        assert_eq!(
            handled(&body, "test.v1.Unit", "Refuse", "Unauthenticated"),
            Some(1),
            "{body}"
        );
        assert_eq!(handled(&body, "test.v1.Unit", "Answer", "OK"), Some(1));
        assert!(body.contains(
            "grpc_server_handling_seconds_count{grpc_service=\"test.v1.Unit\",grpc_method=\"Answer\"} 1"
        ));
    }

    #[tokio::test]
    async fn an_abandoned_call_is_canceled_and_made_up_methods_share_one_series() {
        let handle = crate::metrics::install();
        let service = ServiceBuilder::new()
            .layer(GrpcMetricsLayer::default())
            .service_fn(|request: Request<()>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"x")));
                if request.uri().path().starts_with("/made.up") {
                    response
                        .headers_mut()
                        .insert("grpc-status", "12".parse().unwrap());
                }
                Ok::<_, Infallible>(response)
            });
        let request = Request::builder()
            .uri("/test.v2.Gone/Away")
            .body(())
            .unwrap();
        drop(service.clone().oneshot(request).await.unwrap());
        for n in 0..3 {
            let path = format!("/made.up{n}/Method{n}");
            let request = Request::builder().uri(path).body(()).unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let body = handle.render();
        assert_eq!(
            handled(&body, "test.v2.Gone", "Away", "Canceled"),
            Some(1),
            "{body}"
        );
        assert!(handled(&body, "unknown", "unknown", "Unimplemented") >= Some(3));
        assert!(!body.contains("made.up"), "{body}");
    }

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    fn futures_stream(trailers: Option<HeaderMap>) -> Frames {
        let mut frames = vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))];
        if let Some(trailers) = trailers {
            frames.push(Ok(Frame::trailers(trailers)));
        }
        futures::stream::iter(frames)
    }
}
