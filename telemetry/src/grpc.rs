//! The one way our gRPC servers start: the layers every call passes through before its access
//! check, server reflection limited to what the server serves, and health reported the same way.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Poll, ready},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use ipnet::IpNet;
use pin_project_lite::pin_project;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tonic::{
    body::Body,
    service::Routes,
    transport::{
        Server,
        server::{TcpConnectInfo, TcpIncoming, TlsConnectInfo},
    },
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_reflection::server::{v1, v1alpha};
use tower::{
    Layer, Service, ServiceBuilder,
    layer::util::{Identity, Stack},
};
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcCode, GrpcEosErrorsAsFailures,
    GrpcErrorsAsFailures,
};

use crate::{
    GrpcRequestSpan, REQUEST_ID, Rewrite, RewriteRequest, TraceContextLayer,
    access_log::{Latency, ON_EOS, ON_REQUEST, ON_RESPONSE, failed},
    metrics::{CallGuard, GrpcMetricsLayer},
    request_id,
    tls::ServerTls,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The metadata key a trusted peer (the gateway) names the original client's address with.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The metadata key with which a trusted peer proves it may name the client's address, when the
/// service has a forwarding secret (`AUTH_FORWARDING_SECRET`, `RESOURCE_FORWARDING_SECRET`; the
/// gateway sends its `GATEWAY_FORWARDING_SECRET`). Removed from every call once checked.
pub const FORWARDING_SECRET: HeaderName = HeaderName::from_static("x-forwarding-secret");

/// How often, at most, a trusted peer's unproven `x-forwarded-for` is logged.
const UNPROVEN_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The address of the client a call was made for, in the request extensions: the TCP peer, or
/// the address a trusted peer forwarded in [`FORWARDED_FOR`]. Throttling and session lists key on
/// it, so an untrusted caller must never choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Puts the [`ClientAddress`] of every call into its extensions.
#[derive(Clone, Debug, Default)]
pub struct ClientAddressLayer {
    trusted: Arc<[IpNet]>,
    /// With a secret, a trusted peer's forwarded address counts only with the secret beside it.
    secret: Option<Arc<SecretString>>,
    unproven: Arc<UnprovenWarnings>,
}

/// When a trusted peer's forwarded address was last refused for want of the secret.
#[derive(Debug)]
struct UnprovenWarnings {
    started: Instant,
    /// Seconds after `started`, plus one; 0: never.
    last: AtomicU64,
}

impl Default for UnprovenWarnings {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl ClientAddressLayer {
    /// `trusted` are the peers (the gateway's pods) whose forwarded address is believed; with a
    /// `secret`, only when they send it in [`FORWARDING_SECRET`] too.
    pub fn new(trusted: Vec<IpNet>, secret: Option<SecretString>) -> Self {
        Self {
            trusted: trusted.into(),
            secret: secret.map(Arc::new),
            unproven: Arc::default(),
        }
    }

    fn client_address<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let extensions = request.extensions();
        // A TLS connection's TCP details are inside its TLS ones.
        let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })?;
        let peer = tcp.remote_addr()?.ip().to_canonical();
        if !self.trusted.iter().any(|net| net.contains(&peer)) {
            return Some(peer);
        }
        let forwarded = request
            .headers()
            .get(FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let Some(forwarded) = forwarded else {
            return Some(peer);
        };
        if !self.proven(request.headers()) {
            self.warn_unproven(peer);
            return Some(peer);
        }
        Some(forwarded.to_canonical())
    }

    /// Whether the call carries the forwarding secret, or none is needed.
    fn proven(&self, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        let expected = secret.expose_secret().as_bytes();
        headers.get(FORWARDING_SECRET).is_some_and(|sent| {
            let sent = sent.as_bytes();
            // Only the length can be learnt from the time taken, not how much of it matched.
            sent.len() == expected.len() && bool::from(sent.ct_eq(expected))
        })
    }

    /// A peer in the trusted range named a client without the secret: a caller that is not the
    /// gateway, or a gateway with another secret (then every client looks like the gateway to the
    /// per-client limits). Logged at most once a minute, without the value sent.
    fn warn_unproven(&self, peer: IpAddr) {
        let warnings = &*self.unproven;
        let now = warnings.started.elapsed().as_secs() + 1;
        let last = warnings.last.load(Ordering::Relaxed);
        if last != 0 && now < last + UNPROVEN_WARNING_EVERY.as_secs() {
            return;
        }
        if warnings
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                %peer,
                "a trusted peer sent x-forwarded-for without the right x-forwarding-secret: its \
                 own address stands for the client (a caller that is not the gateway, or a \
                 gateway whose forwarding secret differs; logged at most once a minute)"
            );
        }
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = Rewrite<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite::new(self.clone(), inner)
    }
}

