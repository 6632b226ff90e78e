//! The one way our gRPC servers start: the layers every call passes through before its access
//! check, server reflection limited to what the server serves, and health reported the same way.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, Request, Response};
use ipnet::IpNet;
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
use tower_http::request_id::PropagateRequestIdLayer;

use crate::{
    GrpcRequestSpan, GrpcTraceLayer, Rewrite, RewriteRequest, SetRequestId, TraceContextLayer,
    grpc_trace_layer, metrics::GrpcMetricsLayer, request_id_layers, tls::ServerTls,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The metadata key a trusted peer (the gateway) names the original client's address with.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address of the client a call was made for, in the request extensions: the TCP peer, or
/// the address a trusted peer forwarded in [`FORWARDED_FOR`]. Throttling and session lists key on
/// it, so an untrusted caller must never choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Puts the [`ClientAddress`] of every call into its extensions.
#[derive(Clone, Debug, Default)]
pub struct ClientAddressLayer {
    trusted: Arc<[IpNet]>,
}

impl ClientAddressLayer {
    /// `trusted` are the peers (the gateway's pods) whose forwarded address is believed.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self {
            trusted: trusted.into(),
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
        Some(forwarded.map_or(peer, |ip| ip.to_canonical()))
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
    }
}

/// Every layer a call passes before the service's own access check, outermost first.
pub type GrpcLayers<B> = Stack<
    PropagateRequestIdLayer,
    Stack<
        GrpcTraceLayer<B>,
        Stack<
            TraceContextLayer<GrpcRequestSpan>,
            Stack<ClientAddressLayer, Stack<SetRequestId, Stack<GrpcMetricsLayer, Identity>>>,
        >,
    >,
>;

/// The layers in front of every gRPC service of ours, outermost first: count and time the call
/// (outermost, so refusals by any later layer are counted too), give the call a request id
/// (so every later log line carries it), resolve the client address, read the caller's
/// `traceparent` and make the call's span, enter that span (so refusals by the access check are
/// logged too, with all of them), and echo the request id back. The service adds its access
/// check (`authn::AuthnLayer`) after these.
pub fn grpc_layers(trusted_peers: Vec<IpNet>) -> ServiceBuilder<GrpcLayers<tonic::body::Body>> {
    let (set_request_id, propagate_request_id) = request_id_layers();
    ServiceBuilder::new()
        .layer(GrpcMetricsLayer::default())
        .layer(set_request_id)
        .layer(ClientAddressLayer::new(trusted_peers))
        .layer(TraceContextLayer::new(GrpcRequestSpan))
        .layer(grpc_trace_layer())
        .layer(propagate_request_id)
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
    let service = layers.service(routes.prepare());
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
        ClientAddressLayer::new(vec!["10.0.0.0/8".parse().unwrap()])
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

    #[test]
    fn without_a_tcp_peer_there_is_no_address() {
        assert_eq!(address(&gateway_trusted(), &Request::new(())), None);
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
