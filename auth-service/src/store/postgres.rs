//! The shared store for replicas: PostgreSQL. Only what differs from SQLite lives here:
//! connect options, migrations, and ids stored as `uuid`.

use std::str::FromStr;

use anyhow::Context;
use database::MeteredPool;
use sqlx::{Postgres, postgres::PgConnectOptions};
use uuid::Uuid;

use super::StoredId;
use super::open_pool;

/// sqlx holds a PostgreSQL advisory lock while migrating, so replicas starting together apply
/// each migration exactly once.

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: MeteredPool<Postgres>,
}

impl PgStore {
    pub(super) async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
        let pool = open_pool(
            options,
            max_connections,
            sqlx::migrate!("./migrations/postgres"),
        )
        .await?;
        Ok(Self { pool })
    }

    /// Ids are bound as `uuid`: PostgreSQL will not compare a `uuid` column with text.
    pub(super) fn id(&self, id: impl StoredId) -> Uuid {
        id.uuid()
    }
}
