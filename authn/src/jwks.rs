//! Keeps the verification keys in step with auth-service's JWKS, off the request path.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use token::{Audience, Jwk, Verifier};
use tonic::transport::Channel;

use crate::{
    Keys, jwk_from_proto,
    keys::KeySlot,
    tls::{ClientTls, EndpointProblem, InvalidEndpoint},
};

#[derive(Clone, Debug)]
pub struct JwksSourceConfig {
    /// auth-service replicas to ask, in turn, until one answers.
    pub endpoints: Vec<String>,
    pub audience: Audience,
    /// How often the key set is refreshed in the background.
    pub refresh_interval: Duration,
    /// The least time between two refetches caused by unknown key ids, so a flood of tokens
    /// with made-up key ids cannot turn into a flood of calls to auth-service.
    pub refetch_cooldown: Duration,
    /// Per-attempt deadline for a JWKS call.
    pub timeout: Duration,
    /// The CA an `https://` endpoint's certificate must come from.
    pub tls: Option<ClientTls>,
}

impl JwksSourceConfig {
    pub fn new(endpoints: Vec<String>, audience: Audience) -> Self {
        Self {
            endpoints,
            audience,
            refresh_interval: Duration::from_secs(60),
            refetch_cooldown: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Fetches the JWKS from auth-service; held by [`Keys`] for unknown-key refetches.
#[derive(Clone)]
pub struct JwksSource {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Vec<Channel>,
    config: JwksSourceConfig,
    slot: Weak<KeySlot>,
    /// When the last unknown-key refetch ran. The async mutex makes concurrent refetches for
    /// the same new key wait for one call instead of each making their own.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    /// Whether a refetch started by [`JwksSource::refetch_in_background`] is running: at most
    /// one such task at a time, however many calls name unknown keys.
    background: AtomicBool,
    /// When a fetch last brought a usable key set (the source's start until one has), for
    /// `authn_jwks_age_seconds`.
    fetched: std::sync::Mutex<Instant>,
}

impl JwksSource {
    /// Connects (lazily) to every endpoint, fetches the keys once, and keeps refreshing them in
    /// the background for as long as the returned [`Keys`] live. A failed first fetch is
    /// logged, not fatal: cached keys are empty until auth-service answers, and calls get
    /// UNAVAILABLE meanwhile.
    pub async fn start(config: JwksSourceConfig) -> Result<Keys, InvalidEndpoint> {
        let mut channels = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            let endpoint = crate::tls::endpoint(url, config.tls.as_ref())?
                .connect_timeout(config.timeout)
                .timeout(config.timeout);
            channels.push(endpoint.connect_lazy());
        }
        if channels.is_empty() {
            return Err(InvalidEndpoint {
                url: String::new(),
                problem: EndpointProblem::NotAUrl,
            });
        }
        let empty = Verifier::from_jwks([], &config.audience);
        let slot = Arc::new(KeySlot::new(empty));
        let source = JwksSource {
            inner: Arc::new(Inner {
                channels,
                config,
                slot: Arc::downgrade(&slot),
                last_refetch: tokio::sync::Mutex::new(None),
                background: AtomicBool::new(false),
                fetched: std::sync::Mutex::new(Instant::now()),
            }),
        };
        let first = source.refresh().await;
        let keys = Keys::remote(slot, source.clone());
        tokio::spawn(refresh_loop(Arc::downgrade(&source.inner), first));
        Ok(keys)
    }

    /// How long ago a fetch last brought a usable key set (since the start while none has): an
    /// answer without one does not count.
    pub fn age(&self) -> Duration {
        self.inner
            .fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Fetches the key set and installs it. Returns whether a fetch succeeded.
    async fn refresh(&self) -> bool {
        match self.fetch().await {
            Some(jwks) => {
                let Some(slot) = self.inner.slot.upgrade() else {
                    return false;
                };
                let verifier = Verifier::from_jwks(&jwks, &self.inner.config.audience);
                // An empty answer (a misconfigured replica, an HS256 deployment) must not wipe
                // keys that still verify every token in flight.
                if verifier.key_count() == 0 && slot.get().key_count() > 0 {
                    tracing::warn!(
                        "auth-service published no usable keys; keeping the ones we have"
                    );
                    return false;
                }
                tracing::debug!(keys = verifier.key_count(), "refreshed token keys");
                // Only a key set that can verify tokens makes the keys young: an answer
                // rejected above, or an empty one, leaves `authn_jwks_age_seconds` growing so
                // the staleness alert fires while auth-service publishes nothing usable.
                if verifier.key_count() > 0 {
                    *self.inner.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }
                slot.install(verifier);
                true
            }
            None => false,
        }
    }

    /// Asks each replica in turn until one answers.
    async fn fetch(&self) -> Option<Vec<Jwk>> {
        for channel in &self.inner.channels {
            let mut client = AuthServiceClient::new(channel.clone());
            match client.get_jwks(GetJwksRequest {}).await {
                Ok(response) => {
                    return Some(
                        response
                            .into_inner()
                            .keys
                            .into_iter()
                            .map(jwk_from_proto)
                            .collect(),
                    );
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "JWKS fetch failed");
                }
            }
        }
        None
    }

    /// Called when a token names a key we do not have: refetch once, unless another caller
    /// just did or the cooldown has not passed.
    pub(crate) async fn refetch_for(&self, kid: &str) {
        let mut last = self.inner.last_refetch.lock().await;
        if self
            .inner
            .slot
            .upgrade()
            .is_some_and(|slot| slot.get().knows_key(kid))
        {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < self.inner.config.refetch_cooldown) {
            return;
        }
        *last = Some(Instant::now());
        tracing::info!(kid, "token names an unknown key; refetching JWKS");
        self.refresh().await;
    }

    /// [`JwksSource::refetch_for`] on a task of its own, for a caller that cannot wait. While
    /// one such task runs, further calls start none; the task obeys the same lock and cooldown.
    pub(crate) fn refetch_in_background(&self, kid: String) {
        if self.inner.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = BackgroundRefetch(self.inner.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    JwksSource {
                        inner: running.0.clone(),
                    }
                    .refetch_for(&kid)
                    .await;
                    drop(running);
                });
            }
            Err(_) => tracing::warn!(kid, "no async runtime to refetch the JWKS on"),
        }
    }
}

/// Marks a background refetch as running until dropped (also when its task panics or is
/// cancelled), so a lost task never blocks later refetches.
struct BackgroundRefetch(Arc<Inner>);

impl Drop for BackgroundRefetch {
    fn drop(&mut self) {
        self.0.background.store(false, Ordering::Release);
    }
}

async fn refresh_loop(inner: Weak<Inner>, mut healthy: bool) {
    let mut retry = Duration::from_millis(500);
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.config.refresh_interval) else {
            return;
        };
        tokio::time::sleep(if healthy { interval } else { retry }).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        healthy = JwksSource { inner }.refresh().await;
        retry = if healthy {
            Duration::from_millis(500)
        } else {
            (retry * 2).min(interval)
        };
    }
}
