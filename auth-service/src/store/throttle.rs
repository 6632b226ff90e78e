//! Throttle events shared by every replica: failed sign-ins and "taken" sign-up answers, one row
//! each, counted over sliding windows and pruned once no window covers them.

use super::{Store, StoreError, error::failed};

/// One counted event's key. `kind` is `sign-in` or `sign-up` (the migration's CHECK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleKey<'a> {
    pub kind: &'static str,
    pub subject: &'a str,
    pub client: &'a str,
}

const INSERT_EVENT: &str = "INSERT INTO throttle_events (kind, subject, client, attempt, at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, subject, client, attempt) DO NOTHING";
/// The `$5 + 1`-th most recent event of one subject from one client since `$4`.
const NTH_LATEST_FROM_CLIENT: &str = "SELECT at FROM throttle_events \
     WHERE kind = $1 AND subject = $2 AND client = $3 AND at > $4 \
     ORDER BY at DESC LIMIT 1 OFFSET $5";
/// The `$4 + 1`-th most recent event of one subject from any client since `$3`.
const NTH_LATEST: &str = "SELECT at FROM throttle_events \
     WHERE kind = $1 AND subject = $2 AND at > $3 ORDER BY at DESC LIMIT 1 OFFSET $4";
/// Up to `$5` most recent events of one subject from one client since `$4`.
const LATEST_FROM_CLIENT: &str = "SELECT at FROM throttle_events \
     WHERE kind = $1 AND subject = $2 AND client = $3 AND at > $4 ORDER BY at DESC LIMIT $5";
const DELETE_EVENT: &str = "DELETE FROM throttle_events \
     WHERE kind = $1 AND subject = $2 AND client = $3 AND attempt = $4";
const DELETE_FROM_CLIENT: &str =
    "DELETE FROM throttle_events WHERE kind = $1 AND subject = $2 AND client = $3";
const DELETE_SUBJECT: &str = "DELETE FROM throttle_events WHERE kind = $1 AND subject = $2";
/// Events older than `$1`, but those whose subject is `LIKE $2` only when older than `$3`.
const PRUNE_EVENTS: &str = "DELETE FROM throttle_events \
     WHERE at <= CASE WHEN subject LIKE $2 THEN $3 ELSE $1 END";

impl Store {
    /// Records an event unless one with the same `attempt` exists; returns whether it was new.
    pub async fn record_throttle_event(
        &self,
        key: &ThrottleKey<'_>,
        attempt: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = on_backend!(self, db => {
            sqlx::query(INSERT_EVENT)
                .bind(key.kind)
                .bind(key.subject)
                .bind(key.client)
                .bind(attempt)
                .bind(at)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to record a throttle event"))?;
        Ok(inserted == 1)
    }

    /// The time of the `n`-th most recent event (1 is the latest) after `since`, counting only
    /// `key.client`'s events when `per_client`, every client's otherwise; `None` if there are
    /// fewer than `n`.
    pub async fn nth_latest_throttle_event(
        &self,
        key: &ThrottleKey<'_>,
        per_client: bool,
        since: i64,
        n: u32,
    ) -> Result<Option<i64>, StoreError> {
        let offset = i64::from(n.max(1) - 1);
        on_backend!(self, db => {
            if per_client {
                sqlx::query_scalar::<_, i64>(NTH_LATEST_FROM_CLIENT)
                    .bind(key.kind)
                    .bind(key.subject)
                    .bind(key.client)
                    .bind(since)
                    .bind(offset)
                    .fetch_optional(&db.pool)
                    .await
            } else {
                sqlx::query_scalar::<_, i64>(NTH_LATEST)
                    .bind(key.kind)
                    .bind(key.subject)
                    .bind(since)
                    .bind(offset)
                    .fetch_optional(&db.pool)
                    .await
            }
        })
        .map_err(failed("failed to count throttle events"))
    }

    /// The times of up to `limit` most recent events of `key` (its subject from its client)
    /// after `since`, latest first: whether a limit is reached, when the oldest of them leaves
    /// the window, and whether there are any, in one read.
    pub async fn latest_throttle_events(
        &self,
        key: &ThrottleKey<'_>,
        since: i64,
        limit: u32,
    ) -> Result<Vec<i64>, StoreError> {
        on_backend!(self, db => {
            sqlx::query_scalar::<_, i64>(LATEST_FROM_CLIENT)
                .bind(key.kind)
                .bind(key.subject)
                .bind(key.client)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to count throttle events"))
    }

    /// Deletes one event, e.g. a sign-in recorded as failed whose password then matched.
    pub async fn delete_throttle_event(
        &self,
        key: &ThrottleKey<'_>,
        attempt: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => {
            sqlx::query(DELETE_EVENT)
                .bind(key.kind)
                .bind(key.subject)
                .bind(key.client)
                .bind(attempt)
                .execute(&db.pool)
                .await
                .map(drop)
        })
        .map_err(failed("failed to delete a throttle event"))
    }

    /// Deletes every event of `key.subject` from `key.client`; returns how many.
    pub async fn clear_throttle_events_from_client(
        &self,
        key: &ThrottleKey<'_>,
    ) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(DELETE_FROM_CLIENT)
                .bind(key.kind)
                .bind(key.subject)
                .bind(key.client)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to clear throttle events"))
    }

    /// Deletes every event of one subject, from every client; returns how many.
    pub async fn clear_throttle_events(
        &self,
        kind: &'static str,
        subject: &str,
    ) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(DELETE_SUBJECT)
                .bind(kind)
                .bind(subject)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to clear throttle events"))
    }

    /// Deletes events at or before `before`, those whose subject is `LIKE long_kept` only at or
    /// before `long_kept_before`; returns how many.
    pub async fn prune_throttle_events(
        &self,
        before: i64,
        long_kept: &str,
        long_kept_before: i64,
    ) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(PRUNE_EVENTS)
                .bind(before)
                .bind(long_kept)
                .bind(long_kept_before)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to prune throttle events"))
    }
}
