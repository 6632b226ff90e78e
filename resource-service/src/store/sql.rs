//! The queries both databases run, written once. sqlx binds `$N` by number on SQLite as on
//! PostgreSQL, and every statement here is valid in both dialects, so one text serves both;
//! what really differs (connecting, migrations, locking the table) lives in `postgres.rs` and
//! `sqlite.rs`.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Transaction, Type, query::QueryAs};

use database::MeteredPool;

use super::PersonRow;
use crate::domain::PersonFields;

/// A pool of either database, with the queries of the person table.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: MeteredPool<DB>,
}

impl<DB: Database> SqlStore<DB> {
    pub(super) fn record_pool_metrics(&self) {
        let max = self.pool.max_connections();
        telemetry::metrics::record_db_pool(self.pool.size(), self.pool.num_idle(), max);
    }
}

// A derived `Clone` would demand `DB: Clone`; only the pool is cloned.
impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

const LIST: &str = "SELECT person_id, name, email, age FROM persons \
    WHERE person_id > $1 AND (CAST($2 AS TEXT) IS NULL OR name_folded LIKE $2 ESCAPE '\\') \
    ORDER BY person_id LIMIT $3";

const GET: &str = "SELECT person_id, name, email, age FROM persons WHERE person_id = $1";

const INSERT: &str = "INSERT INTO persons (name, name_folded, email, email_folded, age) \
    VALUES ($1, $2, $3, $4, $5) RETURNING person_id, name, email, age";

const UPDATE: &str = "UPDATE persons \
    SET name = $2, name_folded = $3, email = $4, email_folded = $5, age = $6 \
    WHERE person_id = $1 RETURNING person_id, name, email, age";

// `RETURNING` tells whether a row went without `rows_affected`, which sqlx has per database
// but not on the generic `Database` trait.
const DELETE: &str = "DELETE FROM persons WHERE person_id = $1 RETURNING person_id";

const COUNT: &str = "SELECT COUNT(*) FROM persons";

impl<DB> SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> PersonRow: FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    pub(super) async fn list(
        &self,
        after: i64,
        pattern: Option<String>,
        limit: i64,
    ) -> Result<Vec<PersonRow>, sqlx::Error> {
        sqlx::query_as(LIST)
            .bind(after)
            .bind(pattern)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<PersonRow>, sqlx::Error> {
        sqlx::query_as(GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub(super) async fn create(&self, p: &PersonFields) -> Result<PersonRow, sqlx::Error> {
        Self::bind_fields(sqlx::query_as(INSERT), p)
            .fetch_one(&self.pool)
            .await
    }

    pub(super) async fn update(
        &self,
        id: i64,
        p: &PersonFields,
    ) -> Result<Option<PersonRow>, sqlx::Error> {
        Self::bind_fields(sqlx::query_as(UPDATE).bind(id), p)
            .fetch_optional(&self.pool)
            .await
    }

    /// Whether there was a person to delete.
    pub(super) async fn delete(&self, id: i64) -> Result<bool, sqlx::Error> {
        let deleted: Option<(i64,)> = sqlx::query_as(DELETE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(deleted.is_some())
    }

    /// Inserts `persons` unless the table has rows, then commits. `tx` must already hold the
    /// lock that keeps a second replica from finding the table empty too: each backend takes it
    /// its own way.
    pub(super) async fn fill_if_empty(
        mut tx: Transaction<'_, DB>,
        persons: &[PersonFields],
    ) -> Result<u64, sqlx::Error> {
        let (count,): (i64,) = sqlx::query_as(COUNT).fetch_one(&mut *tx).await?;
        if count > 0 {
            return Ok(0);
        }
        for p in persons {
            Self::bind_fields(sqlx::query_as(INSERT), p)
                .fetch_one(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(persons.len() as u64)
    }

    pub(super) async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Binds the person's columns in the order `INSERT` and `UPDATE` number them.
    fn bind_fields<'q>(
        query: QueryAs<'q, DB, PersonRow, DB::Arguments<'q>>,
        p: &PersonFields,
    ) -> QueryAs<'q, DB, PersonRow, DB::Arguments<'q>> {
        query
            .bind(p.name.as_ref().to_owned())
            .bind(p.name.folded())
            .bind(p.email.as_ref().to_owned())
            .bind(p.email.folded())
            .bind(p.age.get())
    }
}
