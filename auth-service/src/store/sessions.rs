//! Sessions (one per sign-in) and their refresh tokens, stored as hashes; accounts' disabled
//! flag and password, which end sessions when they change.

use anyhow::Context;
use uuid::Uuid;

use super::{Store, StoreError, User, error::failed};
use crate::domain::UserId;

/// A session about to be stored.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: String,
    pub user_id: UserId,
    /// SHA-256 of the refresh token handed out with it.
    pub token_hash: Vec<u8>,
    pub created_at: i64,
    /// The idle limit, never after `absolute_expires_at`.
    pub expires_at: i64,
    pub absolute_expires_at: i64,
    pub client_address: String,
    pub user_agent: String,
}

/// A stored session, as listed to its user (nothing secret).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub client_address: String,
    pub user_agent: String,
}

/// What a refresh writes when the parent is the session's current token.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub now: i64,
    /// Seconds a retry of the parent still gets the same child.
    pub grace: i64,
    /// Seconds of idleness after which the session ends.
    pub idle: i64,
    pub child_hash: Vec<u8>,
    /// The child, sealed under a key derived from the parent: a retry of the parent opens it.
    pub sealed_child: Vec<u8>,
    /// Where the session is used from now; empty keeps what was stored.
    pub client_address: String,
    /// Empty keeps what was stored.
    pub user_agent: String,
}

/// What spending a refresh token came to.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The parent was current: the rotation was written. `expires_at` is the child's limit.
    Rotated {
        session_id: String,
        user_id: UserId,
        expires_at: i64,
    },
    /// The parent was spent within the grace window: hand out the same child again.
    Retried {
        session_id: String,
        user_id: UserId,
        sealed_child: Vec<u8>,
        expires_at: i64,
    },
    /// A spent token came back after the grace window: nothing was written; the caller ends
    /// the session.
    Reused { session_id: String, user_id: UserId },
    /// Unknown, spent within the grace window but superseded since, expired, or the user is
    /// disabled.
    Refused,
}

#[derive(sqlx::FromRow)]
struct SpendRow {
    id: String,
    user_id: String,
    token_hash: Vec<u8>,
    sealed_child: Option<Vec<u8>>,
    previous_hash: Option<Vec<u8>>,
    rotated_at: Option<i64>,
    expires_at: i64,
    absolute_expires_at: i64,
    disabled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct SpentRow {
    session_id: String,
    user_id: String,
    spent_at: i64,
}

const INSERT_SESSION: &str = "INSERT INTO sessions (id, user_id, token_hash, created_at, \
     last_used_at, expires_at, absolute_expires_at, client_address, user_agent) \
     VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)";
/// A write before the read: on PostgreSQL it locks the row (a racing refresh waits, then sees
/// the rotation), on SQLite it takes the database's write lock, so the read below is current.
const LOCK_SESSION_BY_TOKEN: &str = "UPDATE sessions SET last_used_at = last_used_at \
     WHERE token_hash = $1 OR previous_hash = $1";
const SELECT_SESSION_BY_TOKEN: &str = "SELECT s.id, CAST(s.user_id AS TEXT) AS user_id, \
     s.token_hash, s.sealed_child, s.previous_hash, s.rotated_at, s.expires_at, \
     s.absolute_expires_at, u.disabled_at FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.token_hash = $1 OR s.previous_hash = $1";
const SELECT_SPENT: &str = "SELECT t.session_id, CAST(s.user_id AS TEXT) AS user_id, t.spent_at \
     FROM spent_refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1";
const INSERT_SPENT: &str = "INSERT INTO spent_refresh_tokens (token_hash, session_id, spent_at) \
     VALUES ($1, $2, $3) ON CONFLICT (token_hash) DO NOTHING";
const ROTATE: &str = "UPDATE sessions SET previous_hash = token_hash, token_hash = $1, \
     sealed_child = $2, rotated_at = $3, last_used_at = $3, expires_at = $4, \
     client_address = CASE WHEN $5 = '' THEN client_address ELSE $5 END, \
     user_agent = CASE WHEN $6 = '' THEN user_agent ELSE $6 END WHERE id = $7";
const TOUCH: &str = "UPDATE sessions SET last_used_at = $1 WHERE id = $2";
const SESSION_COLUMNS: &str =
    "id, created_at, last_used_at, expires_at, client_address, user_agent";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = $1";
const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
const PRUNE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
pub(super) const SET_DISABLED: &str = "UPDATE users SET disabled_at = $1 WHERE id = $2";
const SELECT_PASSWORD_HASH: &str = "SELECT password_hash FROM users WHERE id = $1";
const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $1 WHERE id = $2";
const IS_REVOKED: &str = "SELECT 1 FROM revocations WHERE expires_at > $4 AND \
     ((kind = 'session' AND subject = $1) OR (kind = 'user' AND subject = $2 AND not_before >= $3)) \
     LIMIT 1";

fn user_id(text: &str) -> Result<UserId, StoreError> {
    Ok(UserId(
        Uuid::parse_str(text).context("stored user id is not a UUID")?,
    ))
}

impl Store {
    pub async fn insert_session(&self, session: &NewSession) -> Result<(), StoreError> {
        on_backend!(self, db => {
            sqlx::query(INSERT_SESSION)
                .bind(&session.id)
                .bind(db.id(session.user_id))
                .bind(&session.token_hash)
                .bind(session.created_at)
                .bind(session.expires_at)
                .bind(session.absolute_expires_at)
                .bind(&session.client_address)
                .bind(&session.user_agent)
                .execute(&db.pool)
                .await
                .map(drop)
        })
        .map_err(failed("failed to insert session"))
    }