impl RewriteRequest for ClientAddressLayer {
    fn rewrite<B>(&self, request: &mut Request<B>) {
        if let Some(address) = self.client_address(request) {
            request.extensions_mut().insert(ClientAddress(address));
        }
        // Nothing after this layer needs the secret, so nothing can log or pass it on.
        request.headers_mut().remove(FORWARDING_SECRET);
    }
}

/// Every layer a call passes before the service's own access check.
pub type GrpcLayers = Stack<GrpcCallLayer, Identity>;

/// The layers in front of every gRPC service of ours: [`GrpcCallLayer`]. The service adds its
/// access check (`authn::AuthnLayer`) after it.
pub fn grpc_layers(
    trusted_peers: Vec<IpNet>,
    forwarding_secret: Option<SecretString>,
) -> ServiceBuilder<GrpcLayers> {
    ServiceBuilder::new().layer(GrpcCallLayer::new(trusted_peers, forwarding_secret))
}

/// What every gRPC call of ours passes before the service's access check, in this order: count
/// and time the call (so refusals by the access check are counted too), give it a request id
/// (the caller's if [`crate::is_valid_request_id`] accepts it, else a new one; so every later
/// log line carries it), resolve the client address ([`ClientAddressLayer`]), read the caller's
/// `traceparent` and make the call's span ([`TraceContextLayer`]), enter that span while the
/// service works (so the access check's refusals are logged with all of them), log the calls
/// that failed through no fault of the caller's, and echo the request id back.
///
/// One layer rather than a stack of them: one future and one body wrapper per call, the clock
/// read once at its start, the request id looked up once. Its log lines are those of
/// `tower_http`'s `TraceLayer`, under the same targets (`tower_http::trace::on_failure` at
/// ERROR; `on_request`, `on_response` and `on_eos` at DEBUG), so log filters keep working.
#[derive(Clone)]
pub struct GrpcCallLayer {
    shared: Arc<CallSettings>,
}

struct CallSettings {
    metrics: GrpcMetricsLayer,
    client: ClientAddressLayer,
    trace: TraceContextLayer<GrpcRequestSpan>,
    failures: GrpcErrorsAsFailures,
}

impl GrpcCallLayer {
    /// `trusted_peers` are those whose forwarded client address is believed, with
    /// `forwarding_secret` only when they send it too ([`ClientAddressLayer`]).
    pub fn new(trusted_peers: Vec<IpNet>, forwarding_secret: Option<SecretString>) -> Self {
        Self {
            shared: Arc::new(CallSettings {
                metrics: GrpcMetricsLayer::default(),
                client: ClientAddressLayer::new(trusted_peers, forwarding_secret),
                trace: TraceContextLayer::new(GrpcRequestSpan),
                failures: grpc_failures(),
            }),
        }
    }
}

/// Which answers are failures of ours and logged as errors: not those the caller caused (bad
/// input, no token, not found).
fn grpc_failures() -> GrpcErrorsAsFailures {
    GrpcErrorsAsFailures::new()
        .with_success(GrpcCode::Cancelled)
        .with_success(GrpcCode::InvalidArgument)
        .with_success(GrpcCode::NotFound)
        .with_success(GrpcCode::AlreadyExists)
        .with_success(GrpcCode::PermissionDenied)
        .with_success(GrpcCode::ResourceExhausted)
        .with_success(GrpcCode::FailedPrecondition)
        .with_success(GrpcCode::Unauthenticated)
        // A method no service here has: the caller's mistake.
        .with_success(GrpcCode::Unimplemented)
}

