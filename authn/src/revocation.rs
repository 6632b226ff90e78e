//! Revocations pushed by auth-service, checked in memory on every call.
//!
//! [`RevocationFollower::start`] follows `auth.v1.AuthService/WatchRevocations` from any of the
//! listed auth-service replicas (the next one after any loss, with backoff), resuming from its
//! cursor (auth-service answers a cursor beyond its highest number, left from a database since
//! replaced or restored, with its whole snapshot and its own cursor, which the follower
//! adopts), and keeps the revoked sessions and users in a [`RevocationSet`]. [`Revocations`] is
//! the handle the layer checks every token against, cached or not, and the one place that knows
//! how stale that view is. When the stream has been lost for longer than `max_staleness` the
//! view is *stale*: by default tokens are still accepted (fail-open: a loud warning and the
//! `authn.revocation` health entry NOT_SERVING, so an auth-service outage never takes the
//! service out of rotation), or, with `fail_closed`, tokens issued at or before the last good
//! update are refused, so callers must come back with a token auth-service issued since (which
//! passes even if it is revoked during the outage: nothing tells the view).

mod set;

use std::{
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use proto::auth::v1::{
    RevocationBatch, WatchRevocationsRequest, auth_service_client::AuthServiceClient,
    revocation::Subject,
};
use token::{Claims, unix_now};
use tokio::sync::watch;
use tonic::transport::Channel;

pub use self::set::{RevocationSet, RevokedSubject};
use crate::tls::{ClientTls, EndpointProblem, InvalidEndpoint};

/// The grpc.health.v1 service name that reports whether the revocation view is current.
pub const REVOCATION_HEALTH_SERVICE: &str = "authn.revocation";

/// How often expired revocations are dropped from memory.
const EVICT_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct RevocationConfig {
    /// auth-service replicas to follow, in turn, until one streams.
    pub endpoints: Vec<String>,
    /// How long without a good update (a change or heartbeat on a stream whose snapshot
    /// arrived) before the view counts as stale.
    pub max_staleness: Duration,
    /// When stale, refuse tokens issued at or before the last good update. Tokens issued after
    /// it are still accepted, even ones revoked meanwhile, until they expire.
    pub fail_closed: bool,
    /// A stream silent for this long is given up and resumed elsewhere, unless the stream says
    /// how often it sends heartbeats: then three of those.
    pub idle_timeout: Duration,
    /// Per-attempt deadline for connecting and for the stream's first answer.
    pub connect_timeout: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// The CA an `https://` endpoint's certificate must come from.
    pub tls: Option<ClientTls>,
}

impl RevocationConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            max_staleness: Duration::from_secs(30),
            fail_closed: false,
            idle_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Why [`Revocations::check`] refused a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Its session or user was revoked.
    Revoked,
    /// The view is stale, the service fails closed, and the token predates the last good
    /// update.
    Unknown,
}

/// What is known about revocations; cloning it is cheap. [`Revocations::none`] refuses nothing
/// (auth-service checking its own tokens, tests, an HS256 set-up with no auth-service to follow).
#[derive(Clone, Default)]
pub struct Revocations {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    set: RwLock<RevocationSet>,
    /// The feed position everything up to has been applied; a new stream resumes after it.
    cursor: AtomicI64,
    config: RevocationConfig,
    /// Origin of `last_good_nanos`.
    started: Instant,
    /// Nanoseconds from `started` to the last good update; `NEVER` before the first.
    last_good_nanos: AtomicU64,
    /// Unix seconds of the last good update, or of the start before the first one (tokens
    /// issued before the start were never checked against any view).
    last_good_unix: AtomicI64,
    /// Whether the view is current (the health entry); dropping it stops the tasks.
    fresh: watch::Sender<bool>,
}

const NEVER: u64 = u64::MAX;

impl Revocations {
    /// Refuses nothing, reports nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// A view no task of its own feeds: whoever holds it applies batches with
    /// [`Revocations::apply`] (auth-service's in-process view, tests, benchmarks). Nothing
    /// watches its staleness.
    pub fn manual(config: RevocationConfig) -> Self {
        let (fresh, _) = watch::channel(false);
        Self {
            shared: Some(Arc::new(Shared {
                set: RwLock::new(RevocationSet::new()),
                cursor: AtomicI64::new(0),
                config,
                started: Instant::now(),
                last_good_nanos: AtomicU64::new(NEVER),
                last_good_unix: AtomicI64::new(unix_now()),
                fresh,
            })),
        }
    }

