//! The revocation feed behind `WatchRevocations`.
//!
//! One watcher task per replica follows the revocations table: on PostgreSQL it wakes on
//! `LISTEN revocations` (every commit that revokes notifies, whichever replica made it) and
//! polls slowly as a safety net; on SQLite it polls. What it reads goes out once on a broadcast
//! channel to every stream, so a thousand followers cost one query per change, not a thousand.
//! Each stream first sends a snapshot of every revocation in force after the follower's cursor
//! (read from the database, a page at a time; from the start when that cursor is beyond every
//! number the database has handed out, because the database was replaced or restored and its
//! numbering started again: the snapshot's cursor is then lower than the follower's, and the
//! follower adopts it), then the watcher's changes, then a heartbeat (an
//! empty batch with the cursor) whenever it has been quiet for a while, but only while the
//! watcher can read the database: a follower measures how stale its view is by the time since
//! the last message, so a replica that cannot see new revocations must not claim it is current.
//! The watcher also prunes expired rows. When a read finds nothing new it checks that the
//! table's numbering has not gone back below its cursor (the database restored or failed over
//! under a running replica); if it has, it moves to a new epoch and every older stream ends, so
//! its follower resumes, is found to be ahead, and gets the whole snapshot.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use authn::{RevocationConfig, Revocations};
use proto::auth::v1 as pb;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::Status;

use crate::store::{NewRevocation, Notified, Revocation, RevocationKind, Store, StoreError};

/// Rows per snapshot page and per read of the watcher.
const PAGE: u32 = 1_000;
/// Batches the broadcast keeps for streams that fall behind; a stream further behind catches
/// up from the database.
const BACKLOG: usize = 1_024;
/// How often each replica deletes expired revocations (idempotent, so replicas may overlap).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
pub struct FeedConfig {
    /// How often the table is read when nothing woke the watcher: SQLite's only way to see
    /// other replicas' revocations, PostgreSQL's safety net behind LISTEN/NOTIFY.
    pub poll: Duration,
    /// How long a stream stays silent before it sends an empty batch.
    pub heartbeat: Duration,
}

/// The feed of one replica; cloning it is cheap.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    changes: broadcast::Sender<Arc<Change>>,
    state: watch::Receiver<WatcherState>,
    /// Set when the server begins to drain: every stream ends, so followers move to another
    /// replica instead of holding the drain open.
    stopping: watch::Sender<bool>,
    wake: Arc<Notify>,
    config: FeedConfig,
    /// The replica's own view, made by the first [`Feed::local_view`].
    view: OnceLock<Revocations>,
}

/// Revocations the watcher read, in `seq` order.
struct Change {
    revocations: Vec<Revocation>,
    cursor: i64,
}

#[derive(Clone, Copy, Debug)]
struct WatcherState {
    cursor: i64,
    /// When the watcher last read the table successfully.
    read_at: Option<Instant>,
    /// Goes up each time the watcher finds the table's numbering started again under it (the
    /// database restored or failed over while this replica ran): every stream from an earlier
    /// epoch ends, so its follower comes back and gets the whole snapshot.
    epoch: u64,
}

