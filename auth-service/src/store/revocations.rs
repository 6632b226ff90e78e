//! Revoked sessions and users: written when access ends, read by the revocation feed.

use super::{Store, StoreError, error::failed};

/// What a revocation voids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationKind {
    /// Every token of one session (`subject` is the session id).
    Session,
    /// Every token of one user issued at or before `not_before` (`subject` is the user id).
    User,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
        }
    }
}

/// A revocation to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRevocation {
    pub kind: RevocationKind,
    pub subject: String,
    /// Unix seconds. For a user: tokens with `iat <= not_before` are refused. For a session: when
    /// it was revoked.
    pub not_before: i64,
    /// Unix seconds after which no access token this covers can be valid; the row is pruned then.
    pub expires_at: i64,
}

/// A recorded revocation, with its place in the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub seq: i64,
    pub kind: RevocationKind,
    pub subject: String,
    pub not_before: i64,
    pub expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct RevocationRow {
    seq: i64,
    kind: String,
    subject: String,
    not_before: i64,
    expires_at: i64,
}

impl TryFrom<RevocationRow> for Revocation {
    type Error = StoreError;

    fn try_from(row: RevocationRow) -> Result<Self, StoreError> {
        let kind = match row.kind.as_str() {
            "session" => RevocationKind::Session,
            "user" => RevocationKind::User,
            other => {
                return Err(StoreError::Unexpected(anyhow::anyhow!(
                    "stored revocation kind {other:?} is unknown"
                )));
            }
        };
        Ok(Self {
            seq: row.seq,
            kind,
            subject: row.subject,
            not_before: row.not_before,
            expires_at: row.expires_at,
        })
    }
}

/// PostgreSQL channel that carries the highest new `seq` after each commit that revokes.
pub const REVOCATIONS_CHANNEL: &str = "revocations";
/// Serialises writers on PostgreSQL so `seq` order is commit order (any constant key will do;
/// this one spells "revoke").
const REVOCATIONS_LOCK: i64 = 0x7265_766f_6b65;

const INSERT_REVOCATION: &str = "INSERT INTO revocations (kind, subject, not_before, expires_at) \
     VALUES ($1, $2, $3, $4) RETURNING seq";
const SELECT_REVOCATIONS_AFTER: &str = "SELECT seq, kind, subject, not_before, expires_at \
     FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3";
const LAST_REVOCATION_SEQ: &str = "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM revocations";
/// The highest `seq` the table has handed out, pruned or not (AUTOINCREMENT keeps it in
/// `sqlite_sequence`; PostgreSQL in the column's sequence).
const SQLITE_REVOCATION_HIGH_WATER: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revocations'), 0)";
const POSTGRES_REVOCATION_HIGH_WATER: &str = "SELECT COALESCE(pg_sequence_last_value(\
     CAST(pg_get_serial_sequence('revocations', 'seq') AS regclass)), 0)";
const PRUNE_REVOCATIONS: &str = "DELETE FROM revocations WHERE expires_at <= $1";