    /// Spends the refresh token whose hash is `parent`, in one transaction that replicas racing
    /// on the same token serialise on: exactly one rotates, the others see its rotation and get
    /// its child (within the grace window).
    pub async fn refresh_session(
        &self,
        parent: &[u8],
        rotation: &Rotation,
    ) -> Result<RefreshOutcome, StoreError> {
        let now = rotation.now;
        on_backend!(self, db => {
            let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
            sqlx::query(LOCK_SESSION_BY_TOKEN)
                .bind(parent)
                .execute(&mut *tx)
                .await
                .map_err(failed("failed to lock session"))?;
            let row = sqlx::query_as::<_, SpendRow>(SELECT_SESSION_BY_TOKEN)
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed("failed to look up session"))?;
            let Some(row) = row else {
                let spent = sqlx::query_as::<_, SpentRow>(SELECT_SPENT)
                    .bind(parent)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed("failed to look up spent refresh token"))?;
                return match spent {
                    Some(spent) if now - spent.spent_at > rotation.grace => {
                        Ok(RefreshOutcome::Reused {
                            session_id: spent.session_id,
                            user_id: user_id(&spent.user_id)?,
                        })
                    }
                    _ => Ok(RefreshOutcome::Refused),
                };
            };
            let live = row.expires_at > now && row.absolute_expires_at > now;
            if !live || row.disabled_at.is_some() {
                return Ok(RefreshOutcome::Refused);
            }
            let user = user_id(&row.user_id)?;
            if row.token_hash != parent {
                // The parent is the previous token: a retry, or a reuse after the window.
                let rotated_at = row.rotated_at.unwrap_or(i64::MIN);
                return match row.sealed_child {
                    Some(sealed_child) if now - rotated_at <= rotation.grace => {
                        sqlx::query(TOUCH)
                            .bind(now)
                            .bind(&row.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(failed("failed to touch session"))?;
                        tx.commit().await.map_err(failed("failed to commit refresh"))?;
                        Ok(RefreshOutcome::Retried {
                            session_id: row.id,
                            user_id: user,
                            sealed_child,
                            expires_at: row.expires_at,
                        })
                    }
                    _ => Ok(RefreshOutcome::Reused { session_id: row.id, user_id: user }),
                };
            }
            if let (Some(previous), Some(rotated_at)) = (&row.previous_hash, row.rotated_at) {
                sqlx::query(INSERT_SPENT)
                    .bind(previous)
                    .bind(&row.id)
                    .bind(rotated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed("failed to record spent refresh token"))?;
            }
            let expires_at = (now + rotation.idle).min(row.absolute_expires_at);
            sqlx::query(ROTATE)
                .bind(&rotation.child_hash)
                .bind(&rotation.sealed_child)
                .bind(now)
                .bind(expires_at)
                .bind(&rotation.client_address)
                .bind(&rotation.user_agent)
                .bind(&row.id)
                .execute(&mut *tx)
                .await
                .map_err(failed("failed to rotate refresh token"))?;
            tx.commit().await.map_err(failed("failed to commit refresh"))?;
            Ok(RefreshOutcome::Rotated { session_id: row.id, user_id: user, expires_at })
        })
    }

    /// The session whose current or previous refresh token hashes to `hash`, with its user.
    pub async fn find_session_by_token(
        &self,
        hash: &[u8],
    ) -> Result<Option<(String, UserId)>, StoreError> {
        self.session_row_by_token(hash)
            .await?
            .map(|row| Ok((row.id.clone(), user_id(&row.user_id)?)))
            .transpose()
    }