impl Feed {
    /// Starts the replica's watcher (and on PostgreSQL its listener) from the end of the table.
    pub async fn start(store: Arc<Store>, config: FeedConfig) -> Result<Self, StoreError> {
        let cursor = store.last_revocation_seq().await?;
        let (changes, _) = broadcast::channel(BACKLOG);
        let (state_tx, state) = watch::channel(WatcherState {
            cursor,
            read_at: Some(Instant::now()),
            epoch: 0,
        });
        let (stopping, _) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        if let Some(notifications) = store.revocation_notifications().await? {
            tokio::spawn(listen(notifications, wake.clone(), stopping.subscribe()));
        }
        tokio::spawn(watch_table(
            store.clone(),
            config.poll,
            changes.clone(),
            state_tx,
            wake.clone(),
            stopping.subscribe(),
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                changes,
                state,
                stopping,
                wake,
                config,
                view: OnceLock::new(),
            }),
        })
    }

    /// For code on this replica that has just committed these revocations: puts them in the
    /// replica's own view at once, so its next call (on any connection) already refuses the
    /// tokens, then wakes the watcher to read the table now rather than at the next poll and
    /// tell every follower (on PostgreSQL its own notification would wake it too, a moment
    /// later). The feed brings the same rows to the view again, which changes nothing.
    pub fn revoked(&self, revocations: &[NewRevocation]) {
        if let Some(view) = self.shared.view.get() {
            let batch = pb::RevocationBatch {
                revocations: revocations.iter().map(new_to_pb).collect(),
                // No position: the view's cursor moves only with what the feed delivers, so
                // a resumed stream skips nothing.
                cursor: 0,
                snapshot: false,
                snapshot_done: false,
                heartbeat_millis: 0,
            };
            // Not a sign that the view is current: only the feed can say that.
            view.apply(&batch, false);
        }
        self.shared.wake.notify_one();
    }

    /// Ends every stream and the watcher.
    pub fn stop(&self) {
        self.shared.stopping.send_replace(true);
    }

    /// This replica's own view of revocations, for the layer that checks the tokens
    /// auth-service itself is called with: fed in-process by a stream of its own feed, and at
    /// once by [`Feed::revoked`] with what this replica revokes. It stops following when the
    /// server drains. Every call returns the same view.
    pub fn local_view(&self) -> Revocations {
        self.shared
            .view
            .get_or_init(|| {
                let revocations = Revocations::manual(RevocationConfig::new(Vec::new()));
                let view = revocations.clone();
                let feed = self.clone();
                tokio::spawn(async move {
                    let mut stopping = feed.shared.stopping.subscribe();
                    // A stream also ends when the table's numbering starts again: resume, and
                    // the feed answers with the whole snapshot.
                    while !*stopping.borrow_and_update() {
                        let mut stream = feed.watch(view.cursor());
                        let mut synced = false;
                        while let Some(Ok(batch)) = stream.next().await {
                            synced |= !batch.snapshot || batch.snapshot_done;
                            view.apply(&batch, synced);
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                });
                revocations
            })
            .clone()
    }

    /// A new stream: the snapshot after `after`, then changes and heartbeats until the
    /// follower goes away or the server drains.
    pub fn watch(&self, after: i64) -> ReceiverStream<Result<pb::RevocationBatch, Status>> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve_stream(self.shared.clone(), after.max(0), tx));
        ReceiverStream::new(rx)
    }
}

/// Wakes the watcher on every notification, and after a lost connection (notifications sent
/// meanwhile are gone, so the table must be read).
async fn listen(
    mut notifications: crate::store::RevocationNotifications,
    wake: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut retry = Duration::from_millis(100);
    loop {
        let next = tokio::select! {
            next = notifications.next() => next,
            () = stopped(&mut stopping) => return,
        };
        match next {
            Ok(Notified::Revoked) => {
                retry = Duration::from_millis(100);
                wake.notify_one();
            }
            Ok(Notified::Reconnected) => {
                tracing::warn!("lost the revocations LISTEN connection; reconnecting");
                wake.notify_one();
            }
            Ok(Notified::Closed) => return,
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, "revocation notifications failed; retrying");
                wake.notify_one();
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn watch_table(
    store: Arc<Store>,
    poll: Duration,
    changes: broadcast::Sender<Arc<Change>>,
    state: watch::Sender<WatcherState>,
    wake: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut cursor = state.borrow().cursor;
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            () = stopped(&mut stopping) => return,
        }
        // Expired rows too (`now` = 0): they advance the cursor, and followers drop them.
        let read = match read_after(&store, cursor, 0).await {
            Ok(revocations) if revocations.is_empty() => match restarted(&store, cursor).await {
                Some(high_water) => Read::Restarted(high_water),
                None => Read::Rows(revocations),
            },
            Ok(revocations) => Read::Rows(revocations),
            Err(e) => Read::Failed(e),
        };
        match read {
            Read::Restarted(high_water) => {
                failing = false;
                // Only the rows numbered from now on are news: streams from the new epoch
                // start with a snapshot of what is there.
                cursor = high_water;
                state.send_modify(|s| {
                    s.cursor = cursor;
                    s.read_at = Some(Instant::now());
                    s.epoch += 1;
                });
            }
            Read::Rows(revocations) => {
                if failing {
                    tracing::info!("reading revocations again");
                    failing = false;
                }
                if let Some(last) = revocations.last() {
                    cursor = last.seq;
                    // No stream listening is fine: there is nobody to tell.
                    let _ = changes.send(Arc::new(Change {
                        revocations,
                        cursor,
                    }));
                }
                state.send_modify(|s| {
                    s.cursor = cursor;
                    s.read_at = Some(Instant::now());
                });
            }
            Read::Failed(e) => {
                if !failing {
                    tracing::warn!(error.cause_chain = ?e, "cannot read revocations; heartbeats pause until the database answers");
                    failing = true;
                }
                state.send_modify(|s| s.read_at = None);
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match store.prune_revocations(token::unix_now()).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned expired revocations"),
                Err(e) => tracing::warn!(error.cause_chain = ?e, "failed to prune revocations"),
            }
        }
    }
}

