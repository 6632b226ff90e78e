//! One request is one trace across the services: the gateway keeps the caller's W3C
//! `traceparent` (or starts a trace), passes it to the backends, every JSON log line of the
//! request carries its trace id beside the request id, and with `OTEL_EXPORTER_OTLP_ENDPOINT` set
//! every service exports its spans over OTLP/gRPC, linked parent to child. The collector is an
//! OTLP `TraceService` served by this test.

#![allow(clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use e2e::{AuthDeployment, AuthReplica, Credentials, Gateway, Process, ResourceReplica};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::span::SpanKind,
};
use reqwest::StatusCode;
use serde_json::Value;
use tonic::transport::{Server, server::TcpIncoming};

/// A span as it reached the collector, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
}

/// An OTLP trace receiver on a free port of 127.0.0.1 that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    AnyValue::StringValue(name) => name.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(Received {
                    service: service.clone(),
                    kind: span.kind(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Serves the receiver until the test ends; returns it with its `http://…` URL.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let collector = Self::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn spans_of(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits (generously: services on a loaded machine export every 100 ms) until a span of
    /// `service` in `trace_id` of `kind` has arrived, and returns it.
    async fn wait_for(&self, service: &str, trace_id: &str, kind: SpanKind) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans_of(trace_id);
            if let Some(span) = spans
                .iter()
                .find(|s| s.service == service && s.kind == kind)
            {
                return span.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {kind:?} span of {service} in trace {trace_id} arrived within 30 s; that trace has: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The JSON log lines of `process` that belong to the request with `request_id`.
fn lines_of(process: &Process, request_id: &str) -> Vec<Value> {
    process
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["request_id"] == request_id)
        .collect()
}

/// The one trace id and span id that every log line of the request carries in `process`'s log;
/// fails the test when there is no such line, or a line without them or with others.
fn logged_ids(process: &Process, request_id: &str) -> (String, String) {
    let lines = lines_of(process, request_id);
    assert!(
        !lines.is_empty(),
        "{} logged nothing for request {request_id}: {}",
        process.label(),
        process.describe()
    );
    let ids = |line: &Value| {
        (
            line["span"]["trace_id"].as_str().map(str::to_owned),
            line["span"]["span_id"].as_str().map(str::to_owned),
        )
    };
    let first = ids(&lines[0]);
    for line in &lines {
        assert_eq!(
            ids(line),
            first,
            "{}: every line of request {request_id} carries the same trace and span id: {line}",
            process.label()
        );
    }
    let (Some(trace_id), Some(span_id)) = first else {
        panic!(
            "{}: the lines of request {request_id} carry no trace_id/span_id: {}",
            process.label(),
            lines[0]
        );
    };
    assert!(is_id(&trace_id, 32), "{trace_id:?}");
    assert!(is_id(&span_id, 16), "{span_id:?}");
    (trace_id, span_id)
}

/// Lowercase hex of `len` digits, not all zeros.
fn is_id(id: &str, len: usize) -> bool {
    id.len() == len
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

fn random_hex(bytes: usize) -> String {
    hex(&(0..bytes)
        .map(|_| rand::random::<u8>())
        .collect::<Vec<u8>>())
}

#[tokio::test]
async fn a_request_is_one_trace_in_every_service_in_spans_and_logs() {
    let (collector, endpoint) = Collector::start().await;
    // The services export every 100 ms; the gateway only when it stops, which is what makes its
    // spans arrive below (the batch would take a minute otherwise).
    let otel = |service_delay_ms: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", service_delay_ms.to_owned()),
        ]
    };
    let mut deployment = AuthDeployment::create().await;
    deployment.env = otel("100");
    let auth = AuthReplica::start(&deployment, "tracing-auth").await;
    let resource_database = e2e::create_database("resource").await;
    let mut resource = ResourceReplica::spawn_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, e2e::free_port())),
        &resource_database,
        std::slice::from_ref(&auth.url),
        "tracing-resource",
        &otel("100"),
    );
    resource.wait_until_serving().await;
    let mut gateway = Gateway::spawn_with(
        std::slice::from_ref(&auth.url),
        std::slice::from_ref(&resource.url),
        "tracing-gateway",
        &otel("60000"),
    );
    gateway.wait_until_every_replica_is_up().await;

    let user = Credentials::random("tracer");
    gateway.sign_up(&user).await;
    let token = gateway.sign_in(&user).await.access_token;

    // With a caller's traceparent, to each backend.
    let persons_trace = random_hex(16);
    let persons_parent = random_hex(8);
    let persons_request = e2e::unique("traced-persons-");
    let me_trace = random_hex(16);
    let me_request = e2e::unique("traced-me-");
    for (path, trace, parent, request_id) in [
        (
            "/api/persons?pageSize=1",
            &persons_trace,
            &persons_parent,
            &persons_request,
        ),
        ("/api/auth/me", &me_trace, &random_hex(8), &me_request),
    ] {
        let response = gateway
            .get(path)
            .bearer_auth(&token)
            .header("x-request-id", request_id)
            .header("traceparent", format!("00-{trace}-{parent}-01"))
            .header("tracestate", "e2e=1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Without one, and with one that must not be believed (uppercase hex is not W3C's).
    let fresh_request = e2e::unique("untraced-");
    let forged_trace = "4BF92F3577B34DA6A3CE929D0E0E4736";
    let forged_request = e2e::unique("forged-");
    for (request_id, traceparent) in [
        (&fresh_request, None),
        (
            &forged_request,
            Some(format!("00-{forged_trace}-00f067aa0ba902b7-01")),
        ),
    ] {
        let mut request = gateway
            .get("/api/persons?pageSize=1")
            .bearer_auth(&token)
            .header("x-request-id", request_id);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
    }

    // The backends' server spans arrive, in the caller's trace.
    let resource_span = collector
        .wait_for("resource-service", &persons_trace, SpanKind::Server)
        .await;
    assert_eq!(resource_span.name, "person.v1.PersonService/ListPersons");
    let auth_span = collector
        .wait_for("auth-service", &me_trace, SpanKind::Server)
        .await;
    assert_eq!(auth_span.name, "auth.v1.AuthService/GetMe");

    // The gateway writes its log lines in chunks, the last when it stops, and sends its spans
    // then.
    gateway.process.terminate();
    assert!(
        gateway
            .process
            .wait_for_exit(e2e::DRAIN_GRACE)
            .await
            .success(),
        "{}",
        gateway.process.describe()
    );

    // Every log line of each request carries its trace id; the services log their own span.
    let (trace_id, gateway_span_id) = logged_ids(&gateway.process, &persons_request);
    assert_eq!(
        trace_id, persons_trace,
        "the gateway keeps the caller's trace"
    );
    assert_ne!(
        gateway_span_id, persons_parent,
        "the gateway's span is its own"
    );
    assert_eq!(
        logged_ids(&resource.process, &persons_request),
        (persons_trace.clone(), resource_span.span_id.clone())
    );
    assert_eq!(logged_ids(&gateway.process, &me_request).0, me_trace);
    assert_eq!(
        logged_ids(&auth.process, &me_request),
        (me_trace.clone(), auth_span.span_id.clone())
    );

    // A request without a usable traceparent gets a fresh trace, the same in both services, and
    // a forged one is neither kept nor logged.
    let mut fresh_traces = Vec::new();
    for request_id in [&fresh_request, &forged_request] {
        let (trace_id, _) = logged_ids(&gateway.process, request_id);
        assert_eq!(logged_ids(&resource.process, request_id).0, trace_id);
        assert!(![&persons_trace, &me_trace].contains(&&trace_id));
        fresh_traces.push(trace_id);
    }
    assert_ne!(fresh_traces[0], fresh_traces[1]);
    for process in [&gateway.process, &resource.process] {
        assert!(
            !process
                .logs()
                .to_lowercase()
                .contains(&forged_trace.to_lowercase()),
            "{} logged the forged trace id",
            process.label()
        );
    }

    // The gateway sent its spans when it stopped (above).
    let gateway_server = collector
        .wait_for("gateway", &persons_trace, SpanKind::Server)
        .await;
    assert_eq!(gateway_server.name, "GET /api/persons");
    assert_eq!(
        gateway_server.parent_span_id, persons_parent,
        "the gateway's span is a child of the caller's"
    );
    assert_eq!(gateway_server.span_id, gateway_span_id);
    // The backend call is a client span under the request's, and the parent of the backend's.
    let spans = collector.spans_of(&persons_trace);
    let client = spans
        .iter()
        .find(|s| s.service == "gateway" && s.kind == SpanKind::Client)
        .unwrap_or_else(|| panic!("no client span of the gateway: {spans:#?}"));
    assert_eq!(client.name, "person.v1.PersonService/ListPersons");
    assert_eq!(client.parent_span_id, gateway_server.span_id);
    assert_eq!(resource_span.parent_span_id, client.span_id);
    let me_client = collector
        .wait_for("gateway", &me_trace, SpanKind::Client)
        .await;
    assert_eq!(auth_span.parent_span_id, me_client.span_id);
    // A fresh trace starts at the gateway.
    for trace_id in &fresh_traces {
        let root = collector
            .wait_for("gateway", trace_id, SpanKind::Server)
            .await;
        assert_eq!(root.parent_span_id, "", "{root:?}");
    }
}

#[tokio::test]
async fn a_collector_that_is_down_fails_no_call_and_is_logged_once() {
    // Nothing listens there: every export fails (connection refused, after the exporter's
    // retries).
    let closed = format!("http://127.0.0.1:{}", e2e::free_port());
    let mut deployment = AuthDeployment::create().await;
    deployment.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", closed),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "200".into()),
    ];
    let auth = AuthReplica::start(&deployment, "tracing-no-collector").await;
    let mut client = auth.client().await;
    let failure = "failed to export spans";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calls = 0;
    while !auth.process.logs().contains(failure) {
        client
            .get_jwks(proto::auth::v1::GetJwksRequest {})
            .await
            .unwrap_or_else(|status| panic!("call {calls} failed: {status}"));
        calls += 1;
        assert!(
            Instant::now() < deadline,
            "no export failure was logged within 60 s: {}",
            auth.process.describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More spans, more failed exports: still the one line (the next may come a minute later).
    for _ in 0..20 {
        client
            .get_jwks(proto::auth::v1::GetJwksRequest {})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = auth.process.logs();
    assert_eq!(
        logs.matches(failure).count(),
        1,
        "{}",
        auth.process.describe()
    );
    assert!(
        logs.contains("\"lost_spans\""),
        "{}",
        auth.process.describe()
    );
}
