//! W3C Trace Context: the `traceparent` (and `tracestate`) a request arrives with, or a new trace
//! where none (or none usable) came; the ids every log line of the request carries; and the
//! `traceparent` each call to another service is sent with.
//!
//! A caller's `traceparent` is kept only when it parses exactly (version `00` with its 55
//! characters, lowercase hex, neither id all zeros); anything else starts a new trace, so a caller
//! never puts its own text into our logs. Only the sampled flag is passed on.
//!
//! Without an exporter ([`crate::otlp`]) the ids are drawn here and the request's span just
//! records them. With one, the request's span is an OpenTelemetry span (through
//! `tracing-opentelemetry`) whose parent is the caller's, and the ids are that span's.

use http::{HeaderMap, HeaderName, Request};
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tower::Layer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Rewrite, RewriteRequest, otlp};

/// The header (and gRPC metadata key) that carries the trace and the caller's span.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Vendor-specific trace data that travels with [`TRACEPARENT`].
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on (what W3C asks every hop to pass at least); a longer or
/// malformed one is dropped, the `traceparent` kept.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// The length of a version `00` `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent`: the trace, the caller's span, and the flags (only "sampled" kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses a `traceparent` value as W3C Trace Context says: version `00` is exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>` in lowercase; a later version (but not `ff`) may append
    /// `-…`, which is ignored; an all-zero trace or parent id is invalid.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = u8::from_str_radix(lower_hex(&value[0..2])?, 16).ok()?;
        let rest_ok = match version {
            0xff => false,
            0x00 => value.len() == TRACEPARENT_LEN,
            _ => value.len() == TRACEPARENT_LEN || value[TRACEPARENT_LEN] == b'-',
        };
        if !rest_ok || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::from(u128::from_str_radix(lower_hex(&value[3..35])?, 16).ok()?);
        let parent_id = SpanId::from(u64::from_str_radix(lower_hex(&value[36..52])?, 16).ok()?);
        let flags = u8::from_str_radix(lower_hex(&value[53..55])?, 16).ok()?;
        if trace_id == TraceId::INVALID || parent_id == SpanId::INVALID {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags: TraceFlags::new(flags) & TraceFlags::SAMPLED,
        })
    }

    /// The version `00` text of this `traceparent`.
    pub fn encode(&self) -> String {
        let mut text = [0; TRACEPARENT_LEN];
        text[..3].copy_from_slice(b"00-");
        lower_hex_into(&mut text[3..35], &self.trace_id.to_bytes());
        text[35] = b'-';
        lower_hex_into(&mut text[36..52], &self.parent_id.to_bytes());
        text[52] = b'-';
        lower_hex_into(&mut text[53..], &[self.flags.to_u8()]);
        hex_text(&text).to_owned()
    }
}

/// Writes `bytes` as lowercase hex into `out`, which is twice as long: the text a `traceparent`
/// and the log's `trace_id` and `span_id` fields carry, written without `format!`.
fn lower_hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Text made by [`lower_hex_into`] (and ASCII punctuation): always UTF-8.
fn hex_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("hex digits and dashes are ASCII")
}

/// The bytes as text when every one is a lowercase hex digit.
fn lower_hex(bytes: &[u8]) -> Option<&str> {
    if bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// A fresh trace id: 128 random bits, never all zeros.
pub fn new_trace_id() -> TraceId {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

/// A fresh span id: 64 random bits, never all zeros.
pub fn new_span_id() -> SpanId {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// The caller's trace, read from a request's headers: `None` when there is no `traceparent`,
/// more than one, or one that does not parse. A `tracestate` is kept only beside a usable
/// `traceparent` and only when it is valid and at most [`MAX_TRACESTATE_LEN`] long.
pub fn incoming(headers: &HeaderMap) -> Option<(TraceParent, TraceState)> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let parent = TraceParent::parse(value.as_bytes())?;
    Some((parent, tracestate(headers).unwrap_or_default()))
}

fn tracestate(headers: &HeaderMap) -> Option<TraceState> {
    // Several header lines are one list, joined with commas.
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let text = value.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
        if joined.len() > MAX_TRACESTATE_LEN {
            return None;
        }
    }
    // Values are printable ASCII (`to_str` also lets tabs through, which only OWS may be).
    if joined.is_empty()
        || !joined
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    joined.parse().ok()
}

/// This service's part of a request's trace, in the request's extensions: the trace, the span
/// this service opened for the request (its id is the parent of every call it makes), the
/// flags and `tracestate` to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
    pub state: TraceState,
}