impl<S> Layer<S> for GrpcCallLayer {
    type Service = GrpcCall<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcCall {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`GrpcCallLayer`] wraps around the next one.
#[derive(Clone)]
pub struct GrpcCall<S> {
    inner: S,
    shared: Arc<CallSettings>,
}

impl<S, B, ResBody> Service<Request<B>> for GrpcCall<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display + 'static,
    ResBody: http_body::Body,
    ResBody::Error: std::fmt::Display + 'static,
{
    type Response = Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let shared = &*self.shared;
        let metrics = shared.metrics.begin(request.uri(), started);
        let request_id = request_id(request.headers_mut());
        shared.client.rewrite(&mut request);
        let (span, trace) = shared.trace.start(&request);
        request.extensions_mut().insert(trace);
        let inner = {
            let _entered = span.enter();
            tracing::debug!(target: ON_REQUEST, "started processing request");
            self.inner.call(request)
        };
        CallFuture {
            inner,
            span,
            call: Some(Call {
                started,
                metrics,
                request_id,
                failures: shared.failures.clone(),
            }),
        }
    }
}

/// What a call still has to do once its answer comes.
struct Call {
    started: Instant,
    metrics: CallGuard,
    request_id: HeaderValue,
    failures: GrpcErrorsAsFailures,
}

pin_project! {
    /// The answer of a [`GrpcCall`].
    pub struct CallFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for CallFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: std::fmt::Display + 'static,
{
    type Output = Result<Response<CallBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let Call {
            started,
            mut metrics,
            request_id,
            failures,
        } = this
            .call
            .take()
            .expect("a CallFuture is not polled again after it answered");
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                metrics.failed();
                failed(failures.classify_error(&error), started.elapsed());
                return Poll::Ready(Err(error));
            }
        };
        let headers = response.headers_mut();
        undecodable_is_invalid_argument(headers);
        if !headers.contains_key(REQUEST_ID) {
            // Never in HPACK's table: no two calls have the same id, so indexing it would only
            // push useful entries out, on both ends.
            let mut echoed = request_id;
            echoed.set_sensitive(true);
            headers.insert(REQUEST_ID, echoed);
        }
        metrics.response(response.headers());
        tracing::debug!(
            target: ON_RESPONSE,
            latency = %Latency(started.elapsed()),
            status = grpc_status(&response),
            "finished processing request"
        );
        let eos = match failures.classify_response(&response) {
            ClassifiedResponse::Ready(Ok(())) => None,
            ClassifiedResponse::Ready(Err(failure)) => {
                failed(failure, started.elapsed());
                None
            }
            ClassifiedResponse::RequiresEos(eos) => Some(eos),
        };
        drop(entered);
        // The body logs only a failure in its trailers (and, at DEBUG, its end), in the span.
        let span = std::mem::replace(this.span, tracing::Span::none());
        Poll::Ready(Ok(response.map(|inner| CallBody {
            inner,
            metrics,
            span,
            started,
            eos,
        })))
    }
}

/// tonic answers a request whose message does not decode with INTERNAL ("failed to decode
/// Protobuf message: " and the message type, field and problem), as the gRPC spec files parse
/// errors. For a server that is the caller's bad input, not a fault of its own: so it is logged,
/// counted and alerted on as INVALID_ARGUMENT, with a message that names none of our types. (A
/// unary call's refusal is trailers-only: the status travels in the headers.)
fn undecodable_is_invalid_argument(headers: &mut HeaderMap) {
    const TONIC_PREFIX: &[u8] = b"failed to decode Protobuf message";
    // Every answer passes here: only a trailers-only INTERNAL has its message read.
    if headers
        .get("grpc-status")
        .is_none_or(|code| code.as_bytes() != b"13")
    {
        return;
    }
    let undecodable = headers.get("grpc-message").is_some_and(|message| {
        percent_encoding::percent_decode(message.as_bytes())
            .collect::<Vec<u8>>()
            .starts_with(TONIC_PREFIX)
    });
    if undecodable {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("the%20request%20is%20not%20a%20valid%20protobuf%20message"),
        );
        headers.remove("grpc-status-details-bin");
    }
}

/// The gRPC code of a trailers-only answer (0 for an unreadable one), `None` when the code
/// comes in the trailers; the HTTP status of an answer that is not gRPC.
fn grpc_status<B>(response: &Response<B>) -> Option<i32> {
    let grpc = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        grpc_code(response.headers())
    } else {
        Some(response.status().as_u16().into())
    }
}

/// The `grpc-status` in `headers` as `tower_http` logs it: 0 when it is not a number.
fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    let code = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
    )
}

