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

pub mod budget;
mod memory;
mod share;
mod workers;

use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Semaphore, oneshot};

use self::{memory::Memory, share::ClientShare, workers::Workers};
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
    /// At most this many hashes run at once, each in its worker's own memory.
    workers: Workers,
    /// Admission slots one client may hold at once.
    share: Arc<ClientShare>,
    /// Checked when the user does not exist, so that answer takes as long as a wrong password.
    dummy_hash: Arc<str>,
    queue: HashQueue,
}

impl PasswordHasher {
    /// `per_client`: the admission slots (of `workers + queue`) one client may hold at once.
    pub fn new(workers: usize, queue: usize, per_client: usize) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        Ok(Self {
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Workers::new(workers),
            share: Arc::new(ClientShare::new(per_client)),
            dummy_hash: memory::dummy_hash()?.into(),
            queue: HashQueue::new(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt. `client`
    /// is who asked, for its share of the admission (`None`: the service itself).
    pub async fn hash(
        &self,
        password: SecretString,
        client: Option<Client>,
    ) -> Result<String, HashError> {
        self.run(client, move |memory| {
            memory.hash(password.expose_secret().as_bytes())
        })
        .await
    }

    /// Whether `password` matches `hash`. With no hash (unknown user) a dummy hash is checked
    /// and the answer is `false`, taking the same time as a wrong password.
    pub async fn verify(
        &self,
        password: SecretString,
        hash: Option<String>,
        client: Option<Client>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let dummy = self.dummy_hash.clone();
        let matches = self
            .run(client, move |memory| {
                let hash = hash.as_deref().unwrap_or(&dummy);
                memory.verify(password.expose_secret().as_bytes(), hash)
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        client: Option<Client>,
        work: impl FnOnce(&mut Memory) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let share = match client {
            Some(client) => Some(self.share.try_hold(client).ok_or(HashError::Busy)?),
            None => None,
        };
        let admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let waiting = self.queue.waiting();
        let worker = self.workers.acquire().await;
        drop(waiting);
        let (answer, answered) = oneshot::channel();
        // The admission stays held until the hash is done, even if the caller goes away first.
        worker.run(
            Box::new(move |memory| {
                let result = work(memory);
                Box::new(move || {
                    let _ = answer.send(result);
                })
            }),
            (share, admitted),
        )?;
        answered
            .await
            .context("password hashing failed in its worker")?
            .map_err(HashError::Unexpected)
    }
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
    async fn an_unknown_user_never_matches() {
        let hasher = PasswordHasher::new(1, 0, 1).unwrap();
        assert!(!hasher.verify("anything".into(), None, None).await.unwrap());
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