impl TraceContext {
    /// A request's place in its trace without an exporter: the caller's trace (a new one,
    /// sampled, when none came) and a new span id for this service's span.
    pub fn continue_or_start(incoming: Option<&(TraceParent, TraceState)>) -> Self {
        match incoming {
            Some((parent, state)) => Self {
                trace_id: parent.trace_id,
                span_id: new_span_id(),
                flags: parent.flags,
                state: state.clone(),
            },
            None => Self {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                flags: TraceFlags::SAMPLED,
                state: TraceState::NONE,
            },
        }
    }

    /// The `traceparent` a call made as span `child` of this trace is sent with.
    pub fn traceparent(&self, child: SpanId) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: child,
            flags: self.flags,
        }
    }

    /// Adds this trace to an outgoing call's metadata, replacing whatever was there. The call's
    /// span id is that of the current `tracing` span's OpenTelemetry span when exporting (the
    /// span the caller opened for the call, a child of the request's), else a fresh one.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        let child = otlp::exporting()
            .then(|| {
                let cx = tracing::Span::current().context();
                let span = cx.span();
                let current = span.span_context();
                (current.is_valid() && current.trace_id() == self.trace_id)
                    .then(|| current.span_id())
            })
            .flatten()
            .unwrap_or_else(new_span_id);
        // Lowercase hex and dashes: always valid metadata.
        if let Ok(value) = AsciiMetadataValue::try_from(self.traceparent(child).encode()) {
            metadata.insert("traceparent", value);
        }
        match AsciiMetadataValue::try_from(self.state.header()) {
            Ok(value) if !value.is_empty() => {
                metadata.insert("tracestate", value);
            }
            _ => {
                metadata.remove("tracestate");
            }
        }
    }

    /// The fields a request's span records: `trace_id` and `span_id` in lowercase hex.
    pub fn fields(&self) -> SpanIds {
        SpanIds::new(self.trace_id, self.span_id)
    }
}

/// How a service makes the span of each request, the one every log line of the request belongs
/// to. The span must declare the fields `trace_id` and `span_id`: they get `trace`'s ids, or,
/// when `trace` is `None` (exporting), are recorded once the OpenTelemetry span has its ids.
pub trait MakeRequestSpan {
    fn make_span<B>(&self, request: &Request<B>, trace: Option<&TraceContext>) -> tracing::Span;
}

/// The span [`TraceContextLayer`] made for a request, in its extensions, for the trace layer
/// behind it ([`request_span`]).
#[derive(Clone, Debug)]
pub struct RequestSpan(pub tracing::Span);

/// The span [`TraceContextLayer`] made for `request` (a disabled one if that layer did not
/// run): what `tower_http`'s `TraceLayer` behind it enters for the request.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    request
        .extensions()
        .get::<RequestSpan>()
        .map_or_else(tracing::Span::none, |span| span.0.clone())
}

/// Reads the caller's trace context, makes the request's span with `M`, and puts the
/// [`TraceContext`] and the [`RequestSpan`] into the request's extensions. Runs after the request
/// id is set (the span records it) and before the trace layer that enters the span.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer<M> {
    make_span: M,
}

impl<M> TraceContextLayer<M> {
    pub fn new(make_span: M) -> Self {
        Self { make_span }
    }
}

impl<M: Clone, S> Layer<S> for TraceContextLayer<M> {
    type Service = Rewrite<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite::new(self.clone(), inner)
    }
}

impl<M: MakeRequestSpan> TraceContextLayer<M> {
    /// The request's span and its place in the trace, without touching the request: for a layer
    /// that keeps the span itself rather than in the extensions (`crate::grpc::GrpcCall`).
    pub(crate) fn start<B>(&self, request: &Request<B>) -> (tracing::Span, TraceContext) {
        let incoming = incoming(request.headers());
        if otlp::exporting() {
            let span = self.make_span.make_span(request, None);
            let trace = exported(&span, incoming.as_ref()).unwrap_or_else(|| {
                // The span is filtered out (no OpenTelemetry span behind it): ids of our own.
                let trace = TraceContext::continue_or_start(incoming.as_ref());
                record(&span, &trace);
                trace
            });
            (span, trace)
        } else {
            let trace = TraceContext::continue_or_start(incoming.as_ref());
            (self.make_span.make_span(request, Some(&trace)), trace)
        }
    }
}

