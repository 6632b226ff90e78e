//! What only SQLite, one file with WAL so readers never wait for a writer, does differently:
//! its pool (a single connection for an in-memory database), its migrations and how it locks
//! the file while loading samples.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Sqlite,
    migrate::MigrateError,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::sql::SqlStore;
use crate::domain::PersonFields;

pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite database URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Writers queue for the file lock instead of failing at once under concurrent inserts.
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database lives in one connection; a pool of several would hold several
        // unrelated databases, and closing an idle one would lose its data.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(8)
        }
        // As on PostgreSQL: a caller waits at most 5 s for a connection (sqlx's default is 30 s),
        // then gets UNAVAILABLE and `db_pool_acquire_timeouts_total` counts it.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("failed to open the SQLite database")?;
        Ok(Self {
            pool: database::MeteredPool::new(pool),
        })
    }

    pub async fn migrate(&self) -> Result<(), MigrateError> {
        super::tolerant(sqlx::migrate!("./migrations/sqlite"))
            .run(&self.pool)
            .await
    }

    pub(super) async fn load_if_empty(&self, persons: &[PersonFields]) -> Result<u64, sqlx::Error> {
        // BEGIN IMMEDIATE takes the write lock before the emptiness check, so two processes
        // sharing the file cannot both find it empty.
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Self::fill_if_empty(tx, persons).await
    }
}