    /// Whether `claims` may be used: not revoked, and, failing closed while stale, issued
    /// after the last good update.
    pub fn check(&self, claims: &Claims) -> Result<(), Revoked> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        if shared
            .read_set()
            .is_revoked(claims.sid.as_deref(), &claims.sub, claims.iat)
        {
            return Err(Revoked::Revoked);
        }
        if shared.config.fail_closed
            && shared.staleness() > shared.config.max_staleness
            && claims.iat <= shared.last_good_unix.load(Ordering::Acquire)
        {
            return Err(Revoked::Unknown);
        }
        Ok(())
    }

    /// Time since the last good update (since the follower started, before the first one);
    /// `None` when no feed is followed. The staleness metric reads this.
    pub fn staleness(&self) -> Option<Duration> {
        self.shared.as_ref().map(|s| s.staleness())
    }

    /// Whether the view is current: updated within `max_staleness`. Always `false` without a
    /// feed.
    pub fn is_fresh(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.is_fresh())
    }

    /// Changes of [`Revocations::is_fresh`], for the health entry; `None` without a feed.
    pub fn freshness(&self) -> Option<watch::Receiver<bool>> {
        self.shared.as_ref().map(|s| s.fresh.subscribe())
    }

    /// The feed position applied so far.
    pub fn cursor(&self) -> i64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.cursor.load(Ordering::Acquire))
    }

    /// Revocations held in memory.
    pub fn len(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.read_set().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one batch of the feed. `synced` says the stream it came on has delivered its
    /// snapshot, so the view is now complete: a good update. A snapshot page sets the cursor
    /// to its own, even a lower one (the feed's numbering restarted); other batches only move
    /// it forward.
    pub fn apply(&self, batch: &RevocationBatch, synced: bool) {
        let Some(shared) = &self.shared else {
            return;
        };
        if !batch.revocations.is_empty() {
            let mut set = shared.write_set();
            for revocation in &batch.revocations {
                let subject = match &revocation.subject {
                    Some(Subject::SessionId(sid)) => RevokedSubject::Session(sid),
                    Some(Subject::UserId(sub)) => RevokedSubject::User(sub),
                    None => continue,
                };
                set.insert(subject, revocation.not_before, revocation.expires_at);
            }
        }
        if batch.snapshot {
            // A snapshot page carries the feed's own position, which is below the view's only
            // when the feed's numbering started again (auth-service's database was replaced or
            // restored): resuming from the higher one would skip everything numbered up to it.
            // What the view holds stays until it expires: those revocations were real.
            shared.cursor.store(batch.cursor, Ordering::Release);
        } else {
            shared.cursor.fetch_max(batch.cursor, Ordering::AcqRel);
        }
        if synced {
            shared.good_update();
        }
    }
}

impl Shared {
    fn read_set(&self) -> std::sync::RwLockReadGuard<'_, RevocationSet> {
        // A poisoned lock means a writer panicked mid-insert; the set is still a valid set.
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_set(&self) -> std::sync::RwLockWriteGuard<'_, RevocationSet> {
        self.set.write().unwrap_or_else(|p| p.into_inner())
    }

    fn staleness(&self) -> Duration {
        let now = self.started.elapsed();
        match self.last_good_nanos.load(Ordering::Acquire) {
            NEVER => now,
            nanos => now.saturating_sub(Duration::from_nanos(nanos)),
        }
    }

    fn is_fresh(&self) -> bool {
        self.last_good_nanos.load(Ordering::Acquire) != NEVER
            && self.staleness() <= self.config.max_staleness
    }

    fn good_update(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(NEVER - 1);
        self.last_good_nanos.store(nanos, Ordering::Release);
        self.last_good_unix.store(unix_now(), Ordering::Release);
        if !*self.fresh.borrow() {
            self.fresh.send_replace(true);
        }
    }
}

/// Follows the revocation feed in the background.
pub struct RevocationFollower;

