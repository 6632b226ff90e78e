//! The hashing workers: at most `count` dedicated OS threads, each owning one argon2 [`Memory`]
//! allocated when it starts and reused for every hash it computes, so hashing never holds more
//! than `count` blocks however many hashes come.
//!
//! A worker starts the first time every started one is busy, and idle workers are reused
//! last-in first-out, so a replica that never hashes more than two at once has two workers and
//! two blocks. A caller first waits for a free worker ([`Workers::acquire`], the queue the
//! metrics count); the worker is then reserved for its job until the job is done, even if the
//! caller has given up meanwhile, so no more than `count` hashes ever run. Workers stop when the
//! pool is dropped.
//!
//! Each worker runs at the [`Priority`] it was given, by default [`Priority::Idle`] (Linux
//! `SCHED_IDLE`): hashing then gets only CPU time nothing else wants, and a request thread that
//! wakes up takes the CPU from a hash at once, so a flood of sign-ins slows sign-ins, not reads,
//! token checks or refreshes.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex, PoisonError, Weak, mpsc},
};

use anyhow::Context;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::memory::Memory;

/// What a worker runs, with its memory. What it returns delivers the result, once the worker
/// is idle again: a caller that has its answer and asks again finds the same worker free.
pub(super) type Work = Box<dyn FnOnce(&mut Memory) -> Deliver + Send>;
pub(super) type Deliver = Box<dyn FnOnce() + Send>;

pub(super) struct Workers {
    /// One permit per worker that is idle or not started yet.
    free: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
    priority: Priority,
}

/// The scheduling priority of the hashing threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// `SCHED_IDLE` on Linux: only CPU time no other thread of the machine wants; a waking
    /// request thread preempts a hash at once. Needs no privilege. Elsewhere, the lowest nice.
    Idle,
    /// The same as every other thread of the process.
    Normal,
}

impl Priority {
    /// Applies to the calling thread. Lowering a thread's priority needs no privilege; should it
    /// fail all the same, the thread runs on at normal priority and says so.
    fn apply_to_current_thread(self) {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if self == Priority::Normal {
            return;
        }
        let policy = if cfg!(any(target_os = "linux", target_os = "android")) {
            NormalThreadSchedulePolicy::Idle
        } else {
            NormalThreadSchedulePolicy::Other
        };
        let result = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        );
        if let Err(error) = result {
            tracing::warn!(%error, "cannot lower the priority of a password hashing worker; it runs at normal priority");
        }
    }
}

struct State {
    /// The inboxes of idle workers, the most recently idle last.
    idle: Vec<mpsc::Sender<Job>>,
    started: usize,
}

struct Job {
    work: Work,
    /// The worker's own inbox, back on the idle list once the work is done.
    inbox: mpsc::Sender<Job>,
    /// Released after the worker is back on the idle list, so whoever gets the permit next
    /// finds it there.
    _free: OwnedSemaphorePermit,
    /// Whatever the caller keeps reserved for as long as the work runs.
    _held: Box<dyn Send>,
}

/// A free worker, reserved for one job.
pub(super) struct Reserved<'a> {
    workers: &'a Workers,
    permit: OwnedSemaphorePermit,
}

impl Workers {
    pub(super) fn new(count: usize, priority: Priority) -> Self {
        Self {
            free: Arc::new(Semaphore::new(count)),
            state: Arc::new(Mutex::new(State {
                idle: Vec::new(),
                started: 0,
            })),
            priority,
        }
    }

    /// Waits until a worker is free.
    pub(super) async fn acquire(&self) -> Reserved<'_> {
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            // The semaphore is never closed.
            .unwrap_or_else(|_| unreachable!("the workers' semaphore is never closed"));
        Reserved {
            workers: self,
            permit,
        }
    }

    /// How many workers have started (each holds one block).
    #[cfg(test)]
    pub(super) fn started(&self) -> usize {
        self.lock().started
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reserved<'_> {
    /// Runs `work` on the reserved worker, keeping `held` until it is done.
    pub(super) fn run(self, work: Work, held: impl Send + 'static) -> anyhow::Result<()> {
        let mut state = self.workers.lock();
        let inbox = match state.idle.pop() {
            Some(inbox) => inbox,
            None => {
                let inbox = spawn(
                    state.started,
                    self.workers.priority,
                    Arc::downgrade(&self.workers.state),
                )?;
                state.started += 1;
                inbox
            }
        };
        drop(state);
        inbox
            .clone()
            .send(Job {
                work,
                inbox,
                _free: self.permit,
                _held: Box::new(held),
            })
            .ok()
            .context("a password hashing worker has stopped")
    }
}

