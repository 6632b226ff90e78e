//! The shared store for replicas: PostgreSQL. Only what differs from SQLite lives here:
//! connect options, migrations, and ids stored as `uuid`.

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use super::ACQUIRE_TIMEOUT;
use crate::domain::UserId;

/// sqlx holds a PostgreSQL advisory lock while migrating, so replicas starting together apply
/// each migration exactly once.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    pub(super) async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .context("failed to connect to PostgreSQL")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("failed to apply PostgreSQL migrations")?;
        Ok(Self { pool })
    }

    /// Ids are bound as `uuid`: PostgreSQL will not compare a `uuid` column with text.
    pub(super) fn id(&self, id: UserId) -> Uuid {
        id.0
    }
}
