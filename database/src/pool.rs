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
//!
//! sqlx pings every connection given back to its pool (a round trip to the database, in a task
//! of its own) before another caller may have it. A pool made with
//! [`MeteredPool::keeping_ready`] skips that round trip where it proves nothing: a connection
//! whose statement, run through `&pool`, has just completed is at rest by that very answer, so
//! it is kept aside ready for the next query instead (an acquire waiting for a connection takes
//! it as readily as one from sqlx). Only for a short while: a connection kept longer goes back
//! through sqlx, ping and all. A statement that failed or was abandoned half way hands its
//! connection back to sqlx as before.

use std::{
    borrow::Cow,
    fmt,
    ops::{Deref, DerefMut},
    pin::pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use futures::{
    TryStreamExt,
    future::{self, BoxFuture},
    stream::BoxStream,
};
use metrics::{Counter, Histogram};
use sqlx::{
    Acquire, ConnectOptions, Connection, Database, Describe, Either, Error, Execute, Executor,
    Pool, Transaction,
    pool::{PoolConnection, PoolOptions},
};
use sqlx_core::ext::async_stream::TryAsyncStream;
use tokio::sync::Notify;

/// Seconds callers waited for a pooled connection.
pub const ACQUIRE_WAIT_SECONDS: &str = "db_pool_acquire_wait_seconds";
/// Acquires that gave up because no connection came free in time.
pub const ACQUIRE_TIMEOUTS_TOTAL: &str = "db_pool_acquire_timeouts_total";

/// A sqlx pool whose acquires are timed. Cloning it is cheap and shares the pool.
pub struct MeteredPool<DB: Database> {
    pool: Pool<DB>,
    wait: Histogram,
    timeouts: Counter,
    ready: Option<Arc<Ready<DB>>>,
}

impl<DB: Database> MeteredPool<DB> {
    /// Wraps `pool`. The metric handles are made here, from the recorder installed now: make the
    /// pool after the service installed its recorder (`telemetry::metrics::install`).
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            wait: metrics::histogram!(ACQUIRE_WAIT_SECONDS),
            timeouts: metrics::counter!(ACQUIRE_TIMEOUTS_TOTAL),
            ready: None,
        }
    }

    /// Like [`MeteredPool::new`], but a connection whose statement through `&pool` completed is
    /// kept ready for the next query for up to `keep_for`, without sqlx's ping on release (see
    /// the module's documentation). `keep_for` should not exceed how long the pool lets an idle
    /// connection go unpinged before use: a kept connection is handed out unchecked.
    pub fn keeping_ready(pool: Pool<DB>, keep_for: Duration) -> Self {
        Self {
            ready: Some(Arc::new(Ready {
                connections: Mutex::new(Vec::new()),
                in_line: AtomicUsize::new(0),
                unheard: AtomicUsize::new(0),
                put_aside: Notify::new(),
                keep_for,
                kept_at_most: KEPT_AT_MOST,
            })),
            ..Self::new(pool)
        }
    }

    /// A connection from the pool, the wait recorded.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, Error> {
        self.acquire_kept().await.map(|(connection, _)| connection)
    }

    /// [`MeteredPool::acquire`], with when the connection last came from sqlx if it was kept
    /// ready since.
    async fn acquire_kept(&self) -> Result<(PoolConnection<DB>, Option<Instant>), Error> {
        let waiting = Waiting {
            since: Instant::now(),
            wait: &self.wait,
        };
        let acquired = match &self.ready {
            Some(ready) => ready.acquire(&self.pool).await,
            None => self
                .pool
                .acquire()
                .await
                .map(|connection| (connection, None)),
        };
        drop(waiting);
        if let Err(Error::PoolTimedOut) = acquired {
            self.timeouts.increment(1);
        }
        acquired
    }

    /// A connection for one statement through `&pool`: kept ready afterwards if the statement
    /// completes ([`Lease::completed`]), given back to sqlx otherwise.
    async fn lease(&self) -> Result<Lease<'_, DB>, Error> {
        let (connection, kept_since) = self.acquire_kept().await?;
        Ok(Lease {
            connection: Some(connection),
            kept_since: kept_since.unwrap_or_else(Instant::now),
            pool: self,
        })
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
        // Marks the pool closed before its first poll: no connection is kept ready after that.
        let closing = self.pool.close();
        if let Some(ready) = &self.ready {
            drop(ready.take_all());
        }
        closing.await
    }

    /// Connections open, idle or in use.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Connections open and idle, those kept ready for the next query included.
    pub fn num_idle(&self) -> usize {
        self.pool.num_idle() + self.ready.as_deref().map_or(0, Ready::len)
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

/// How long a connection may go from one statement to the next without passing through sqlx:
/// past this it goes back to sqlx once, which pings it and closes it if it is older than the
/// pool's `max_lifetime`, so that limit holds (this much late at most) under constant load too.
const KEPT_AT_MOST: Duration = Duration::from_secs(60);

/// A connection put aside: when it was, and when it last came from sqlx.
struct Kept<DB: Database> {
    connection: PoolConnection<DB>,
    put_aside: Instant,
    since: Instant,
}

/// Connections whose last statement completed, newest last.
struct Ready<DB: Database> {
    connections: Mutex<Vec<Kept<DB>>>,
    /// Acquires under way, which may be waiting.
    in_line: AtomicUsize,
    /// Acquires waiting for sqlx alone: a connection put aside would not wake them.
    unheard: AtomicUsize,
    /// Wakes an acquire waiting when a connection is put aside.
    put_aside: Notify,
    keep_for: Duration,
    /// [`KEPT_AT_MOST`] (shorter in tests).
    kept_at_most: Duration,
}

impl<DB: Database> Ready<DB> {
    /// A connection put aside, or else one from sqlx; when sqlx has none idle and may open no
    /// more, the first of one put aside meanwhile and one sqlx frees (its acquire timeout
    /// applies).
    async fn acquire(
        &self,
        pool: &Pool<DB>,
    ) -> Result<(PoolConnection<DB>, Option<Instant>), Error> {
        let _in_line = InLine::new(&self.in_line);
        if let Some(kept) = self.take() {
            return Ok(kept);
        }
        // Not raced: giving up an acquire that is opening a connection throws the connection
        // away. Should sqlx run out meanwhile, this acquire waits in its queue, so a connection
        // completed meanwhile goes back to sqlx rather than aside (see `keep`).
        if pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections() {
            let _unheard = InLine::new(&self.unheard);
            // Counted before looking again: one put aside after the look goes back to sqlx.
            if let Some(kept) = self.take() {
                return Ok(kept);
            }
            return pool.acquire().await.map(|connection| (connection, None));
        }
        let mut from_pool = pin!(pool.acquire());
        loop {
            // Listening before looking: one put aside after the look wakes this acquire.
            let mut put_aside = pin!(self.put_aside.notified());
            put_aside.as_mut().enable();
            if let Some(kept) = self.take() {
                return Ok(kept);
            }
            if let future::Either::Left((acquired, _)) =
                future::select(from_pool.as_mut(), put_aside).await
            {
                return acquired.map(|connection| (connection, None));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept<DB>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection put aside last, unless it was put aside too long ago (then every one is:
    /// they go back to sqlx).
    fn take(&self) -> Option<(PoolConnection<DB>, Option<Instant>)> {
        let mut connections = self.lock();
        let kept = connections.pop()?;
        if kept.put_aside.elapsed() <= self.keep_for {
            return Some((kept.connection, Some(kept.since)));
        }
        let stale = std::mem::take(&mut *connections);
        drop(connections);
        drop((kept, stale));
        None
    }

    /// Puts `connection` (from sqlx at `since`) aside, waking an acquire that waits, unless the
    /// pool is closing, an acquire waits for sqlx alone, or it has gone [`KEPT_AT_MOST`] without
    /// passing through sqlx; gives back to sqlx those put aside too long ago.
    fn keep(&self, pool: &Pool<DB>, connection: PoolConnection<DB>, since: Instant) {
        let now = Instant::now();
        if now.duration_since(since) > self.kept_at_most {
            return drop(connection);
        }
        let mut connections = self.lock();
        // Checked under the lock `MeteredPool::close` empties this under, after marking the pool
        // closed: nothing is put aside once it has been emptied for good.
        if pool.is_closed() {
            drop(connections);
            return drop(connection);
        }
        connections.push(Kept {
            connection,
            put_aside: now,
            since,
        });
        let stale = connections
            .iter()
            .take_while(|kept| now.duration_since(kept.put_aside) > self.keep_for)
            .count();
        let mut back: Vec<_> = connections.drain(..stale).collect();
        // After putting it aside, so that an acquire either saw it or is counted here.
        if self.unheard.load(SeqCst) > 0 {
            back.extend(connections.pop());
        }
        drop(connections);
        drop(back);
        if self.in_line.load(SeqCst) > 0 {
            self.put_aside.notify_one();
        }
    }

    fn take_all(&self) -> Vec<Kept<DB>> {
        std::mem::take(&mut *self.lock())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<DB: Database> Drop for Ready<DB> {
    fn drop(&mut self) {
        // A dropped `PoolConnection` goes back in a task of its own, which needs a runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            for kept in self.take_all() {
                drop(kept.connection.detach());
            }
        }
    }
}

/// Counts an acquire (as under way, or as waiting for sqlx alone) while it lives.
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// A connection lent to one statement: dropped, it goes back to sqlx (which pings it);
/// [`Lease::completed`] keeps it ready instead, where the pool does that.
struct Lease<'a, DB: Database> {
    connection: Option<PoolConnection<DB>>,
    /// When the connection last came from sqlx.
    kept_since: Instant,
    pool: &'a MeteredPool<DB>,
}

impl<DB: Database> Lease<'_, DB> {
    /// The statement completed: the connection is at rest and may serve the next one.
    fn completed(mut self) {
        if let (Some(ready), Some(connection)) = (&self.pool.ready, self.connection.take()) {
            ready.keep(&self.pool.pool, connection, self.kept_since);
        }
    }
}

impl<DB: Database> Deref for Lease<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        self.connection
            .as_deref()
            .expect("a lease holds its connection until it ends")
    }
}

impl<DB: Database> DerefMut for Lease<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.connection
            .as_deref_mut()
            .expect("a lease holds its connection until it ends")
    }
}