fn spawn(
    index: usize,
    priority: Priority,
    state: Weak<Mutex<State>>,
) -> anyhow::Result<mpsc::Sender<Job>> {
    let (inbox, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("argon2-{index}"))
        .spawn(move || {
            priority.apply_to_current_thread();
            serve(&jobs, &state)
        })
        .context("failed to start a password hashing worker")?;
    Ok(inbox)
}

/// A worker's life: its memory is allocated once, and it serves until the pool is gone (its
/// inbox then has no sender left).
fn serve(jobs: &mpsc::Receiver<Job>, state: &Weak<Mutex<State>>) {
    let mut memory = Memory::new();
    while let Ok(job) = jobs.recv() {
        let Job {
            work,
            inbox,
            _free,
            _held,
        } = job;
        // Argon2 does not panic on any input; should it, only this job is lost (its caller's
        // answer channel closes) and the worker goes on. The memory is overwritten by the next
        // hash, so a half-done one leaves nothing behind.
        let deliver = panic::catch_unwind(AssertUnwindSafe(|| work(&mut memory)));
        if let Some(state) = state.upgrade() {
            state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .idle
                .push(inbox);
        }
        if let Ok(deliver) = deliver {
            deliver();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// Runs `work` and waits for its answer.
    async fn answer<T: Send + 'static>(
        workers: &Workers,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        workers
            .acquire()
            .await
            .run(
                Box::new(move |memory| {
                    let answer = work(memory);
                    Box::new(move || {
                        let _ = tx.send(answer);
                    })
                }),
                (),
            )
            .unwrap();
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn one_at_a_time_needs_one_worker() {
        let workers = Workers::new(4, Priority::Normal);
        for _ in 0..5 {
            let id = answer(&workers, |_| std::thread::current().id()).await;
            assert_eq!(id, answer(&workers, |_| std::thread::current().id()).await);
        }
        assert_eq!(workers.started(), 1);
    }

    #[tokio::test]
    async fn no_more_than_count_run_even_when_callers_give_up() {
        let workers = Arc::new(Workers::new(2, Priority::Normal));
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        // Two jobs that wait to be released, whose callers have gone.
        for _ in 0..2 {
            let blocked = blocked.clone();
            workers
                .acquire()
                .await
                .run(
                    Box::new(move |_| {
                        let _ = blocked.lock().unwrap().recv();
                        Box::new(|| ())
                    }),
                    (),
                )
                .unwrap();
        }
        let third = tokio::time::timeout(Duration::from_millis(200), workers.acquire()).await;
        assert!(third.is_err(), "a third worker was free while two ran");
        release.send(()).unwrap();
        release.send(()).unwrap();
        answer(&workers, |_| ()).await;
        assert_eq!(workers.started(), 2);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn idle_workers_hash_under_sched_idle_and_normal_ones_do_not() {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, unix::thread_schedule_policy,
        };
        let idle = Workers::new(1, Priority::Idle);
        assert_eq!(
            answer(&idle, |_| thread_schedule_policy().unwrap()).await,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        // Only the worker's own thread: the caller's is untouched.
        assert_eq!(
            thread_schedule_policy().unwrap(),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
        let normal = Workers::new(1, Priority::Normal);
        assert_eq!(
            answer(&normal, |_| thread_schedule_policy().unwrap()).await,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }

    #[tokio::test]
    async fn a_panicking_job_loses_only_itself() {
        let workers = Workers::new(1, Priority::Normal);
        let (tx, rx) = oneshot::channel::<()>();
        workers
            .acquire()
            .await
            .run(
                Box::new(move |_| {
                    let _tx = tx;
                    panic!("boom");
                }),
                (),
            )
            .unwrap();
        assert!(rx.await.is_err());
        answer(&workers, |_| ()).await;
        assert_eq!(workers.started(), 1);
    }
}