    /// Like [`Store::find_session_by_token`], but only while the token still works at `now`: the
    /// current token of a session that has not expired, or the previous one within `grace`
    /// seconds of its rotation (a retry), and the user not disabled.
    pub async fn find_live_session_by_token(
        &self,
        hash: &[u8],
        now: i64,
        grace: i64,
    ) -> Result<Option<(String, UserId)>, StoreError> {
        let Some(row) = self.session_row_by_token(hash).await? else {
            return Ok(None);
        };
        let current = row.token_hash == hash
            || row
                .rotated_at
                .is_some_and(|rotated_at| now - rotated_at <= grace);
        let live = current
            && row.expires_at > now
            && row.absolute_expires_at > now
            && row.disabled_at.is_none();
        if !live {
            return Ok(None);
        }
        Ok(Some((row.id.clone(), user_id(&row.user_id)?)))
    }

    async fn session_row_by_token(&self, hash: &[u8]) -> Result<Option<SpendRow>, StoreError> {
        on_backend!(self, db => {
            sqlx::query_as::<_, SpendRow>(SELECT_SESSION_BY_TOKEN)
                .bind(hash)
                .fetch_optional(&db.pool)
                .await
        })
        .map_err(failed("failed to look up session"))
    }

    /// The user's sessions that are still live at `now`, most recently used first.
    pub async fn list_sessions(&self, user: UserId, now: i64) -> Result<Vec<Session>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2 \
             AND absolute_expires_at > $2 ORDER BY last_used_at DESC, created_at DESC, id"
        );
        on_backend!(self, db => {
            sqlx::query_as::<_, Session>(&sql)
                .bind(db.id(user))
                .bind(now)
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to list sessions"))
    }

    /// Every stored session of the user (live or not), oldest first.
    pub async fn user_sessions_oldest_first(
        &self,
        user: UserId,
    ) -> Result<Vec<Session>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at, id"
        );
        on_backend!(self, db => {
            sqlx::query_as::<_, Session>(&sql)
                .bind(db.id(user))
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to list sessions"))
    }

    /// Deletes these sessions (their spent tokens go with them); returns how many existed.
    pub async fn delete_sessions(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for id in ids {
            deleted += on_backend!(self, db => {
                sqlx::query(DELETE_SESSION)
                    .bind(id)
                    .execute(&db.pool)
                    .await
                    .map(|done| done.rows_affected())
            })
            .map_err(failed("failed to delete session"))?;
        }
        Ok(deleted)
    }

    /// Deletes every session of the user; returns how many.
    pub async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(DELETE_USER_SESSIONS)
                .bind(db.id(user))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to delete sessions"))
    }

    /// Deletes sessions past their idle or absolute limit (the idle limit never exceeds the
    /// absolute one); returns how many.
    pub async fn prune_sessions(&self, now: i64) -> Result<u64, StoreError> {
        on_backend!(self, db => {
            sqlx::query(PRUNE_SESSIONS)
                .bind(now)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to prune sessions"))
    }

    /// Disables the user from `disabled_at`, or enables with `None`; `None` if no such user.
    /// Admin calls go through [`Store::change_as_admin`], which also keeps an enabled admin.
    pub async fn set_disabled(
        &self,
        user: UserId,
        disabled_at: Option<i64>,
    ) -> Result<Option<User>, StoreError> {
        let changed = on_backend!(self, db => {
            sqlx::query(SET_DISABLED)
                .bind(disabled_at)
                .bind(db.id(user))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to disable user"))?;
        if changed == 0 {
            return Ok(None);
        }
        self.find_user(user).await
    }

    pub async fn password_hash(&self, user: UserId) -> Result<Option<String>, StoreError> {
        on_backend!(self, db => {
            sqlx::query_scalar::<_, String>(SELECT_PASSWORD_HASH)
                .bind(db.id(user))
                .fetch_optional(&db.pool)
                .await
        })
        .map_err(failed("failed to read password hash"))
    }

    /// Replaces the password hash; returns whether the user exists.
    pub async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<bool, StoreError> {
        let changed = on_backend!(self, db => {
            sqlx::query(SET_PASSWORD_HASH)
                .bind(hash)
                .bind(db.id(user))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to set password hash"))?;
        Ok(changed == 1)
    }

    /// Whether a token of `user` issued at `iat` (in session `sid`, if any) is revoked at `now`.
    pub async fn is_revoked(
        &self,
        sid: Option<&str>,
        user: &str,
        iat: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => {
            sqlx::query(IS_REVOKED)
                // No session has an empty id, so a token without one matches no session row.
                .bind(sid.unwrap_or_default())
                .bind(user)
                .bind(iat)
                .bind(now)
                .fetch_optional(&db.pool)
                .await
                .map(|row| row.is_some())
        })
        .map_err(failed("failed to read revocations"))
    }
}
