//! The SQLite store: one file, WAL mode so readers never wait for a writer.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    SqlitePool,
    migrate::MigrateError,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::PersonRow;
use crate::domain::PersonFields;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const COLUMNS: &str = "person_id, name, email, age";

impl SqliteStore {
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
        .connect_with(options)
        .await
        .context("failed to open the SQLite database")?;
        Ok(Self { pool })
    }

    /// A store over an existing pool; tests use it.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    pub async fn migrate(&self) -> Result<(), MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }

    pub(super) async fn list(
        &self,
        after: i64,
        pattern: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PersonRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM persons \
             WHERE person_id > ?1 AND (?2 IS NULL OR name_folded LIKE ?2 ESCAPE '\\') \
             ORDER BY person_id LIMIT ?3"
        ))
        .bind(after)
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<PersonRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM persons WHERE person_id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    pub(super) async fn create(&self, p: &PersonFields) -> Result<PersonRow, sqlx::Error> {
        insert(p).fetch_one(&self.pool).await
    }

    pub(super) async fn update(
        &self,
        id: i64,
        p: &PersonFields,
    ) -> Result<Option<PersonRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE persons SET name = ?2, name_folded = ?3, email = ?4, email_folded = ?5, age = ?6 \
             WHERE person_id = ?1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(p.name.as_ref())
        .bind(p.name.folded())
        .bind(p.email.as_ref())
        .bind(p.email.folded())
        .bind(p.age.get())
        .fetch_optional(&self.pool)
        .await
    }

    pub(super) async fn delete(&self, id: i64) -> Result<u64, sqlx::Error> {
        let result = sqlx::query("DELETE FROM persons WHERE person_id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    pub(super) async fn load_if_empty(&self, persons: &[PersonFields]) -> Result<u64, sqlx::Error> {
        // BEGIN IMMEDIATE takes the write lock before the emptiness check, so two processes
        // sharing the file cannot both find it empty.
        let mut conn = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM persons")
            .fetch_one(&mut *conn)
            .await?;
        if count > 0 {
            return Ok(0);
        }
        for p in persons {
            insert(p).fetch_one(&mut *conn).await?;
        }
        conn.commit().await?;
        Ok(persons.len() as u64)
    }

    pub(super) async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

fn insert(
    p: &PersonFields,
) -> sqlx::query::QueryAs<'static, sqlx::Sqlite, PersonRow, sqlx::sqlite::SqliteArguments<'static>>
{
    sqlx::query_as(
        "INSERT INTO persons (name, name_folded, email, email_folded, age) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING person_id, name, email, age",
    )
    .bind(p.name.as_ref().to_owned())
    .bind(p.name.folded())
    .bind(p.email.as_ref().to_owned())
    .bind(p.email.folded())
    .bind(p.age.get())
}
