//! The embedded store: one SQLite file, write-ahead logged.

use std::{path::Path, str::FromStr};

use anyhow::Context;
use async_trait::async_trait;
use sqlx::{
    Row,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};
use token::Role;
use uuid::Uuid;

use super::{
    ACQUIRE_TIMEOUT, Credentials, INSERT_SIGNING_KEY, SELECT_SIGNING_KEYS, Store, StoreError,
    StoredKey, parse_roles, unique_violation,
};
use crate::domain::{NewUser, User, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Roles come back as one comma-separated column so a user is one row.
const USER_COLUMNS: &str = "u.id, u.username, u.email, u.created_at, \
     (SELECT group_concat(role) FROM user_roles r WHERE r.user_id = u.id) AS roles";

impl SqliteStore {
    pub async fn open_file(path: &Path, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::with_options(options, max_connections).await
    }

    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true);
        Self::with_options(options, max_connections).await
    }

    async fn with_options(
        options: SqliteConnectOptions,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .context("failed to open the SQLite database")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("failed to apply SQLite migrations")?;
        Ok(Self { pool })
    }
}

fn user_from_row(row: &SqliteRow) -> anyhow::Result<User> {
    let id: String = row.try_get("id")?;
    let roles: Option<String> = row.try_get("roles")?;
    let roles: Vec<String> = roles
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(User {
        id: UserId(Uuid::parse_str(&id).context("stored user id is not a UUID")?),
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        roles: parse_roles(&roles)?,
        created_at: row.try_get("created_at")?,
    })
}

fn unexpected(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Unexpected(anyhow::Error::new(e).context(context))
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(unexpected("failed to begin"))?;
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.0.to_string())
        .bind(user.username.as_ref())
        .bind(user.email.as_ref())
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(unique_violation)?;
        for role in &user.roles {
            sqlx::query(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) \
                 ON CONFLICT (user_id, role) DO NOTHING",
            )
            .bind(user.id.0.to_string())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unexpected("failed to insert role"))?;
        }
        tx.commit()
            .await
            .map_err(unexpected("failed to commit user"))?;
        let mut roles = user.roles.clone();
        roles.sort();
        Ok(User {
            id: user.id,
            username: user.username.to_string(),
            email: user.email.to_string(),
            roles,
            created_at: user.created_at,
        })
    }

    async fn find_credentials(&self, login: &str) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u \
             WHERE lower(u.username) = lower($1) OR lower(u.email) = lower($1) LIMIT 1"
        ))
        .bind(login)
        .fetch_optional(&self.pool)
        .await
        .map_err(unexpected("failed to look up credentials"))?;
        row.map(|row| {
            Ok(Credentials {
                user: user_from_row(&row)?,
                password_hash: row.try_get("password_hash").map_err(anyhow::Error::new)?,
            })
        })
        .transpose()
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(id.0.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(unexpected("failed to look up user"))?;
        Ok(row.map(|r| user_from_row(&r)).transpose()?)
    }

    async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id > $1 ORDER BY u.id LIMIT $2"
        ))
        .bind(after.map(|a| a.0.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unexpected("failed to list users"))?;
        Ok(rows
            .iter()
            .map(user_from_row)
            .collect::<anyhow::Result<_>>()?)
    }

    async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<Option<User>, StoreError> {
        // Write first, so the transaction holds SQLite's write lock before it reads.
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(unexpected("failed to begin"))?;
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
            .bind(id.0.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unexpected("failed to clear roles"))?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(id.0.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unexpected("failed to look up user"))?;
        if exists.is_none() {
            return Ok(None);
        }
        for role in roles {
            sqlx::query(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) \
                 ON CONFLICT (user_id, role) DO NOTHING",
            )
            .bind(id.0.to_string())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unexpected("failed to insert role"))?;
        }
        tx.commit()
            .await
            .map_err(unexpected("failed to commit roles"))?;
        self.find_user(id).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        sqlx::query_as(SELECT_SIGNING_KEYS)
            .fetch_all(&self.pool)
            .await
            .map_err(unexpected("failed to load signing keys"))
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let done = sqlx::query(INSERT_SIGNING_KEY)
            .bind(&key.kid)
            .bind(key.generation)
            .bind(&key.algorithm)
            .bind(&key.encryption)
            .bind(&key.private_key)
            .bind(key.created_at)
            .execute(&self.pool)
            .await
            .map_err(unexpected("failed to insert signing key"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unexpected("database is unreachable"))?;
        Ok(())
    }
}
