//! What only PostgreSQL, the database every replica of a cluster shares, does differently:
//! its pool, its migrations and how it locks the table while loading samples.

use std::{ops::Deref, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{Postgres, migrate::MigrateError, postgres::PgPoolOptions};

use super::{
    batch::{Read, Reads},
    sql::SqlStore,
};
use crate::domain::PersonFields;

/// The queries both databases share, and reads by id that share a query under load
/// (`batch.rs`).
#[derive(Clone, Debug)]
pub struct PostgresStore {
    sql: SqlStore<Postgres>,
    reads: Arc<Reads>,
}

impl Deref for PostgresStore {
    type Target = SqlStore<Postgres>;

    fn deref(&self) -> &Self::Target {
        &self.sql
    }
}

/// How long a pooled connection may sit idle before it is pinged again before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out (a round trip to PostgreSQL before each
            // query) and again when it takes one back. A connection in use moments ago needs no
            // second ping, so only one idle for longer than `PING_IF_IDLE_FOR` (which may have
            // gone stale, e.g. while PostgreSQL restarted) is pinged before use. The ping on
            // release stays for a connection whose statement failed or was abandoned: it finds
            // those that broke. One whose statement just completed is kept ready for the next
            // query instead, for no longer than `PING_IF_IDLE_FOR` (see `database::MeteredPool`).
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .context("failed to connect to PostgreSQL")?;
        let pool = database::MeteredPool::keeping_ready(pool, PING_IF_IDLE_FOR);
        Ok(Self {
            reads: Reads::new(pool.clone()),
            sql: SqlStore { pool },
        })
    }

    /// The person `id`, from a query that began after this call did; possibly one shared
    /// with other reads by id.
    pub(super) async fn read(&self, id: i64) -> Read {
        self.reads.get(id).await
    }
}

impl SqlStore<Postgres> {
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        super::tolerant(sqlx::migrate!("./migrations/postgres"))
            .run(&self.pool)
            .await
    }

    pub(super) async fn load_if_empty(&self, persons: &[PersonFields]) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // The table lock makes a second replica wait here and then find the rows the first
        // one inserted, instead of both finding the table empty.
        sqlx::query("LOCK TABLE persons IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Self::fill_if_empty(tx, persons).await
    }
}
