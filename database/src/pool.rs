//! The connection pool a store queries through: sqlx's [`Pool`], with how long each caller
//! waited for a connection recorded. sqlx has no hook around an acquire, so the one place every
//! query gets its connection is this type: [`MeteredPool::acquire`] and [`MeteredPool::begin`]
//! time the wait, and `&MeteredPool` is an [`Executor`] (a query given `&pool` acquires through
//! it, as with `&Pool`) and an [`Acquire`] (for the migrator).
//!
//! It exports `db_pool_acquire_wait_seconds`, a histogram of every wait (also one that timed out
//! or whose caller gave up, e.g. at a call's deadline, when it stops waiting), and
//! `db_pool_acquire_timeouts_total`, the acquires that failed because no connection came free
//! within the pool's acquire timeout. The pool's size is sampled elsewhere
//! (`telemetry::metrics::record_db_pool`).

use std::{borrow::Cow, fmt, time::Instant};

use futures::{TryStreamExt, future::BoxFuture, stream::BoxStream};
use metrics::{Counter, Histogram};
use sqlx::{
    Acquire, ConnectOptions, Connection, Database, Describe, Either, Error, Execute, Executor,
    Pool, Transaction,
    pool::{PoolConnection, PoolOptions},
};
use sqlx_core::ext::async_stream::TryAsyncStream;

/// Seconds callers waited for a pooled connection.
pub const ACQUIRE_WAIT_SECONDS: &str = "db_pool_acquire_wait_seconds";
/// Acquires that gave up because no connection came free in time.
pub const ACQUIRE_TIMEOUTS_TOTAL: &str = "db_pool_acquire_timeouts_total";

/// A sqlx pool whose acquires are timed. Cloning it is cheap and shares the pool.
pub struct MeteredPool<DB: Database> {
    pool: Pool<DB>,
    wait: Histogram,
    timeouts: Counter,
}

impl<DB: Database> MeteredPool<DB> {
    /// Wraps `pool`. The metric handles are made here, from the recorder installed now: make the
    /// pool after the service installed its recorder (`telemetry::metrics::install`).
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            wait: metrics::histogram!(ACQUIRE_WAIT_SECONDS),
            timeouts: metrics::counter!(ACQUIRE_TIMEOUTS_TOTAL),
        }
    }

    /// A connection from the pool, the wait recorded.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, Error> {
        let waiting = Waiting {
            since: Instant::now(),
            wait: &self.wait,
        };
        let acquired = self.pool.acquire().await;
        drop(waiting);
        if let Err(Error::PoolTimedOut) = acquired {
            self.timeouts.increment(1);
        }
        acquired
    }

    /// A transaction on a connection from [`MeteredPool::acquire`].
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, Error> {
        Transaction::begin(self.acquire().await?, None).await
    }

    /// A transaction begun with `statement` (such as SQLite's `BEGIN IMMEDIATE`).
    pub async fn begin_with(
        &self,
        statement: impl Into<Cow<'static, str>>,
    ) -> Result<Transaction<'static, DB>, Error> {
        Transaction::begin(self.acquire().await?, Some(statement.into())).await
    }

    /// Closes every connection, waiting for those in use to come back.
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Connections open, idle or in use.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Connections open and idle.
    pub fn num_idle(&self) -> usize {
        self.pool.num_idle()
    }

    /// The most connections the pool may open.
    pub fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    pub fn options(&self) -> &PoolOptions<DB> {
        self.pool.options()
    }

    /// What the pool connects with, for a connection of its own outside the pool.
    pub fn connect_options(&self) -> std::sync::Arc<<DB::Connection as Connection>::Options>
    where
        <DB::Connection as Connection>::Options: ConnectOptions,
    {
        self.pool.connect_options()
    }
}

/// Records the wait when the acquire ends, also when its caller stops waiting (the future is
/// dropped), so waits cut short by a deadline are not missing from the histogram.
struct Waiting<'a> {
    since: Instant,
    wait: &'a Histogram,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.wait.record(self.since.elapsed());
    }
}

// A derived `Clone` would demand `DB: Clone`.
impl<DB: Database> Clone for MeteredPool<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            wait: self.wait.clone(),
            timeouts: self.timeouts.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for MeteredPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MeteredPool").field(&self.pool).finish()
    }
}

