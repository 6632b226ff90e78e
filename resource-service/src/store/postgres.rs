//! What only PostgreSQL, the database every replica of a cluster shares, does differently:
//! its pool, its migrations and how it locks the table while loading samples.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Postgres, migrate::MigrateError, postgres::PgPoolOptions};

use super::sql::SqlStore;
use crate::domain::PersonFields;

pub type PostgresStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .context("failed to connect to PostgreSQL")?;
        Ok(Self { pool })
    }

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
