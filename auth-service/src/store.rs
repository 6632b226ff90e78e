//! Persistence behind one interface, implemented for SQLite (the embedded default) and
//! PostgreSQL (shared by replicas). Both pass the same test suite (`tests/api/store.rs`).

mod postgres;
mod sqlite;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;

pub use self::{postgres::PgStore, sqlite::SqliteStore};
use crate::domain::{NewUser, User, UserId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// An account with its password hash, for sign-in only.
#[derive(Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password_hash", &"[REDACTED]")
            .finish()
    }
}

/// A signing key as stored: the private half sealed (or not) according to `encryption`.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub generation: i64,
    pub algorithm: String,
    pub encryption: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("algorithm", &self.algorithm)
            .field("encryption", &self.encryption)
            .field("private_key", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts the user and its roles in one transaction. Uniqueness of username and email
    /// (both case-insensitive) is decided by the database's unique indexes.
    async fn insert_user(&self, user: &NewUser) -> Result<User, StoreError>;

    /// The account whose username or email equals `login`, ignoring case.
    async fn find_credentials(&self, login: &str) -> Result<Option<Credentials>, StoreError>;

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Up to `limit` users with ids greater than `after`, in id (creation) order.
    async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>, StoreError>;

    /// Replaces the user's roles in one transaction; `None` if there is no such user.
    async fn set_roles(
        &self,
        id: UserId,
        roles: &[token::Role],
    ) -> Result<Option<User>, StoreError>;

    /// Every signing key, newest generation first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Inserts the key unless one with its generation exists; returns whether it was inserted.
    async fn insert_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store named by `url` (`sqlite:…`, `postgres://…`) and applies the embedded
/// migrations (safe when several replicas start at once).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::open(url, max_connections).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::open(url, max_connections).await?)
    } else {
        anyhow::bail!("database URL must start with sqlite:, postgres:// or postgresql://")
    };
    Ok(store)
}

/// The same SQL on both databases.
pub(crate) const SELECT_SIGNING_KEYS: &str = "SELECT kid, generation, algorithm, encryption, private_key, created_at \
     FROM signing_keys ORDER BY generation DESC";
pub(crate) const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys \
     (kid, generation, algorithm, encryption, private_key, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (generation) DO NOTHING";

/// How long a request waits for a pooled connection before failing as unavailable.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Maps a unique-index violation to the field it protects.
pub(crate) fn unique_violation(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        // PostgreSQL names the constraint; SQLite names the index in its message.
        let name = db
            .constraint()
            .map(str::to_owned)
            .unwrap_or_else(|| db.message().to_owned());
        if name.contains("users_email_key") {
            return StoreError::EmailTaken;
        }
        if name.contains("users_username_key") {
            return StoreError::UsernameTaken;
        }
    }
    StoreError::Unexpected(anyhow::Error::new(error).context("failed to insert user"))
}

pub(crate) fn parse_roles(names: &[String]) -> anyhow::Result<Vec<token::Role>> {
    let mut roles = names
        .iter()
        .map(|n| n.parse::<token::Role>())
        .collect::<Result<Vec<_>, _>>()
        .context("stored role is not known")?;
    roles.sort();
    Ok(roles)
}
