//! The gateway's own series: `http_server_requests_total{method,route,status}` and
//! `http_server_request_duration_seconds{method,route,status}` for every request, and
//! `gateway_backend_replicas{backend,state}` from the balancer, sampled on scrape.
//!
//! `route` is the route's template (`/api/persons/{id}`), never the raw path, and every request
//! no route matched shares `route="unmatched"`, so no caller can grow the series. Each
//! (route, method, status) gets its handles once; a request then costs a read-locked lookup and
//! two atomic updates, with no label string built.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use axum::{extract::MatchedPath, http::Method};
use metrics::{Counter, Histogram, SharedString};

use crate::backend::{Backend, ReplicaState};

/// The `route` of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other",
];

pub(crate) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }
}

/// The handles of one router; made with its [`crate::call_layer::HttpCallLayer`] in
/// [`crate::app`], after the recorder is installed.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
    unmatched: OnceLock<Arc<RouteMetrics>>,
}

impl HttpMetrics {
    /// The handles of the route `matched` names (of [`UNMATCHED`] when none).
    pub(crate) fn route(&self, matched: Option<&MatchedPath>) -> Arc<RouteMetrics> {
        let Some(matched) = matched else {
            return self
                .unmatched
                .get_or_init(|| Arc::new(RouteMetrics::new(UNMATCHED.into())))
                .clone();
        };
        let path = matched.as_str();
        if let Some(route) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return route.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.into())
            .or_insert_with(|| Arc::new(RouteMetrics::new(path.to_owned().into())))
            .clone()
    }
}

/// The series of one route, per method and status.
pub(crate) struct RouteMetrics {
    route: SharedString,
    by_answer: RwLock<HashMap<(usize, u16), (Counter, Histogram)>>,
}

impl RouteMetrics {
    fn new(route: SharedString) -> Self {
        Self {
            route,
            by_answer: RwLock::default(),
        }
    }

    /// Counts one answer with `status` to a request with `method` ([`method_index`]) that took
    /// `latency`.
    pub(crate) fn record(&self, method: usize, status: u16, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let key = (method, status);
        if let Some((count, duration)) = self
            .by_answer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            count.increment(1);
            duration.record(seconds);
            return;
        }
        let mut by_answer = self.by_answer.write().unwrap_or_else(|e| e.into_inner());
        let (count, duration) = by_answer.entry(key).or_insert_with(|| {
            let labels = [
                ("method", SharedString::const_str(METHODS[method])),
                ("route", self.route.clone()),
                ("status", status.to_string().into()),
            ];
            (
                metrics::counter!("http_server_requests_total", &labels),
                metrics::histogram!("http_server_request_duration_seconds", &labels),
            )
        });
        count.increment(1);
        duration.record(seconds);
    }
}

/// Sets `gateway_backend_replicas{backend,state}`: how many replicas of each backend are up,
/// down, or not checked yet. A metrics sampler runs it on each scrape.
pub fn record_replicas(backends: &[&Backend]) {
    for backend in backends {
        let mut counts = [0usize; 3];
        for replica in backend.replicas().iter() {
            counts[replica.state() as usize] += 1;
        }
        for (state, label) in [
            (ReplicaState::Unknown, "unknown"),
            (ReplicaState::Up, "up"),
            (ReplicaState::Down, "down"),
        ] {
            metrics::gauge!("gateway_backend_replicas", "backend" => backend.name(), "state" => label)
                .set(counts[state as usize] as f64);
        }
    }
}