impl RevocationFollower {
    /// Connects (lazily) to every endpoint and follows the feed for as long as the returned
    /// [`Revocations`] live. Never waits for auth-service: until the first snapshot arrives the
    /// view is empty and not fresh.
    pub fn start(config: RevocationConfig) -> Result<Revocations, InvalidEndpoint> {
        let mut channels = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            // No request timeout: the stream is meant to last. HTTP/2 keepalives notice a dead
            // peer, and the idle timeout a silent one.
            let endpoint = crate::tls::endpoint(url, config.tls.as_ref())?
                .connect_timeout(config.connect_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(endpoint.connect_lazy());
        }
        if channels.is_empty() {
            return Err(InvalidEndpoint {
                url: String::new(),
                problem: EndpointProblem::NotAUrl,
            });
        }
        let revocations = Revocations::manual(config);
        if let Some(shared) = &revocations.shared {
            let stop = shared.fresh.subscribe();
            tokio::spawn(follow(Arc::downgrade(shared), channels, stop.clone()));
            tokio::spawn(monitor(Arc::downgrade(shared), stop));
        }
        Ok(revocations)
    }
}

/// Resolves when the [`Revocations`] are dropped (the sender inside them goes away).
async fn dropped(stop: &mut watch::Receiver<bool>) {
    while stop.changed().await.is_ok() {}
}

/// The stream loop: one replica at a time, the next after any loss, backing off while none
/// answers and resetting once one delivers its snapshot.
async fn follow(weak: Weak<Shared>, channels: Vec<Channel>, mut stop: watch::Receiver<bool>) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    let mut retry = FIRST_RETRY;
    let mut next = 0;
    loop {
        let channel = channels[next % channels.len()].clone();
        next += 1;
        let outcome = tokio::select! {
            outcome = follow_one(&weak, channel) => outcome,
            () = dropped(&mut stop) => return,
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    cursor = shared.cursor.load(Ordering::Acquire),
                    "revocation stream ended; resuming from the cursor"
                );
                retry = FIRST_RETRY;
            }
            Err(why) => {
                tracing::warn!(reason = %why, "revocation stream lost; resuming from the cursor");
            }
        }
        let max_backoff = shared.config.max_backoff;
        drop(shared);
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = dropped(&mut stop) => return,
        }
        retry = (retry * 2).min(max_backoff);
    }
}

/// Follows one stream until it ends. `Ok` once its snapshot had arrived (the replica worked),
/// `Err` with the reason otherwise or when it broke.
async fn follow_one(weak: &Weak<Shared>, channel: Channel) -> Result<(), String> {
    let (after, connect_timeout, idle_timeout) = {
        let shared = weak.upgrade().ok_or("stopped")?;
        (
            shared.cursor.load(Ordering::Acquire),
            shared.config.connect_timeout,
            shared.config.idle_timeout,
        )
    };
    let mut client = AuthServiceClient::new(channel);
    let call = client.watch_revocations(WatchRevocationsRequest { after });
    let mut stream = match tokio::time::timeout(connect_timeout, call).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => return Err("no answer in time".to_owned()),
    };
    let mut synced = false;
    let mut idle_timeout = idle_timeout;
    loop {
        let message = match tokio::time::timeout(idle_timeout, stream.message()).await {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) if synced => return Ok(()),
            Ok(Ok(None)) => return Err("ended before its snapshot".to_owned()),
            Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => return Err(format!("silent for {idle_timeout:?}")),
        };
        let Some(shared) = weak.upgrade() else {
            return Ok(());
        };
        if let Ok(millis @ 1..) = u64::try_from(message.heartbeat_millis) {
            let heartbeat = Duration::from_millis(millis);
            idle_timeout = heartbeat * 3;
            if !synced && heartbeat * 2 > shared.config.max_staleness {
                tracing::warn!(
                    ?heartbeat,
                    max_staleness = ?shared.config.max_staleness,
                    "auth-service sends revocation heartbeats too rarely for the staleness bound; \
                     the view will look stale between them"
                );
            }
        }
        if !message.snapshot || message.snapshot_done {
            if !synced {
                tracing::info!(
                    cursor = message.cursor,
                    revoked = shared.read_set().len() + message.revocations.len(),
                    "revocation snapshot received; following changes"
                );
            }
            synced = true;
        }
        Revocations {
            shared: Some(shared),
        }
        .apply(&message, synced);
    }
}