/// What one read of the watcher found.
enum Read {
    /// What committed after its cursor (nothing is news too).
    Rows(Vec<Revocation>),
    /// The numbering went back below its cursor; the table's highest number now.
    Restarted(i64),
    Failed(StoreError),
}

/// The table's highest number when it is now below `cursor`, which it once reached: the
/// database was restored or failed over to a copy that had not seen the last revocations.
async fn restarted(store: &Store, cursor: i64) -> Option<i64> {
    match store.revocation_high_water().await {
        Ok(high_water) if high_water < cursor => {
            tracing::warn!(
                cursor,
                high_water,
                "the revocations table's numbering went back (database restored or failed \
                 over): ending every stream so its follower starts over from a snapshot"
            );
            Some(high_water)
        }
        // Unreadable: the next read tries again.
        _ => None,
    }
}

/// Every revocation after `after` that is in force at `now`, read a page at a time.
async fn read_after(store: &Store, after: i64, now: i64) -> Result<Vec<Revocation>, StoreError> {
    let mut all = Vec::new();
    let mut after = after;
    loop {
        let page = store.revocations_after(after, now, PAGE).await?;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// One follower's stream. Ends (with OK) when the server drains; the follower resumes
/// elsewhere from its cursor.
async fn serve_stream(
    shared: Arc<Shared>,
    after: i64,
    tx: mpsc::Sender<Result<pb::RevocationBatch, Status>>,
) {
    // Subscribe before reading the snapshot: whatever commits meanwhile arrives on `changes`
    // (and is skipped if the snapshot already had it), so nothing falls between the two.
    let mut changes = shared.changes.subscribe();
    let (watcher_cursor, epoch) = {
        let state = shared.state.borrow();
        (state.cursor, state.epoch)
    };
    let mut stopping = shared.stopping.subscribe();
    // A cursor beyond every number this database has handed out was not given by this feed:
    // the database was replaced or restored since, and its numbering started again below the
    // follower's. Resuming there would skip every revocation numbered up to it, so the
    // follower gets the whole snapshot and, on its pages, this feed's own cursor to adopt.
    let high_water = match shared.store.revocation_high_water().await {
        Ok(high_water) => high_water,
        Err(e) => {
            tracing::warn!(error.cause_chain = ?e, "cannot read the revocation snapshot");
            let _ = tx.send(Err(snapshot_failed(&e))).await;
            return;
        }
    };
    let mut cursor = if after > high_water {
        tracing::warn!(
            after,
            high_water,
            "a follower resumes beyond this feed's highest revocation number (the database \
             was replaced or restored): sending it the whole snapshot"
        );
        0
    } else {
        after
    };
    loop {
        let page = match shared
            .store
            .revocations_after(cursor, token::unix_now(), PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, "cannot read the revocation snapshot");
                let _ = tx.send(Err(snapshot_failed(&e))).await;
                return;
            }
        };
        let done = page.len() < PAGE as usize;
        if let Some(last) = page.last() {
            cursor = last.seq;
        }
        if done {
            // Rows the watcher had read but the snapshot did not return have expired.
            cursor = cursor.max(watcher_cursor);
        }
        let batch = pb::RevocationBatch {
            revocations: page.iter().map(to_pb).collect(),
            cursor,
            snapshot: true,
            snapshot_done: done,
            heartbeat_millis: i64::try_from(shared.config.heartbeat.as_millis())
                .unwrap_or(i64::MAX),
        };
        if !send(&tx, &mut stopping, batch).await {
            return;
        }
        if done {
            break;
        }
    }

    let heartbeat = shared.config.heartbeat;
    // A watcher read older than this means the replica cannot see new revocations.
    let fresh_within = shared.config.poll * 2 + Duration::from_secs(1);
    let mut quiet = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        if shared.state.borrow().epoch != epoch {
            // The numbering this stream's cursor belongs to is gone; the follower resumes
            // with it and the feed answers with the whole snapshot.
            return;
        }
        let batch = tokio::select! {
            () = stopped(&mut stopping) => return,
            _ = tx.closed() => return,
            change = changes.recv() => match change {
                Ok(change) if change.cursor > cursor => {
                    let revocations = change
                        .revocations
                        .iter()
                        .filter(|r| r.seq > cursor)
                        .map(to_pb)
                        .collect();
                    cursor = change.cursor;
                    changes_batch(revocations, cursor)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a revocation stream fell behind; catching up from the database");
                    match read_after(&shared.store, cursor, token::unix_now()).await {
                        Ok(revocations) => {
                            // Later batches still in the backlog skip what this read sent.
                            cursor = revocations.last().map_or(cursor, |r| r.seq).max(cursor);
                            changes_batch(revocations.iter().map(to_pb).collect(), cursor)
                        }
                        Err(e) => {
                            let _ = tx.send(Err(snapshot_failed(&e))).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = quiet.tick() => {
                let fresh = shared
                    .state
                    .borrow()
                    .read_at
                    .is_some_and(|at| at.elapsed() < fresh_within);
                if !fresh {
                    continue;
                }
                changes_batch(Vec::new(), cursor)
            }
        };
        if !send(&tx, &mut stopping, batch).await {
            return;
        }
        quiet.reset();
    }
}

fn changes_batch(revocations: Vec<pb::Revocation>, cursor: i64) -> pb::RevocationBatch {
    pb::RevocationBatch {
        revocations,
        cursor,
        snapshot: false,
        snapshot_done: false,
        heartbeat_millis: 0,
    }
}

/// Sends unless the follower has gone or the server drains; `false` ends the stream.
async fn send(
    tx: &mpsc::Sender<Result<pb::RevocationBatch, Status>>,
    stopping: &mut watch::Receiver<bool>,
    batch: pb::RevocationBatch,
) -> bool {
    tokio::select! {
        sent = tx.send(Ok(batch)) => sent.is_ok(),
        () = stopped(stopping) => false,
    }
}

/// Resolves once the server drains (or the feed is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = stopping.wait_for(|s| *s).await;
}

fn snapshot_failed(e: &StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) => {
            Status::unavailable("the database is unavailable; retry shortly")
        }
        _ => Status::internal("internal error"),
    }
}

fn to_pb(revocation: &Revocation) -> pb::Revocation {
    pb::Revocation {
        seq: revocation.seq,
        subject: Some(subject(revocation.kind, &revocation.subject)),
        not_before: revocation.not_before,
        expires_at: revocation.expires_at,
    }
}

/// A revocation just written, whose `seq` only the table knows.
fn new_to_pb(revocation: &NewRevocation) -> pb::Revocation {
    pb::Revocation {
        seq: 0,
        subject: Some(subject(revocation.kind, &revocation.subject)),
        not_before: revocation.not_before,
        expires_at: revocation.expires_at,
    }
}

fn subject(kind: RevocationKind, subject: &str) -> pb::revocation::Subject {
    use pb::revocation::Subject;
    match kind {
        RevocationKind::Session => Subject::SessionId(subject.to_owned()),
        RevocationKind::User => Subject::UserId(subject.to_owned()),
    }
}