impl<M: MakeRequestSpan> RewriteRequest for TraceContextLayer<M> {
    fn rewrite<B>(&self, request: &mut Request<B>) {
        let (span, trace) = self.start(request);
        let extensions = request.extensions_mut();
        extensions.insert(trace);
        extensions.insert(RequestSpan(span));
    }
}

/// Makes `span`'s OpenTelemetry span a child of the caller's, and records the ids it got.
/// `None` when `span` has no OpenTelemetry span.
fn exported(
    span: &tracing::Span,
    incoming: Option<&(TraceParent, TraceState)>,
) -> Option<TraceContext> {
    if let Some((parent, state)) = incoming {
        let remote = SpanContext::new(
            parent.trace_id,
            parent.parent_id,
            parent.flags,
            true,
            state.clone(),
        );
        // Fails only for a span without an OpenTelemetry span, which `context` tells below.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    let cx = span.context();
    let otel = cx.span();
    let ids = otel.span_context();
    if !ids.is_valid() {
        return None;
    }
    let trace = TraceContext {
        trace_id: ids.trace_id(),
        span_id: ids.span_id(),
        flags: ids.trace_flags() & TraceFlags::SAMPLED,
        state: ids.trace_state().clone(),
    };
    record(span, &trace);
    Some(trace)
}

fn record(span: &tracing::Span, trace: &TraceContext) {
    let ids = trace.fields();
    span.record("trace_id", ids.trace_id());
    span.record("span_id", ids.span_id());
}

/// A trace id and span id as the lowercase hex a span records. Given to a span as `&str`, which
/// the JSON log copies as it is; a `%id` field would be formatted into a `String` of its own
/// first, for every request.
#[derive(Clone, Copy, Debug)]
pub struct SpanIds {
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

impl SpanIds {
    pub fn new(trace_id: TraceId, span_id: SpanId) -> Self {
        let mut ids = Self {
            trace_id: [0; 32],
            span_id: [0; 16],
        };
        lower_hex_into(&mut ids.trace_id, &trace_id.to_bytes());
        lower_hex_into(&mut ids.span_id, &span_id.to_bytes());
        ids
    }

    pub fn trace_id(&self) -> &str {
        hex_text(&self.trace_id)
    }

    pub fn span_id(&self) -> &str {
        hex_text(&self.span_id)
    }
}

/// `trace`'s ids as span fields, or nothing yet (to be recorded later): a span takes them as
/// `trace_id = ids.as_ref().map(SpanIds::trace_id)`.
pub fn span_fields(trace: Option<&TraceContext>) -> Option<SpanIds> {
    trace.map(TraceContext::fields)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(value: &str) -> Option<TraceParent> {
        TraceParent::parse(value.as_bytes())
    }

    #[test]
    fn span_ids_are_the_ids_in_lowercase_hex() {
        let (trace_id, span_id) = (
            TraceId::from(0x0bf92f3577b34da6a3ce929d0e0e47ff_u128),
            SpanId::from(0x00f067aa0ba902b7_u64),
        );
        let ids = SpanIds::new(trace_id, span_id);
        assert_eq!(ids.trace_id(), "0bf92f3577b34da6a3ce929d0e0e47ff");
        assert_eq!(ids.trace_id(), trace_id.to_string());
        assert_eq!(ids.span_id(), "00f067aa0ba902b7");
        assert_eq!(ids.span_id(), span_id.to_string());
    }

    #[test]
    fn a_version_00_traceparent_parses() {
        let parent = parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id,
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128)
        );
        assert_eq!(parent.parent_id, SpanId::from(0x00f067aa0ba902b7_u64));
        assert!(parent.flags.is_sampled());
        assert_eq!(parent.encode(), VALID);
    }

    #[test]
    fn the_sampled_flag_is_kept_and_unknown_flags_are_dropped() {
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.flags.is_sampled());
        let other_bits = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").unwrap();
        assert_eq!(other_bits.flags, TraceFlags::NOT_SAMPLED);
        let both = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
        assert_eq!(both.flags, TraceFlags::SAMPLED);
        assert!(both.encode().ends_with("-01"));
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // the forbidden version, and a non-hex one
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with anything after it
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            // wrong lengths and separators
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_parses_its_first_fields() {
        let later =
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future")
                .unwrap();
        assert_eq!(later.encode(), VALID);
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }

    #[test]
    fn generated_ids_are_never_zero_and_differ() {
        let trace = TraceContext::continue_or_start(None);
        assert_ne!(trace.trace_id, TraceId::INVALID);
        assert_ne!(trace.span_id, SpanId::INVALID);
        assert!(trace.flags.is_sampled());
        assert_ne!(
            TraceContext::continue_or_start(None).trace_id,
            trace.trace_id
        );
        let sent = trace.traceparent(new_span_id()).encode();
        let parsed = parse(&sent).unwrap();
        assert_eq!(parsed.trace_id, trace.trace_id);
        assert_eq!(sent.len(), TRACEPARENT_LEN);
    }

    #[test]
    fn a_continued_trace_keeps_the_trace_and_flags_and_gets_its_own_span() {
        let parent = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let trace = TraceContext::continue_or_start(Some(&(parent, TraceState::NONE)));
        assert_eq!(trace.trace_id, parent.trace_id);
        assert_eq!(trace.flags, TraceFlags::NOT_SAMPLED);
        assert_ne!(trace.span_id, parent.parent_id);
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tracestate_travels_only_beside_a_usable_traceparent() {
        let (parent, state) = incoming(&headers(&[
            (&TRACEPARENT, VALID),
            (&TRACESTATE, "congo=t61rcWkgMzE"),
            (&TRACESTATE, "rojo=00f067aa0ba902b7"),
        ]))
        .unwrap();
        assert_eq!(parent, parse(VALID).unwrap());
        assert_eq!(state.header(), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

        assert_eq!(
            incoming(&headers(&[(&TRACESTATE, "congo=t61rcWkgMzE")])),
            None
        );
        let two = headers(&[(&TRACEPARENT, VALID), (&TRACEPARENT, VALID)]);
        assert_eq!(incoming(&two), None, "two traceparents are one too many");
    }

    #[test]
    fn a_bad_or_oversized_tracestate_is_dropped_and_the_traceparent_kept() {
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE_LEN));
        for bad in ["no-equals-sign", "UPPER=case", long.as_str()] {
            let (parent, state) =
                incoming(&headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, bad)])).unwrap();
            assert_eq!(parent, parse(VALID).unwrap());
            assert_eq!(state, TraceState::NONE, "{bad:?}");
        }
    }

    #[test]
    fn inject_sends_a_child_of_this_span_and_the_state() {
        let (parent, state) =
            incoming(&headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, "a=1")])).unwrap();
        let trace = TraceContext::continue_or_start(Some(&(parent, state)));
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", "attacker's own".parse().unwrap());
        trace.inject(&mut metadata);
        let sent = parse(metadata.get("traceparent").unwrap().to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_ne!(sent.parent_id, parent.parent_id);
        assert_ne!(
            sent.parent_id, trace.span_id,
            "each call is a span of its own"
        );
        assert_eq!(metadata.get("tracestate").unwrap(), "a=1");

        let mut again = MetadataMap::new();
        again.insert("tracestate", "stale=1".parse().unwrap());
        TraceContext::continue_or_start(None).inject(&mut again);
        assert!(again.get("tracestate").is_none());
    }

    /// The trace the layer hands the service for a request with these headers.
    async fn seen(pairs: &[(&HeaderName, &str)]) -> TraceContext {
        use tower::{ServiceBuilder, ServiceExt};
        let service = ServiceBuilder::new()
            .layer(TraceContextLayer::new(crate::GrpcRequestSpan))
            .service_fn(|request: Request<()>| async move {
                assert!(request.extensions().get::<RequestSpan>().is_some());
                let trace = request.extensions().get::<TraceContext>().cloned();
                Ok::<_, std::convert::Infallible>(trace.unwrap())
            });
        let mut request = Request::new(());
        *request.headers_mut() = headers(pairs);
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn the_layer_continues_a_callers_trace_and_replaces_a_bad_one() {
        let parent = parse(VALID).unwrap();
        let continued = seen(&[(&TRACEPARENT, VALID), (&TRACESTATE, "a=1")]).await;
        assert_eq!(continued.trace_id, parent.trace_id);
        assert_ne!(continued.span_id, parent.parent_id);
        assert_eq!(continued.state.header(), "a=1");

        let forged = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for pairs in [&[][..], &[(&TRACEPARENT, forged), (&TRACESTATE, "a=1")][..]] {
            let fresh = seen(pairs).await;
            assert_ne!(fresh.trace_id, TraceId::INVALID);
            assert_ne!(fresh.trace_id, parent.trace_id);
            assert_eq!(fresh.state, TraceState::NONE);
            assert!(fresh.flags.is_sampled());
        }
    }
}
