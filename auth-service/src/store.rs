//! Persistence for accounts and signing keys, on SQLite (the embedded default) or PostgreSQL
//! (shared by replicas). The SQL, the row mapping and the error classification are written once
//! here; `store/sqlite.rs` and `store/postgres.rs` hold only what differs: how to connect, the
//! migrations, and how an id is encoded. Both pass the same suite (`tests/api/store.rs`).

mod error;
mod postgres;
mod rows;
mod sqlite;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, Database, Encode, Executor, IntoArguments, Transaction, Type,
    migrate::{Migrate, Migrator},
    pool::PoolOptions,
};
use token::Role;
use uuid::Uuid;

pub use self::{
    admins::{AdminChange, AdminChangeOutcome},
    error::StoreError,
    postgres::PgStore,
    revocations::{
        NewRevocation, Notified, REVOCATIONS_CHANNEL, Revocation, RevocationKind,
        RevocationNotifications,
    },
    sessions::{NewSession, RefreshOutcome, Rotation, Session},
    sqlite::SqliteStore,
    throttle::ThrottleKey,
};
use self::{
    error::{failed, insert_user_failed},
    rows::{CredentialsRow, UserRow},
};
use crate::domain::{ClientId, NewUser, User, UserId};

/// An id stored as a UUID (PostgreSQL) or its text (SQLite): users' and service accounts'.
pub(crate) trait StoredId {
    fn uuid(self) -> Uuid;
}

impl StoredId for UserId {
    fn uuid(self) -> Uuid {
        self.0
    }
}

impl StoredId for ClientId {
    fn uuid(self) -> Uuid {
        self.0
    }
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
    /// Unix seconds from which this key signs (it is published as soon as it is stored).
    pub activates_at: i64,
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
            .field("activates_at", &self.activates_at)
            .finish()
    }
}

/// The database the service was configured with. An enum rather than a trait object: there
/// are exactly two, and each call is written once and dispatched with `on_backend!`.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$db` bound to the store's backend (its `pool` and its `id` encoding).
/// The body is compiled once per database, so the SQL and its binds cannot drift apart.
macro_rules! on_backend {
    ($store:expr, $db:ident => $body:expr) => {
        match $store {
            Store::Sqlite($db) => $body,
            Store::Postgres($db) => $body,
        }
    };
}

// After the macro, so the modules can use it.
mod admins;
mod revocations;
mod service_accounts;
mod sessions;
mod throttle;

/// Opens the store named by `url` (`sqlite:…`, `postgres://…`) and applies the embedded
/// migrations (safe when several replicas start at once).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Arc<Store>> {
    let store = if url.starts_with("sqlite:") {
        Store::Sqlite(SqliteStore::open(url, max_connections).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Store::Postgres(PgStore::open(url, max_connections).await?)
    } else {
        anyhow::bail!("database URL must start with sqlite:, postgres:// or postgresql://")
    };
    Ok(Arc::new(store))
}

/// How long a request waits for a pooled connection before failing as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool with the settings both databases share and applies the backend's migrations.
/// Migrations a newer version applied are tolerated (not refused as missing), so replicas of two
/// adjacent versions can run side by side during a rolling upgrade or a rollback.
async fn open_pool<DB>(
    options: <DB::Connection as Connection>::Options,
    max_connections: u32,
    mut migrator: Migrator,
) -> anyhow::Result<database::MeteredPool<DB>>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let pool = PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("failed to connect to the database")?;
    // Every query, the migrations' included, gets its connection through the metered pool.
    let pool = database::MeteredPool::new(pool);
    migrator.set_ignore_missing(true);
    migrator
        .run(&pool)
        .await
        .context("failed to apply the database migrations")?;
    Ok(pool)
}

// One SQL text per query for both databases: sqlx binds `$N` by number on SQLite too, and the
// bundled SQLite has `string_agg`. Ids are read back as text, the one form both can return.
/// Roles come back as one comma-separated column so a user is one row.
const USER_COLUMNS: &str = "CAST(u.id AS TEXT) AS id, u.username, u.email, u.created_at, \
     u.disabled_at, (SELECT string_agg(role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles";
