//! Where persons live: one interface, two databases. SQLite is the default for a laptop and
//! a single replica; PostgreSQL is shared by every replica in a cluster. Both enforce the same
//! rules (unique folded email, ages in range) in the schema, so a race between two replicas
//! still ends in `EmailTaken`, never in two rows.

mod batch;
mod postgres;
mod sql;
mod sqlite;

use anyhow::Context;

pub use self::{postgres::PostgresStore, sqlite::SqliteStore};

use crate::{
    Error,
    domain::{Age, Email, ListQuery, Page, PageToken, Person, PersonFields, PersonId, PersonName},
};

/// The backend's migrations, tolerating those a newer version applied (rather than refusing them
/// as missing), so replicas of two adjacent versions can run side by side during a rolling
/// upgrade or a rollback.
/// The PostgreSQL pool size when none is configured (`RESOURCE_DB_MAX_CONNECTIONS`' default).
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

fn tolerant(mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// The database the service was configured with. An enum rather than a trait object: there
/// are exactly two, and each call is a plain `match`.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Connects to `postgres://…` or `sqlite:…` (a SQLite file is created when missing) and
    /// applies the embedded migrations. Concurrent replicas may start together: on PostgreSQL
    /// the migrator holds an advisory lock.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::connect`] with a PostgreSQL pool of `max_connections` (SQLite keeps its own).
    pub async fn connect_with(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::Postgres(PostgresStore::connect(url, max_connections).await?)
        } else if url.starts_with("sqlite:") {
            Store::Sqlite(SqliteStore::connect(url).await?)
        } else {
            anyhow::bail!("the database URL must start with postgres:// or sqlite:");
        };
        let store_ref = &store;
        dispatch!(store_ref, s => s.migrate().await).context("failed to apply migrations")?;
        Ok(store)
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page, Error> {
        // One row more than the page tells whether there is a next page without a COUNT.
        let limit = i64::from(query.size.get()) + 1;
        let after = query.after.map_or(0, |id| id.0);
        let pattern = query.name_filter.as_ref().map(|f| f.like_pattern());
        let rows = dispatch!(self, s => s.list(after, pattern, limit).await)
            .map_err(failed("failed to list persons"))?;
        let mut persons = rows
            .into_iter()
            .map(PersonRow::into_person)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if persons.len() > query.size.get() as usize {
            persons.truncate(query.size.get() as usize);
            persons.last().map(|p| PageToken { after: p.id })
        } else {
            None
        };
        Ok(Page { persons, next })
    }

    pub async fn get(&self, id: PersonId) -> Result<Person, Error> {
        const CONTEXT: &str = "failed to read a person";
        let row = match self {
            Store::Sqlite(s) => s.get(id.0).await.map_err(failed(CONTEXT))?,
            Store::Postgres(s) => s.read(id.0).await.map_err(|failure| match failure {
                batch::Failure::Query(error) => {
                    classify(database::is_unavailable(&error), error, CONTEXT)
                }
                batch::Failure::Abandoned => Error::StoreUnavailable(anyhow::anyhow!(
                    "{CONTEXT}: the store is shutting down"
                )),
            })?,
        };
        row.ok_or(Error::PersonNotFound(id))?.into_person()
    }

    pub async fn create(&self, fields: &PersonFields) -> Result<Person, Error> {
        dispatch!(self, s => s.create(fields).await)
            .map_err(write_failed("failed to insert a person"))?
            .into_person()
    }

    /// Replaces every field of the person.
    pub async fn update(&self, id: PersonId, fields: &PersonFields) -> Result<Person, Error> {
        dispatch!(self, s => s.update(id.0, fields).await)
            .map_err(write_failed("failed to update a person"))?
            .ok_or(Error::PersonNotFound(id))?
            .into_person()
    }

    pub async fn delete(&self, id: PersonId) -> Result<(), Error> {
        let deleted = dispatch!(self, s => s.delete(id.0).await)
            .map_err(failed("failed to delete a person"))?;
        if !deleted {
            return Err(Error::PersonNotFound(id));
        }
        Ok(())
    }

    /// Inserts `persons` in one transaction, but only into an empty table. Returns how many were
    /// inserted: 0 when the table already had rows, or when another replica loaded them first.
    pub async fn load_if_empty(&self, persons: &[PersonFields]) -> Result<u64, Error> {
        match dispatch!(self, s => s.load_if_empty(persons).await) {
            Ok(n) => Ok(n),
            Err(e) if is_unique_violation(&e) => Ok(0),
            Err(e) => Err(failed("failed to load sample data")(e)),
        }
    }

    /// Checks the database answers; used before reporting the service healthy.
    pub async fn ping(&self) -> anyhow::Result<()> {
        dispatch!(self, s => s.ping().await).context("the database does not answer")
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// Sets the pool gauges (`db_pool_connections`); a metrics sampler runs it on each scrape.
    pub fn record_pool_metrics(&self) {
        dispatch!(self, s => s.record_pool_metrics())
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Turns a failed statement into an [`Error`], with `context` saying what was being done.
fn failed(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| classify(database::is_unavailable(&error), error, context)
}

/// A failed statement's [`Error`]: the store is unavailable, or something unexpected happened.
fn classify<E>(unavailable: bool, error: E, context: &'static str) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let error = anyhow::Error::new(error).context(context);
    if unavailable {
        Error::StoreUnavailable(error)
    } else {
        Error::Unexpected(error)
    }
}

/// Like [`failed`], but the unique index on the folded email is a conflict the caller can act on.
fn write_failed(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| {
        if is_unique_violation(&error) {
            Error::EmailTaken
        } else {
            failed(context)(error)
        }
    }
}

/// A row as both databases return it. Public only because the bounds of the generic queries
/// name it; nothing outside the store can build or read one.
#[derive(Clone, sqlx::FromRow)]
pub struct PersonRow {
    person_id: i64,
    name: String,
    email: String,
    age: i32,
}

impl PersonRow {
    /// Rows were checked on the way in; one that no longer parses means someone wrote to the
    /// table behind our back, which is our problem, not the caller's. The email is taken as
    /// stored: the full address check costs more than the rest of the row's together, on every
    /// read, and only [`Email::parse`]d addresses are ever written (the name and age checks are
    /// a few comparisons and stay).
    fn into_person(self) -> Result<Person, Error> {
        let id = self.person_id;
        let parsed = (|| {
            Ok::<_, crate::domain::Invalid>(Person {
                id: PersonId::parse(self.person_id)?,
                fields: PersonFields {
                    name: PersonName::parse(self.name)?,
                    email: Email::stored(self.email),
                    age: Age::parse(self.age)?,
                },
            })
        })();
        parsed
            .map_err(|e| anyhow::anyhow!("stored person {id} is invalid: {e}"))
            .map_err(Error::from)
    }
}