/// What sqlx's `impl Executor for &Pool` does, with the acquire timed: each query takes a
/// connection, runs on it and gives it back.
impl<'p, DB: Database> Executor<'p> for &'p MeteredPool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        // The connection lives inside the stream, which yields what the connection's stream
        // yields (sqlx's own pool does the same).
        Box::pin(TryAsyncStream::new(move |yielder| async move {
            let mut connection = self.acquire().await?;
            let mut results = connection.fetch_many(query);
            while let Some(result) = results.try_next().await? {
                yielder.r#yield(result).await;
            }
            Ok(())
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async move { self.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, Error>>
    where
        'p: 'e,
    {
        Box::pin(async move { self.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<DB>, Error>>
    where
        'p: 'e,
    {
        Box::pin(async move { self.acquire().await?.describe(sql).await })
    }
}

/// For what takes a connection itself, such as the migrator. As with `&Pool`, the futures own
/// a clone of the pool, so they hold no borrow.
impl<'a, DB: Database> Acquire<'a> for &'_ MeteredPool<DB> {
    type Database = DB;
    type Connection = PoolConnection<DB>;

    fn acquire(self) -> BoxFuture<'static, Result<PoolConnection<DB>, Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await })
    }

    fn begin(self) -> BoxFuture<'static, Result<Transaction<'a, DB>, Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let transaction: Transaction<'a, DB> = pool.begin().await?;
            Ok(transaction)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
    use sqlx::{Sqlite, sqlite::SqlitePoolOptions};

    use super::*;

    /// A pool of one in-memory SQLite connection whose metrics go to a recorder of the test's
    /// own, so tests running at the same time do not add to each other's counts.
    async fn pool_of_one(acquire_timeout: Duration) -> (MeteredPool<Sqlite>, PrometheusRecorder) {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.05, 0.1, 0.25, 5.0])
            .unwrap()
            .build_recorder();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let pool = metrics::with_local_recorder(&recorder, || MeteredPool::new(pool));
        (pool, recorder)
    }

    /// The value of the unlabelled series `name` in the recorder's exposition.
    fn value(recorder: &PrometheusRecorder, name: &str) -> f64 {
        let body = recorder.handle().render();
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_query_waiting_for_the_only_connection_records_its_wait() {
        let (pool, recorder) = pool_of_one(Duration::from_secs(5)).await;
        let held = pool.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT 1 UNION ALL SELECT 2")
                    .fetch_all(&pool)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        // The rows come through the pool's stream.
        assert_eq!(waiter.await.unwrap().unwrap(), vec![1, 2]);

        assert_eq!(value(&recorder, "db_pool_acquire_wait_seconds_count"), 2.0);
        // The second acquire waited at least as long as the first held the connection.
        assert!(value(&recorder, "db_pool_acquire_wait_seconds_sum") >= 0.3);
        assert_eq!(
            value(
                &recorder,
                "db_pool_acquire_wait_seconds_bucket{le=\"0.25\"}"
            ),
            1.0
        );
        assert_eq!(value(&recorder, "db_pool_acquire_timeouts_total"), 0.0);
    }

    #[tokio::test]
    async fn an_acquire_that_times_out_is_counted_and_its_wait_recorded() {
        let (pool, recorder) = pool_of_one(Duration::from_millis(100)).await;
        let _held = pool.acquire().await.unwrap();
        let error = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(matches!(error, Error::PoolTimedOut), "{error:?}");
        let error = pool.begin().await.unwrap_err();
        assert!(matches!(error, Error::PoolTimedOut), "{error:?}");

        assert_eq!(value(&recorder, "db_pool_acquire_timeouts_total"), 2.0);
        assert_eq!(value(&recorder, "db_pool_acquire_wait_seconds_count"), 3.0);
        assert!(value(&recorder, "db_pool_acquire_wait_seconds_sum") >= 0.2);
    }

    #[tokio::test]
    async fn a_wait_its_caller_gave_up_is_recorded_but_is_no_timeout() {
        let (pool, recorder) = pool_of_one(Duration::from_secs(5)).await;
        let held = pool.acquire().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(150), pool.begin()).await;
        assert!(gave_up.is_err(), "acquired a held connection");
        assert_eq!(value(&recorder, "db_pool_acquire_wait_seconds_count"), 2.0);
        assert!(value(&recorder, "db_pool_acquire_wait_seconds_sum") >= 0.15);
        assert_eq!(value(&recorder, "db_pool_acquire_timeouts_total"), 0.0);

        // Transactions and the migrator's connection come through the pool too.
        drop(held);
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut *transaction)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        let connection = Acquire::acquire(&pool).await.unwrap();
        drop(connection);
        assert_eq!(value(&recorder, "db_pool_acquire_wait_seconds_count"), 4.0);
    }
}