const INSERT_USER: &str = "INSERT INTO users (id, username, email, password_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5)";
const INSERT_ROLE: &str = "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) \
     ON CONFLICT (user_id, role) DO NOTHING";
const DELETE_ROLES: &str = "DELETE FROM user_roles WHERE user_id = $1";
const USER_EXISTS: &str = "SELECT 1 FROM users WHERE id = $1";
const SELECT_SIGNING_KEYS: &str = "SELECT kid, generation, algorithm, encryption, private_key, \
     created_at, activates_at FROM signing_keys ORDER BY generation DESC";
const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys \
     (kid, generation, algorithm, encryption, private_key, created_at, activates_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (generation) DO NOTHING";
const DELETE_SIGNING_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";
/// Compares the old private half so a replica re-sealing at the same time cannot be overwritten.
const RESEAL_SIGNING_KEY: &str = "UPDATE signing_keys SET encryption = $1, private_key = $2 \
     WHERE kid = $3 AND private_key = $4";

fn find_credentials_sql() -> String {
    format!(
        "SELECT {USER_COLUMNS}, u.password_hash FROM users u \
         WHERE lower(u.username) = lower($1) OR lower(u.email) = lower($1) LIMIT 1"
    )
}

fn find_user_sql() -> String {
    format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1")
}

fn list_users_sql() -> String {
    format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id > $1 ORDER BY u.id LIMIT $2")
}

impl Store {
    /// Inserts the user and its roles in one transaction. Uniqueness of username and email
    /// (both case-insensitive) is decided by the database's unique indexes.
    pub async fn insert_user(&self, user: &NewUser) -> Result<User, StoreError> {
        on_backend!(self, db => {
            let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
            sqlx::query(INSERT_USER)
                .bind(db.id(user.id))
                .bind(user.username.as_ref())
                .bind(user.email.as_ref())
                .bind(&user.password_hash)
                .bind(user.created_at)
                .execute(&mut *tx)
                .await
                .map_err(insert_user_failed)?;
            insert_roles(&mut tx, INSERT_ROLE, db.id(user.id), &user.roles).await?;
            tx.commit().await.map_err(failed("failed to commit user"))?;
        });
        let mut roles = user.roles.clone();
        roles.sort();
        Ok(User {
            id: user.id,
            username: user.username.to_string(),
            email: user.email.to_string(),
            roles,
            created_at: user.created_at,
            disabled: false,
        })
    }

    /// The account whose username or email equals `login`, ignoring case.
    pub async fn find_credentials(&self, login: &str) -> Result<Option<Credentials>, StoreError> {
        let sql = find_credentials_sql();
        let row = on_backend!(self, db => {
            sqlx::query_as::<_, CredentialsRow>(&sql)
                .bind(login)
                .fetch_optional(&db.pool)
                .await
        })
        .map_err(failed("failed to look up credentials"))?;
        Ok(row.map(CredentialsRow::into_credentials).transpose()?)
    }

    pub async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let sql = find_user_sql();
        let row = on_backend!(self, db => {
            sqlx::query_as::<_, UserRow>(&sql)
                .bind(db.id(id))
                .fetch_optional(&db.pool)
                .await
        })
        .map_err(failed("failed to look up user"))?;
        Ok(row.map(UserRow::into_user).transpose()?)
    }

    /// Up to `limit` users with ids greater than `after`, in id (creation) order.
    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        // The nil UUID sorts before every id `UserId::new` makes, as a UUID and as text.
        let after = after.unwrap_or(UserId(Uuid::nil()));
        let sql = list_users_sql();
        let rows = on_backend!(self, db => {
            sqlx::query_as::<_, UserRow>(&sql)
                .bind(db.id(after))
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to list users"))?;
        Ok(rows
            .into_iter()
            .map(UserRow::into_user)
            .collect::<anyhow::Result<_>>()?)
    }

    /// Replaces the user's roles in one transaction; `None` if there is no such user. Admin
    /// calls go through [`Store::change_as_admin`], which also keeps an enabled admin.
    pub async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<Option<User>, StoreError> {
        let found = on_backend!(self, db => {
            let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
            // Write first, so on SQLite the transaction holds the write lock before it reads.
            sqlx::query(DELETE_ROLES)
                .bind(db.id(id))
                .execute(&mut *tx)
                .await
                .map_err(failed("failed to clear roles"))?;
            let found = sqlx::query(USER_EXISTS)
                .bind(db.id(id))
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed("failed to look up user"))?
                .is_some();
            // Without the user, dropping the transaction rolls the delete back.
            if found {
                insert_roles(&mut tx, INSERT_ROLE, db.id(id), roles).await?;
                tx.commit().await.map_err(failed("failed to commit roles"))?;
            }
            found
        });
        if !found {
            return Ok(None);
        }
        self.find_user(id).await
    }

    /// Every signing key, newest generation first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        on_backend!(self, db => {
            sqlx::query_as::<_, StoredKey>(SELECT_SIGNING_KEYS)
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to load signing keys"))
    }

    /// Inserts the key unless one with its generation exists; returns whether it was inserted.
    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let inserted = on_backend!(self, db => {
            sqlx::query(INSERT_SIGNING_KEY)
                .bind(&key.kid)
                .bind(key.generation)
                .bind(&key.algorithm)
                .bind(&key.encryption)
                .bind(&key.private_key)
                .bind(key.created_at)
                .bind(key.activates_at)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to insert signing key"))?;
        Ok(inserted == 1)
    }

    /// Deletes a key that no longer verifies any live token; returns whether it existed.
    pub async fn delete_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let deleted = on_backend!(self, db => {
            sqlx::query(DELETE_SIGNING_KEY)
                .bind(kid)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to delete signing key"))?;
        Ok(deleted == 1)
    }

    /// Replaces the stored private half of `key` (sealing or re-sealing it) unless it changed
    /// since `key` was read; returns whether it was replaced.
    pub async fn reseal_signing_key(
        &self,
        key: &StoredKey,
        encryption: &str,
        private_key: &[u8],
    ) -> Result<bool, StoreError> {
        let replaced = on_backend!(self, db => {
            sqlx::query(RESEAL_SIGNING_KEY)
                .bind(encryption)
                .bind(private_key)
                .bind(&key.kid)
                .bind(&key.private_key)
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to re-seal signing key"))?;
        Ok(replaced == 1)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, db => sqlx::query("SELECT 1").execute(&db.pool).await.map(drop))
            .map_err(failed("failed to reach the database"))
    }

    /// Closes every pooled connection, waiting for those in use to come back. Calls made
    /// afterwards fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        on_backend!(self, db => db.pool.close().await)
    }

    /// Sets the pool gauges (`db_pool_connections`); a metrics sampler runs it on each scrape.
    pub fn record_pool_metrics(&self) {
        on_backend!(self, db => telemetry::metrics::record_db_pool(
            db.pool.size(),
            db.pool.num_idle(),
            db.pool.options().get_max_connections(),
        ))
    }
}

/// Adds `roles` to an account (a user, or a service account with its own `sql`) inside the
/// caller's transaction. Generic over the database so the statement and its loop exist once;
/// `id` is already in the backend's encoding.
async fn insert_roles<DB, Id>(
    tx: &mut Transaction<'_, DB>,
    sql: &'static str,
    id: Id,
    roles: &[Role],
) -> Result<(), StoreError>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    Id: for<'q> Encode<'q, DB> + Type<DB> + Clone + Send + 'static,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    for role in roles {
        sqlx::query::<DB>(sql)
            .bind(id.clone())
            .bind(role.as_str())
            .execute(&mut **tx)
            .await
            .map_err(failed("failed to insert role"))?;
    }
    Ok(())
}

const ANY_ADMIN: &str = "SELECT 1 FROM user_roles WHERE role = 'admin' LIMIT 1";

impl Store {
    /// Whether any account holds the admin role. Start-up asks when the bootstrap admin's name
    /// is held by a plain user: one row at most, rather than paging through every account.
    pub async fn any_admin(&self) -> Result<bool, StoreError> {
        on_backend!(self, db => {
            sqlx::query(ANY_ADMIN)
                .fetch_optional(&db.pool)
                .await
                .map(|row| row.is_some())
        })
        .map_err(failed("failed to look for an admin"))
    }
}
