//! Password hashing with argon2id on a fixed set of worker threads.
//!
//! Hashing is deliberately slow (tens of milliseconds of CPU) and takes 19 MiB, so it never
//! runs on the async threads: at most `workers` hashes run at once, each on a dedicated thread
//! that owns its argon2 memory for good (`workers.rs`, `memory.rs`), so hashing never holds more
//! than `workers` × 19 MiB (`budget.rs` sizes the default). Callers beyond that wait in a
//! bounded queue; when the queue is full they are refused at once with [`HashError::Busy`]
//! rather than piling up, so a burst of sign-ins cannot starve token checks or other requests.
//! One client may hold only its share of the admission (`share.rs`), so its burst cannot crowd
//! out others.
//!
//! The workers run at a low scheduling priority (`workers.rs`, `AUTH_HASH_PRIORITY`), so under
//! load hashes take longer rather than requests. Each hash's duration feeds a running mean, and a
//! caller whose wait behind the hashes admitted before it would exceed `max_wait`
//! (`AUTH_HASH_MAX_WAIT`) is refused at admission, at once, like one that finds the queue full:
//! the wait stays bounded however slow hashing gets. Admission is a separate, synchronous step
//! ([`PasswordHasher::admit`]), so a caller can be refused before it does any other work.

pub mod budget;
mod memory;
mod share;
mod workers;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

pub use self::workers::Priority;
use self::{
    memory::Memory,
    share::{ClientShare, Held},
    workers::Workers,
};
use crate::metrics::HashQueue;
use crate::throttle::Client;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub struct PasswordHasher {
    /// Admission: workers plus queue slots. `try_acquire` on it is what refuses a burst.
    admission: Arc<Semaphore>,
    /// Workers plus queue slots: the admission's size.
    slots: usize,
    /// At most this many hashes run at once, each in its worker's own memory.
    workers: Workers,
    worker_count: usize,
    /// The longest a caller is let wait for a worker, judged at admission.
    max_wait: Duration,
    /// Running mean of how long one hash takes on a worker, in nanoseconds.
    mean_hash_nanos: Arc<AtomicU64>,
    /// Admission slots one client may hold at once.
    share: Arc<ClientShare>,
    /// Checked when the user does not exist, so that answer takes as long as a wrong password.
    dummy_hash: Arc<str>,
    queue: HashQueue,
}

/// Admission to hashing, held from [`PasswordHasher::admit`] until the hash is done.
pub struct Admitted {
    share: Option<Held>,
    permit: OwnedSemaphorePermit,
}

/// How fast a new running mean forgets: each hash weighs 1/8.
const MEAN_WEIGHT: u64 = 8;

impl PasswordHasher {
    /// `per_client`: the admission slots (of `workers + queue`) one client may hold at once.
    /// Workers run at [`Priority::Normal`] and callers may wait as long as the queue makes
    /// them; see [`PasswordHasher::with_scheduling`].
    pub fn new(workers: usize, queue: usize, per_client: usize) -> anyhow::Result<Self> {
        Self::with_scheduling(workers, queue, per_client, Priority::Normal, Duration::MAX)
    }

