//! Reads by id on PostgreSQL share a query when they arrive together. While fewer than
//! [`IN_FLIGHT`] reads run, a read runs its own query at once, exactly as without batching. A
//! read that arrives while that many run waits for one of them to finish; then every read
//! waiting by then goes in one `WHERE person_id = ANY($1)` query. Under load that is one round
//! trip (and one statement's work in sqlx and the kernel) for many reads; when idle it changes
//! nothing.
//!
//! A read never takes the answer of a query that began before it arrived: it only ever joins
//! the next query. So a read that starts after a write has committed sees that write.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use sqlx::Postgres;
use tokio::sync::oneshot;

use database::MeteredPool;

use super::PersonRow;

/// How many queries by id may run at once before reads start to wait and share one. Two keep
/// a query in flight while the previous one's answers are handed out.
const IN_FLIGHT: usize = 2;

const GET: &str = "SELECT person_id, name, email, age FROM persons WHERE person_id = $1";

const GET_MANY: &str = "SELECT person_id, name, email, age FROM persons WHERE person_id = ANY($1)";

/// Why a read got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The query failed; every read that shared it gets the same error.
    Query(Arc<sqlx::Error>),
    /// The query that would have answered was dropped: the runtime is shutting down.
    Abandoned,
}

pub type Read = Result<Option<PersonRow>, Failure>;

pub struct Reads {
    pool: MeteredPool<Postgres>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    waiting: Vec<Waiter>,
}

struct Waiter {
    id: i64,
    answer: oneshot::Sender<Read>,
}

impl Reads {
    pub fn new(pool: MeteredPool<Postgres>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            state: Mutex::default(),
        })
    }

    /// The person `id`, from a query that began after this call did.
    pub async fn get(self: &Arc<Self>, id: i64) -> Read {
        let answer = {
            let mut state = self.state();
            if state.running < IN_FLIGHT {
                state.running += 1;
                None
            } else {
                let (answer, answered) = oneshot::channel();
                state.waiting.push(Waiter { id, answer });
                Some(answered)
            }
        };
        match answer {
            None => {
                // Dropped when the query ends or the caller gives up: either way the slot
                // passes to the reads that waited meanwhile.
                let _slot = Slot(self);
                sqlx::query_as(GET)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| Failure::Query(Arc::new(e)))
            }
            Some(answered) => answered.await.unwrap_or(Err(Failure::Abandoned)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is never held across anything that can panic halfway through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reads waiting now, or `None` after giving up the slot when none wait.
    fn next_batch(&self) -> Option<Vec<Waiter>> {
        let mut state = self.state();
        if state.waiting.is_empty() {
            state.running -= 1;
            None
        } else {
            Some(std::mem::take(&mut state.waiting))
        }
    }

    /// Answers batches until none wait, then gives up the slot.
    async fn drain(self: Arc<Self>, mut batch: Vec<Waiter>) {
        loop {
            self.answer(batch).await;
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    async fn answer(&self, batch: Vec<Waiter>) {
        let ids: Vec<i64> = batch.iter().map(|w| w.id).collect();
        let rows = sqlx::query_as::<_, PersonRow>(GET_MANY)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await;
        match rows {
            Ok(mut rows) => {
                rows.sort_unstable_by_key(|r| r.person_id);
                for waiter in batch {
                    let row = rows
                        .binary_search_by_key(&waiter.id, |r| r.person_id)
                        .ok()
                        .map(|i| rows[i].clone());
                    // A reader that gave up no longer listens.
                    let _ = waiter.answer.send(Ok(row));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiter in batch {
                    let _ = waiter.answer.send(Err(Failure::Query(error.clone())));
                }
            }
        }
    }
}

/// A running query's place among the [`IN_FLIGHT`].
struct Slot<'a>(&'a Arc<Reads>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.0.next_batch() else {
            return;
        };
        // The caller whose query just ended gets its answer now; the batch runs on its own task.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.0.clone().drain(batch));
            }
            // No runtime to run it on: the waiting reads are answered `Abandoned`.
            Err(_) => {
                drop(batch);
                while self.0.next_batch().is_some() {}
            }
        }
    }
}

impl fmt::Debug for Reads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reads").field("pool", &self.pool).finish()
    }
}