// A derived `Clone` would demand `DB: Clone`.
impl<DB: Database> Clone for MeteredPool<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            wait: self.wait.clone(),
            timeouts: self.timeouts.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for MeteredPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MeteredPool").field(&self.pool).finish()
    }
}

/// What sqlx's `impl Executor for &Pool` does, with the acquire timed: each query takes a
/// connection, runs on it and gives it back (or keeps it ready, see [`Lease`]).
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
            let mut lease = self.lease().await?;
            let mut results = lease.fetch_many(query);
            while let Some(result) = results.try_next().await? {
                yielder.r#yield(result).await;
            }
            drop(results);
            lease.completed();
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
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let row = lease.fetch_optional(query).await?;
            lease.completed();
            Ok(row)
        })
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
    use std::{sync::atomic::AtomicUsize, time::Duration};

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

    /// A pool of one in-memory SQLite connection that keeps connections ready for `keep_for`,
    /// and how many times sqlx took its connection back.
    async fn keeping_pool_of_one(keep_for: Duration) -> (MeteredPool<Sqlite>, Arc<AtomicUsize>) {
        let released = Arc::new(AtomicUsize::new(0));
        let counted = released.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .after_release(move |_, _| {
                let counted = counted.clone();
                Box::pin(async move {
                    counted.fetch_add(1, SeqCst);
                    Ok(true)
                })
            })
            .connect("sqlite::memory:")
            .await
            .unwrap();
        (MeteredPool::keeping_ready(pool, keep_for), released)
    }

    /// Waits until sqlx has taken the connection back `n` times in all (it does so in a task of
    /// its own).
    async fn released(count: &AtomicUsize, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while count.load(SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("released {} times, not {n}", count.load(SeqCst)));
        assert_eq!(count.load(SeqCst), n);
    }

    #[tokio::test]
    async fn a_completed_statement_keeps_its_connection_ready_and_a_failed_one_gives_it_back() {
        let (pool, releases) = keeping_pool_of_one(Duration::from_secs(60)).await;
        for _ in 0..3 {
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        }
        let rows = sqlx::query_scalar::<_, i64>("SELECT 1 UNION ALL SELECT 2")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 2]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(releases.load(SeqCst), 0, "sqlx took a completed one back");
        // Kept ready is idle, for the pool's gauges.
        assert_eq!(pool.num_idle(), 1);
        assert_eq!(pool.size(), 1);

        sqlx::query("SELECT * FROM no_such_table")
            .execute(&pool)
            .await
            .unwrap_err();
        released(&releases, 1).await;
        // A connection held as such goes back to sqlx too.
        drop(pool.acquire().await.unwrap());
        released(&releases, 2).await;

        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), pool.close())
            .await
            .expect("closing waits for a connection kept ready");
    }

    #[tokio::test]
    async fn a_connection_kept_too_long_goes_back_through_sqlx() {
        let (pool, releases) = keeping_pool_of_one(Duration::from_millis(100)).await;
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        released(&releases, 1).await;
    }

    #[tokio::test]
    async fn a_connection_kept_from_statement_to_statement_passes_through_sqlx_now_and_then() {
        let (mut pool, releases) = keeping_pool_of_one(Duration::from_secs(60)).await;
        let ready = Arc::get_mut(pool.ready.as_mut().unwrap()).unwrap();
        ready.kept_at_most = Duration::from_millis(400);
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        // Busy throughout, never idle long enough to be given back for that.
        while started.elapsed() < Duration::from_millis(300) {
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(releases.load(SeqCst), 0, "given back before its time");
        while started.elapsed() < Duration::from_millis(600) {
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Once past the bound, sqlx had it back (and its lifetime checked), then it is kept
        // again from there.
        released(&releases, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(releases.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn an_acquire_waiting_takes_the_connection_put_aside() {
        let (pool, releases) = keeping_pool_of_one(Duration::from_secs(60)).await;
        // A statement half way through holds the only connection...
        let mut rows = sqlx::query_scalar::<_, i64>("SELECT 1 UNION ALL SELECT 2").fetch(&pool);
        assert_eq!(rows.try_next().await.unwrap(), Some(1));
        // ...while another waits for one...
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...and takes it when the first completes, rather than timing out.
        assert_eq!(rows.try_next().await.unwrap(), Some(2));
        assert_eq!(rows.try_next().await.unwrap(), None);
        drop(rows);
        waiter.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(releases.load(SeqCst), 0, "sqlx took a completed one back");
    }
}