    /// Like [`PasswordHasher::new`], with the workers' scheduling `priority` and the longest
    /// expected wait for a worker, `max_wait`, beyond which a caller is refused at admission.
    pub fn with_scheduling(
        workers: usize,
        queue: usize,
        per_client: usize,
        priority: Priority,
        max_wait: Duration,
    ) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        // The dummy hash is the first hash: its time seeds the running mean.
        let started = Instant::now();
        let dummy_hash = memory::dummy_hash()?.into();
        let first = duration_nanos(started.elapsed());
        Ok(Self {
            admission: Arc::new(Semaphore::new(workers + queue)),
            slots: workers + queue,
            workers: Workers::new(workers, priority),
            worker_count: workers,
            max_wait,
            mean_hash_nanos: Arc::new(AtomicU64::new(first)),
            share: Arc::new(ClientShare::new(per_client)),
            dummy_hash,
            queue: HashQueue::new(),
        })
    }

    /// Admission to one hash for `client` (`None`: the service itself), or [`HashError::Busy`]
    /// at once: the client holds its whole share, every worker and queue slot is taken, or the
    /// hashes admitted before it would keep it waiting longer than `max_wait`.
    pub fn admit(&self, client: Option<Client>) -> Result<Admitted, HashError> {
        let share = match client {
            Some(client) => Some(self.share.try_hold(client).ok_or(HashError::Busy)?),
            None => None,
        };
        let permit = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        // This caller's place: hashes admitted and not done, itself included.
        let place = self.slots - self.admission.available_permits();
        if self.expected_wait(place) > self.max_wait {
            return Err(HashError::Busy);
        }
        Ok(Admitted { share, permit })
    }

    /// How long the caller at `place` (1 = first) waits for a worker: the hashes ahead of it
    /// beyond one per worker, shared among the workers, at the running mean.
    fn expected_wait(&self, place: usize) -> Duration {
        let ahead = place.saturating_sub(self.worker_count) as u64;
        let mean = self.mean_hash_nanos.load(Ordering::Relaxed);
        Duration::from_nanos(ahead.saturating_mul(mean) / self.worker_count as u64)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt. `client`
    /// is who asked, for its share of the admission (`None`: the service itself).
    pub async fn hash(
        &self,
        password: SecretString,
        client: Option<Client>,
    ) -> Result<String, HashError> {
        let admitted = self.admit(client)?;
        self.run(admitted, move |memory| {
            memory.hash(normalized(password.expose_secret()).as_bytes())
        })
        .await
    }

    /// Whether `password` matches `hash`. With no hash (unknown user) a dummy hash is checked
    /// and the answer is `false`, taking the same time as a wrong password. A password whose
    /// [`normalized`] form differs from what was typed, and does not match in that form, is
    /// also tried as typed: hashes made before passwords were normalised are of those bytes.
    pub async fn verify(
        &self,
        password: SecretString,
        hash: Option<String>,
        client: Option<Client>,
    ) -> Result<bool, HashError> {
        let admitted = self.admit(client)?;
        self.verify_admitted(admitted, password, hash).await
    }

    /// [`PasswordHasher::verify`] with admission already granted by [`PasswordHasher::admit`].
    pub async fn verify_admitted(
        &self,
        admitted: Admitted,
        password: SecretString,
        hash: Option<String>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let dummy = self.dummy_hash.clone();
        let matches = self
            .run(admitted, move |memory| {
                let hash = hash.as_deref().unwrap_or(&dummy);
                let typed = password.expose_secret();
                let normal = normalized(typed);
                Ok(memory.verify(normal.as_bytes(), hash)?
                    || (normal != typed && memory.verify(typed.as_bytes(), hash)?))
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        admitted: Admitted,
        work: impl FnOnce(&mut Memory) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let waiting = self.queue.waiting();
        let worker = self.workers.acquire().await;
        drop(waiting);
        let (answer, answered) = oneshot::channel();
        let mean = self.mean_hash_nanos.clone();
        // The admission stays held until the hash is done, even if the caller goes away first.
        worker.run(
            Box::new(move |memory| {
                let started = Instant::now();
                let result = work(memory);
                let took = duration_nanos(started.elapsed());
                // Read and write need not be one step: a lost update only delays the mean.
                let old = mean.load(Ordering::Relaxed);
                mean.store(
                    (old * (MEAN_WEIGHT - 1) + took) / MEAN_WEIGHT,
                    Ordering::Relaxed,
                );
                Box::new(move || {
                    let _ = answer.send(result);
                })
            }),
            (admitted.share, admitted.permit),
        )?;
        answered
            .await
            .context("password hashing failed in its worker")?
            .map_err(HashError::Unexpected)
    }
}

/// What a password is hashed as: its NFKC form (NIST SP 800-63B §5.1.1.2), so the same password
/// typed where characters are composed differently (macOS keyboards send `é` decomposed, most
/// others composed) or in full-width forms still matches.
fn normalized(password: &str) -> std::borrow::Cow<'_, str> {
    icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(password)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::new(2, 2, 4).unwrap();
        let hash = hasher.hash("correct horse".into(), None).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()), None)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_password_matches_however_its_characters_are_composed() {
        let hasher = PasswordHasher::new(1, 2, 3).unwrap();
        // "pässwörd-ﬁ" decomposed (as macOS types it, with the ligature), and composed.
        let decomposed = "pa\u{308}sswo\u{308}rd-\u{fb01}";
        let composed = "p\u{e4}ssw\u{f6}rd-fi";
        let hash = hasher.hash(decomposed.into(), None).await.unwrap();
        for typed in [decomposed, composed] {
            assert!(
                hasher
                    .verify(typed.into(), Some(hash.clone()), None)
                    .await
                    .unwrap(),
                "{typed:?}"
            );
        }
        assert!(
            !hasher
                .verify("passwords-fi".into(), Some(hash), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_hash_of_the_password_as_typed_still_verifies() {
        // As hashed before passwords were normalised.
        let typed = "pa\u{308}sswo\u{308}rd";
        let hash = memory::Memory::new().hash(typed.as_bytes()).unwrap();
        let hasher = PasswordHasher::new(1, 2, 3).unwrap();
        assert!(
            hasher
                .verify(typed.into(), Some(hash.clone()), None)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("p\u{e4}ssword".into(), Some(hash), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_user_never_matches() {
        let hasher = PasswordHasher::new(1, 0, 1).unwrap();
        assert!(!hasher.verify("anything".into(), None, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_who_would_wait_longer_than_the_bound_is_refused_at_admission() {
        let hasher = PasswordHasher::with_scheduling(
            2,
            16,
            18,
            Priority::Normal,
            Duration::from_millis(100),
        )
        .unwrap();
        // As if each hash had taken 60 ms: with two workers, the 3rd in line waits 30 ms, the
        // 5th 90 ms, the 6th 120 ms.
        hasher.mean_hash_nanos.store(60_000_000, Ordering::Relaxed);
        let mut admitted: Vec<Admitted> = (0..5).map(|_| hasher.admit(None).unwrap()).collect();
        assert!(matches!(hasher.admit(None), Err(HashError::Busy)));
        // One done, one more fits; the refused caller held nothing.
        admitted.pop();
        let _fifth_again = hasher.admit(None).unwrap();
        assert!(matches!(hasher.admit(None), Err(HashError::Busy)));
        assert_eq!(hasher.admission.available_permits(), 18 - 5);
    }

    #[tokio::test]
    async fn the_mean_follows_the_hashes_it_times() {
        // A queue slot, as the admission is given back just after the answer.
        let hasher = PasswordHasher::new(1, 1, 2).unwrap();
        // Far from any real hashing time, so only the hashes below can bring it back.
        hasher
            .mean_hash_nanos
            .store(3_600_000_000_000, Ordering::Relaxed);
        for _ in 0..64 {
            hasher.hash("whatever1".into(), None).await.unwrap();
        }
        let mean = Duration::from_nanos(hasher.mean_hash_nanos.load(Ordering::Relaxed));
        assert!(mean < Duration::from_secs(60), "{mean:?}");
        assert!(mean > Duration::ZERO);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = Arc::new(PasswordHasher::new(1, 1, 2).unwrap());
        // Hold both admission slots so the next caller finds the queue full.
        let _a = hasher.admission.clone().try_acquire_owned().unwrap();
        let _b = hasher.admission.clone().try_acquire_owned().unwrap();
        assert!(matches!(
            hasher.hash("whatever1".into(), None).await,
            Err(HashError::Busy)
        ));
    }
}
