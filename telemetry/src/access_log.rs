//! The lines `tower_http`'s `TraceLayer` writes, with its messages and under its targets, so
//! that log filters and queries written for it keep working; written by our own call layers
//! ([`crate::GrpcCallLayer`] and the gateway's HTTP call layer) instead of `TraceLayer`.

use std::{fmt, time::Duration};

pub const ON_REQUEST: &str = "tower_http::trace::on_request";
pub const ON_RESPONSE: &str = "tower_http::trace::on_response";
pub const ON_EOS: &str = "tower_http::trace::on_eos";
pub const ON_FAILURE: &str = "tower_http::trace::on_failure";

/// A latency as `tower_http` logs it.
pub struct Latency(pub Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// `tower_http`'s "response failed" line, in the current span.
pub fn failed(classification: impl fmt::Display, latency: Duration) {
    tracing::error!(
        target: ON_FAILURE,
        classification = %classification,
        latency = %Latency(latency),
        "response failed"
    );
}
