//! What auth-service exports beyond the gRPC and authn series: `auth_sign_ins_total{outcome}`
//! (`success`, `invalid_credentials`, `overloaded`, `throttled`, `disabled`, `error`),
//! `auth_client_credentials_total{outcome}` for the client-credentials grant (`success`,
//! `invalid_client`, `invalid_scope`, `throttled`, `error`),
//! and for the password hashing pool `auth_password_hash_queue_depth` (callers waiting for a
//! worker) and `auth_password_hash_wait_seconds` (how long they waited). Handles are made once,
//! after `Application::build` installed the recorder.

use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};

use crate::error::Error;

/// `auth_sign_ins_total` by outcome. An unknown user and a wrong password are one outcome,
/// `invalid_credentials`, as they are one answer: the metric tells no more than the API.
pub struct SignIns {
    success: Counter,
    invalid_credentials: Counter,
    overloaded: Counter,
    throttled: Counter,
    disabled: Counter,
    error: Counter,
}

impl SignIns {
    pub fn new() -> Self {
        let outcome =
            |label: &'static str| metrics::counter!("auth_sign_ins_total", "outcome" => label);
        Self {
            success: outcome("success"),
            invalid_credentials: outcome("invalid_credentials"),
            overloaded: outcome("overloaded"),
            throttled: outcome("throttled"),
            disabled: outcome("disabled"),
            error: outcome("error"),
        }
    }

    pub fn record<T>(&self, result: &Result<T, Error>) {
        let counter = match result {
            Ok(_) => &self.success,
            Err(Error::InvalidCredentials | Error::CredentialsMissing | Error::Invalid(_)) => {
                &self.invalid_credentials
            }
            Err(Error::Busy) => &self.overloaded,
            Err(Error::SignInThrottled(_)) => &self.throttled,
            Err(Error::AccountDisabled) => &self.disabled,
            Err(_) => &self.error,
        };
        counter.increment(1);
    }
}

impl Default for SignIns {
    fn default() -> Self {
        Self::new()
    }
}

/// `auth_client_credentials_total` by outcome: one `invalid_client` for an unknown client, a
/// wrong secret and a disabled account, as they are one answer.
pub struct ClientGrants {
    success: Counter,
    invalid_client: Counter,
    invalid_scope: Counter,
    throttled: Counter,
    error: Counter,
}

impl ClientGrants {
    pub fn new() -> Self {
        let outcome = |label: &'static str| metrics::counter!("auth_client_credentials_total", "outcome" => label);
        Self {
            success: outcome("success"),
            invalid_client: outcome("invalid_client"),
            invalid_scope: outcome("invalid_scope"),
            throttled: outcome("throttled"),
            error: outcome("error"),
        }
    }

    pub fn record<T>(&self, result: &Result<T, Error>) {
        let counter = match result {
            Ok(_) => &self.success,
            Err(Error::InvalidClient) => &self.invalid_client,
            Err(Error::InvalidScope) => &self.invalid_scope,
            Err(Error::ClientThrottled(_)) => &self.throttled,
            Err(_) => &self.error,
        };
        counter.increment(1);
    }
}

impl Default for ClientGrants {
    fn default() -> Self {
        Self::new()
    }
}

/// The hashing queue's gauge and wait histogram.
pub struct HashQueue {
    depth: Gauge,
    wait: Histogram,
}

impl HashQueue {
    pub fn new() -> Self {
        Self {
            depth: metrics::gauge!("auth_password_hash_queue_depth"),
            wait: metrics::histogram!("auth_password_hash_wait_seconds"),
        }
    }

    /// Counts a caller as queued until the returned guard is dropped (it got a worker, or gave
    /// up), then records how long it waited.
    pub fn waiting(&self) -> Waiting<'_> {
        self.depth.increment(1.0);
        Waiting {
            queue: self,
            since: Instant::now(),
        }
    }
}

impl Default for HashQueue {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Waiting<'a> {
    queue: &'a HashQueue,
    since: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.depth.decrement(1.0);
        self.queue.wait.record(self.since.elapsed().as_secs_f64());
    }
}
