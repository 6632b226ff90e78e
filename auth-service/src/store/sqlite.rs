//! The embedded store: one SQLite file, write-ahead logged. Only what differs from PostgreSQL
//! lives here: connect options, migrations, and ids stored as TEXT.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use database::MeteredPool;
use sqlx::{
    Sqlite,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

use super::StoredId;
use super::open_pool;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(super) pool: MeteredPool<Sqlite>,
}

impl SqliteStore {
    pub(super) async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = open_pool(
            options,
            max_connections,
            sqlx::migrate!("./migrations/sqlite"),
        )
        .await?;
        Ok(Self { pool })
    }

    /// SQLite has no UUID type: ids are stored as their hyphenated text, whose order is the
    /// UUIDs' order, so listing by id still lists by creation.
    pub(super) fn id(&self, id: impl StoredId) -> String {
        id.uuid().to_string()
    }
}