impl Store {
    /// Records `revocations` in one transaction and returns the last `seq` written. On
    /// PostgreSQL the commit notifies [`REVOCATIONS_CHANNEL`] with that `seq`.
    pub async fn insert_revocations(
        &self,
        revocations: &[NewRevocation],
    ) -> Result<i64, StoreError> {
        let mut last = 0;
        match self {
            Store::Postgres(db) => {
                let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(REVOCATIONS_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed("failed to lock revocations"))?;
                for revocation in revocations {
                    last = sqlx::query_scalar(INSERT_REVOCATION)
                        .bind(revocation.kind.as_str())
                        .bind(&revocation.subject)
                        .bind(revocation.not_before)
                        .bind(revocation.expires_at)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(failed("failed to insert revocation"))?;
                }
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(REVOCATIONS_CHANNEL)
                    .bind(last.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(failed("failed to notify revocations"))?;
                tx.commit()
                    .await
                    .map_err(failed("failed to commit revocations"))?;
            }
            Store::Sqlite(db) => {
                let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
                for revocation in revocations {
                    last = sqlx::query_scalar(INSERT_REVOCATION)
                        .bind(revocation.kind.as_str())
                        .bind(&revocation.subject)
                        .bind(revocation.not_before)
                        .bind(revocation.expires_at)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(failed("failed to insert revocation"))?;
                }
                tx.commit()
                    .await
                    .map_err(failed("failed to commit revocations"))?;
            }
        }
        Ok(last)
    }

    /// Up to `limit` revocations with `seq > after` that are still in force at `now`, in `seq`
    /// order. `after = 0` reads from the start: the snapshot.
    pub async fn revocations_after(
        &self,
        after: i64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = on_backend!(self, db => {
            sqlx::query_as::<_, RevocationRow>(SELECT_REVOCATIONS_AFTER)
                .bind(after)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to read revocations"))?;
        rows.into_iter().map(Revocation::try_from).collect()
    }

    /// The highest `seq` ever handed out that is still stored (0 when there is none).
    pub async fn last_revocation_seq(&self) -> Result<i64, StoreError> {
        on_backend!(self, db => {
            sqlx::query_scalar::<_, i64>(LAST_REVOCATION_SEQ)
                .fetch_one(&db.pool)
                .await
        })
        .map_err(failed("failed to read the last revocation"))
    }

    /// The highest `seq` ever handed out, even if its row has been pruned since (0 before the
    /// first). No cursor this database gave out is greater: a greater one comes from another
    /// numbering (the database was replaced or restored from a backup).
    pub async fn revocation_high_water(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(db) => {
                sqlx::query_scalar::<_, i64>(SQLITE_REVOCATION_HIGH_WATER)
                    .fetch_one(&db.pool)
                    .await
            }
            Store::Postgres(db) => {
                sqlx::query_scalar::<_, i64>(POSTGRES_REVOCATION_HIGH_WATER)
                    .fetch_one(&db.pool)
                    .await
            }
        }
        .map_err(failed("failed to read the highest revocation number"))
    }

    /// Deletes revocations that no longer cover any valid token; returns how many.
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(PRUNE_REVOCATIONS)
                .bind(now)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to prune revocations"))
    }
}

/// What [`RevocationNotifications::next`] saw.
#[derive(Debug)]
pub enum Notified {
    /// A commit notified [`REVOCATIONS_CHANNEL`].
    Revoked,
    /// The listening connection was lost and is being re-established: notifications may have
    /// been missed, so read the table.
    Reconnected,
    /// The store was closed; nothing more will come.
    Closed,
}

/// PostgreSQL's `LISTEN revocations` on a connection of its own, reconnecting when lost. It
/// lives until dropped (closing the store does not end it).
pub struct RevocationNotifications(sqlx::postgres::PgListener);

impl RevocationNotifications {
    pub async fn next(&mut self) -> Result<Notified, StoreError> {
        match self.0.try_recv().await {
            Ok(Some(_)) => Ok(Notified::Revoked),
            Ok(None) => Ok(Notified::Reconnected),
            Err(sqlx::Error::PoolClosed) => Ok(Notified::Closed),
            Err(e) => Err(failed("failed to wait for revocation notifications")(e)),
        }
    }
}

impl Store {
    /// Listens for committed revocations; `None` on SQLite, which has no notifications and is
    /// polled instead.
    pub async fn revocation_notifications(
        &self,
    ) -> Result<Option<RevocationNotifications>, StoreError> {
        let Store::Postgres(db) = self else {
            return Ok(None);
        };
        // A pool of its own: the listener holds its connection for good, which must not cost
        // the request path one of its (perhaps very few) connections.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*db.pool.connect_options()).clone())
            .await
            .map_err(failed("failed to connect the revocations listener"))?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .map_err(failed("failed to open the revocations listener"))?;
        listener
            .listen(REVOCATIONS_CHANNEL)
            .await
            .map_err(failed("failed to listen for revocations"))?;
        Ok(Some(RevocationNotifications(listener)))
    }
}