pin_project! {
    /// The response body of a [`GrpcCall`]: watched for the trailers that carry the code.
    pub struct CallBody<B> {
        #[pin]
        inner: B,
        metrics: CallGuard,
        span: tracing::Span,
        started: Instant,
        eos: Option<GrpcEosErrorsAsFailures>,
    }
}

impl<B> http_body::Body for CallBody<B>
where
    B: http_body::Body,
    B::Error: std::fmt::Display + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        this.metrics.frame(frame.as_ref());
        let trailers = match &frame {
            Some(Ok(data_or_trailers)) => match data_or_trailers.trailers_ref() {
                Some(trailers) => Some(trailers),
                None => return Poll::Ready(frame),
            },
            Some(Err(error)) => {
                if let Some(eos) = this.eos.take() {
                    let failure = eos.classify_error(error);
                    this.span
                        .in_scope(|| failed(failure, this.started.elapsed()));
                }
                return Poll::Ready(frame);
            }
            None => None,
        };
        if let Some(Err(failure)) = this.eos.take().map(|eos| eos.classify_eos(trailers)) {
            this.span
                .in_scope(|| failed(failure, this.started.elapsed()));
        }
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let status = trailers.and_then(grpc_code);
            this.span.in_scope(|| {
                tracing::debug!(
                    target: ON_EOS,
                    stream_duration = %Latency(this.started.elapsed()),
                    status,
                    "end of stream"
                );
            });
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Server reflection (v1 and v1alpha, for grpcurl and friends) that lists only `services` and
/// grpc.health.v1, not every package in the descriptor set.
#[allow(clippy::type_complexity)]
pub fn reflection(
    descriptors: &'static [u8],
    services: &[&'static str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptors)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE),
            |builder, service| builder.with_service_name(*service),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Binds a server's listener (port 0 picks a free one) and returns it with the address it got.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    let local_addr = listener
        .local_addr()
        .context("failed to read the bound address")?;
    Ok((listener, local_addr))
}

/// What one gRPC server allows a peer, the same for every service.
#[derive(Clone, Copy, Debug)]
pub struct GrpcLimits {
    /// The longest a handler may take to answer (a server stream's messages are not counted);
    /// then the caller gets DEADLINE_EXCEEDED. A shorter `grpc-timeout` from the caller wins.
    pub handler_timeout: Duration,
    /// Calls in flight on one connection; more wait for a slot (HTTP/2 flow control holds the
    /// streams beyond `max_streams`).
    pub per_connection: usize,
    /// HTTP/2 streams a peer may open at once on one connection.
    pub max_streams: u32,
    /// How often an idle connection is pinged, and how long the answer may take before the
    /// connection is closed: a peer that vanished without a FIN stops holding resources.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            handler_timeout: Duration::from_secs(30),
            per_connection: 1024,
            max_streams: 1024,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `routes` behind `layers` (ours from [`grpc_layers`], then the service's access check)
/// with `limits` (services pass [`GrpcLimits::default`]), over TLS only when `tls` is given,
/// until `shutdown` resolves, then drains as
/// [`crate::serve_with_drain`] says: `draining` reports NOT_SERVING, the listener closes, and
/// calls in flight get [`crate::DRAIN_GRACE`] to finish.
pub async fn serve_grpc<L, ResBody>(
    limits: GrpcLimits,
    tls: Option<&ServerTls>,
    listener: TcpListener,
    layers: ServiceBuilder<L>,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    draining: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    L: Layer<Routes>,
    L::Service: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError> + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let routes = routes.prepare();
    serve_grpc_service(limits, tls, listener, layers, routes, shutdown, draining).await
}

/// [`serve_grpc`] with a router of the service's own in place of tonic's [`Routes`]: a service
/// that sends its busiest methods straight to their server saves the general router's work on
/// every call.
pub async fn serve_grpc_service<L, R, ResBody>(
    limits: GrpcLimits,
    tls: Option<&ServerTls>,
    listener: TcpListener,
    layers: ServiceBuilder<L>,
    routes: R,
    shutdown: impl Future<Output = ()>,
    draining: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    L: Layer<R>,
    L::Service: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send,
    <L::Service as Service<Request<Body>>>::Error: Into<BoxError> + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let service = layers.service(routes);
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(limits.keepalive_interval * 3));
    let builder = match tls {
        Some(tls) => Server::builder().tls_config(tls.config())?,
        None => Server::builder(),
    };
    let server = |stop| {
        builder
            .timeout(limits.handler_timeout)
            .concurrency_limit_per_connection(limits.per_connection)
            .max_concurrent_streams(limits.max_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .serve_with_incoming_shutdown(service, incoming, stop)
    };
    crate::serve_with_drain(server, shutdown, draining).await
}

/// Reports `status` for `service` and for the server as a whole (the empty name), which is what
/// Kubernetes' gRPC probes and our gateway's health checks ask for.
pub async fn report_health(reporter: &HealthReporter, service: &str, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service, status).await;
}

/// [`report_health`] as SERVING or NOT_SERVING, taking what it needs by value, for callbacks such
/// as a database reachability follower's.
pub async fn report_serving(reporter: HealthReporter, service: &str, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    report_health(&reporter, service, status).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn request_from(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse::<SocketAddr>().unwrap()),
        });
        if let Some(value) = forwarded {
            request
                .headers_mut()
                .insert(FORWARDED_FOR, value.parse().unwrap());
        }
        request
    }

    fn gateway_trusted() -> ClientAddressLayer {
        ClientAddressLayer::new(vec!["10.0.0.0/8".parse().unwrap()], None)
    }

    fn address(layer: &ClientAddressLayer, request: &Request<()>) -> Option<String> {
        layer.client_address(request).map(|a| a.to_string())
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let request = request_from("192.0.2.7:4000", Some("203.0.113.9"));
        assert_eq!(
            address(&gateway_trusted(), &request).as_deref(),
            Some("192.0.2.7")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        let request = request_from("10.1.2.3:4000", Some(" 203.0.113.9 "));
        assert_eq!(
            address(&gateway_trusted(), &request).as_deref(),
            Some("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_without_a_usable_forwarded_address_is_the_client() {
        for forwarded in [None, Some("not-an-ip"), Some("203.0.113.9, 198.51.100.1")] {
            let request = request_from("10.1.2.3:4000", forwarded);
            assert_eq!(
                address(&gateway_trusted(), &request).as_deref(),
                Some("10.1.2.3")
            );
        }
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let request = request_from("[::ffff:10.1.2.3]:4000", Some("203.0.113.9"));
        assert_eq!(
            address(&gateway_trusted(), &request).as_deref(),
            Some("203.0.113.9")
        );
    }

    const SECRET: &str = "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0";

    fn gateway_with_secret() -> ClientAddressLayer {
        ClientAddressLayer::new(vec!["10.0.0.0/8".parse().unwrap()], Some(SECRET.into()))
    }

    fn with_secret(mut request: Request<()>, secret: &str) -> Request<()> {
        request
            .headers_mut()
            .insert(FORWARDING_SECRET, secret.parse().unwrap());
        request
    }

    #[test]
    fn with_a_forwarding_secret_a_trusted_peer_names_the_client_only_with_the_secret() {
        let layer = gateway_with_secret();
        let forwarded = || request_from("10.1.2.3:4000", Some("203.0.113.9"));
        assert_eq!(
            address(&layer, &with_secret(forwarded(), SECRET)).as_deref(),
            Some("203.0.113.9")
        );
        let mut longer = SECRET.to_owned();
        longer.push('x');
        let mut other = SECRET.to_owned();
        other.replace_range(..1, "j");
        for sent in [
            None,
            Some(""),
            Some(&SECRET[1..]),
            Some(&*longer),
            Some(&*other),
        ] {
            let request = match sent {
                Some(sent) => with_secret(forwarded(), sent),
                None => forwarded(),
            };
            assert_eq!(
                address(&layer, &request).as_deref(),
                Some("10.1.2.3"),
                "secret sent: {sent:?}"
            );
        }
        // The secret does not make an untrusted peer a forwarder.
        let untrusted = with_secret(request_from("192.0.2.7:4000", Some("203.0.113.9")), SECRET);
        assert_eq!(address(&layer, &untrusted).as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn the_forwarding_secret_is_removed_from_every_call() {
        let layer = gateway_with_secret();
        let mut request = with_secret(request_from("10.1.2.3:4000", Some("203.0.113.9")), SECRET);
        layer.rewrite(&mut request);
        assert_eq!(
            request.extensions().get::<ClientAddress>(),
            Some(&ClientAddress("203.0.113.9".parse().unwrap()))
        );
        assert!(request.headers().get(FORWARDING_SECRET).is_none());
    }

    #[test]
    fn without_a_tcp_peer_there_is_no_address() {
        assert_eq!(address(&gateway_trusted(), &Request::new(())), None);
    }

    /// What a subscriber at the default level (INFO) writes, line by line.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// One call with request id `id` through our layers to a service that answers `code`, in
    /// the headers (trailers-only, as tonic answers a unary error) or in the trailers; returns
    /// the answer's headers and what was logged.
    async fn call_answering(code: tonic::Code, in_trailers: bool) -> (http::HeaderMap, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(lines.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let service =
            grpc_layers(Vec::new(), None).service_fn(move |_: Request<Body>| async move {
                let response = if in_trailers {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", (code as i32).into());
                    let frames = [Ok::<_, tonic::Status>(http_body::Frame::trailers(trailers))];
                    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                    let mut response = Response::new(Body::new(body));
                    response
                        .headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    response
                } else {
                    tonic::Status::new(code, "answer").into_http()
                };
                Ok::<_, std::convert::Infallible>(response)
            });
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert(crate::REQUEST_ID, "call-7".parse().unwrap());
        let response = service.oneshot(request).await.unwrap();
        let headers = response.headers().clone();
        response.into_body().collect().await.unwrap();
        (headers, lines.text())
    }

    #[tokio::test]
    async fn the_request_id_is_echoed_and_never_indexed() {
        let (headers, _) = call_answering(tonic::Code::Ok, true).await;
        let echoed = &headers[crate::REQUEST_ID];
        assert_eq!(echoed, "call-7");
        // Unique to its call: in HPACK's table it would only push useful entries out.
        assert!(echoed.is_sensitive());
    }

    #[tokio::test]
    async fn our_failures_are_logged_in_the_calls_span_and_the_callers_are_not() {
        for in_trailers in [false, true] {
            let (_, logged) = call_answering(tonic::Code::Internal, in_trailers).await;
            assert_eq!(logged.matches("response failed").count(), 1, "{logged}");
            assert!(logged.contains("classification=Code: 13"), "{logged}");
            assert!(logged.contains("request_id=\"call-7\""), "{logged}");
            assert!(logged.contains("ERROR"), "{logged}");

            // The caller's mistakes, an unknown method among them.
            for code in [tonic::Code::NotFound, tonic::Code::Unimplemented] {
                let (_, logged) = call_answering(code, in_trailers).await;
                assert_eq!(logged, "", "{code:?}");
            }
        }
    }

    /// A server with a 300 ms handler timeout whose every call first waits `delay`, serving the
    /// real health service; returns a client to it and the reporter.
    async fn slow_health_server(
        delay: Duration,
    ) -> (
        tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
        HealthReporter,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = GrpcLimits {
            handler_timeout: Duration::from_millis(300),
            ..GrpcLimits::default()
        };
        let layers = ServiceBuilder::new().map_future(move |call| async move {
            tokio::time::sleep(delay).await;
            call.await
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_grpc(
            limits,
            None,
            listener,
            layers,
            Routes::new(health),
            async {
                let _ = stopped.await;
            },
            async {},
        ));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (
            tonic_health::pb::health_client::HealthClient::new(channel),
            reporter,
            stop,
        )
    }

    #[tokio::test]
    async fn a_handler_slower_than_the_timeout_is_cut_off() {
        let (mut client, _reporter, _stop) = slow_health_server(Duration::from_secs(5)).await;
        let started = std::time::Instant::now();
        let refused = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "{refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_server_stream_outlives_the_handler_timeout() {
        let (mut client, reporter, _stop) = slow_health_server(Duration::ZERO).await;
        reporter
            .set_service_status("svc", ServingStatus::Serving)
            .await;
        let mut stream = client
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "svc".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().is_some());
        // Well past the handler timeout, the stream still carries changes.
        tokio::time::sleep(Duration::from_millis(900)).await;
        reporter
            .set_service_status("svc", ServingStatus::NotServing)
            .await;
        let update = stream.message().await.unwrap().unwrap();
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
}