/// Drops expired revocations, keeps the health entry in step with the staleness, and warns
/// while the view is stale.
async fn monitor(shared: Weak<Shared>, mut stop: watch::Receiver<bool>) {
    let tick = {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        (shared.config.max_staleness / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    };
    let mut last_evict = Instant::now();
    let mut last_warn: Option<Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = dropped(&mut stop) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if last_evict.elapsed() >= EVICT_EVERY {
            last_evict = Instant::now();
            let evicted = shared.write_set().evict_expired(unix_now());
            if evicted > 0 {
                tracing::debug!(evicted, "forgot expired revocations");
            }
        }
        let fresh = shared.is_fresh();
        if *shared.fresh.borrow() != fresh {
            shared.fresh.send_replace(fresh);
            if fresh {
                tracing::info!("revocation view is current again");
                last_warn = None;
            }
        }
        let max = shared.config.max_staleness;
        if !fresh && last_warn.is_none_or(|at| at.elapsed() >= max) {
            last_warn = Some(Instant::now());
            let staleness = shared.staleness();
            if shared.config.fail_closed {
                tracing::warn!(
                    ?staleness,
                    "REVOCATION VIEW STALE: no update from auth-service within {max:?}; \
                     refusing tokens issued before the last good update (fail-closed)"
                );
            } else {
                tracing::warn!(
                    ?staleness,
                    "REVOCATION VIEW STALE: no update from auth-service within {max:?}; \
                     tokens revoked meanwhile are still accepted (fail-open)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::auth::v1::Revocation;
    use token::Role;

    use super::*;

    fn claims(sid: &str, iat: i64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u".into(),
            iat,
            nbf: iat,
            exp: iat + 600,
            jti: "j".into(),
            roles: vec![Role::User],
            username: "alice".into(),
            sid: Some(sid.into()),
            client_id: None,
        }
    }

    fn batch(sid: &str, cursor: i64, snapshot: bool) -> RevocationBatch {
        RevocationBatch {
            revocations: vec![Revocation {
                seq: cursor,
                subject: Some(Subject::SessionId(sid.into())),
                not_before: unix_now(),
                expires_at: unix_now() + 600,
            }],
            cursor,
            snapshot,
            snapshot_done: snapshot,
            heartbeat_millis: 0,
        }
    }

    #[test]
    fn no_feed_refuses_nothing_and_reports_nothing() {
        let none = Revocations::none();
        assert_eq!(none.check(&claims("s", 0)), Ok(()));
        assert_eq!(none.staleness(), None);
        assert!(!none.is_fresh());
    }

    #[test]
    fn a_snapshot_makes_the_view_fresh_and_its_revocations_refused() {
        let view = Revocations::manual(RevocationConfig::new(Vec::new()));
        assert!(!view.is_fresh());
        view.apply(&batch("gone", 7, true), true);
        assert!(view.is_fresh());
        assert_eq!(view.cursor(), 7);
        assert_eq!(
            view.check(&claims("gone", unix_now())),
            Err(Revoked::Revoked)
        );
        assert_eq!(view.check(&claims("kept", unix_now())), Ok(()));
        assert!(view.staleness().unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn a_snapshot_behind_the_view_sets_the_cursor_back_and_keeps_what_it_held() {
        let view = Revocations::manual(RevocationConfig::new(Vec::new()));
        view.apply(&batch("old", 8, true), true);
        // A change never moves the cursor back.
        view.apply(&batch("late", 5, false), true);
        assert_eq!(view.cursor(), 8);
        // A snapshot from a feed whose numbering started again does.
        view.apply(&batch("new", 1, true), true);
        assert_eq!(view.cursor(), 1);
        for sid in ["old", "late", "new"] {
            assert_eq!(view.check(&claims(sid, unix_now())), Err(Revoked::Revoked));
        }
    }

    #[test]
    fn failing_closed_refuses_only_tokens_from_before_the_last_good_update_once_stale() {
        let mut config = RevocationConfig::new(Vec::new());
        config.max_staleness = Duration::from_millis(50);
        config.fail_closed = true;
        let view = Revocations::manual(config);
        view.apply(&batch("gone", 1, true), true);
        let old = claims("kept", unix_now() - 5);
        assert_eq!(view.check(&old), Ok(()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!view.is_fresh());
        assert_eq!(view.check(&old), Err(Revoked::Unknown));
        assert_eq!(view.check(&claims("kept", unix_now() + 1)), Ok(()));
        // A heartbeat is a good update: fresh again.
        view.apply(
            &RevocationBatch {
                cursor: 1,
                ..Default::default()
            },
            true,
        );
        assert_eq!(view.check(&old), Ok(()));
    }
}
