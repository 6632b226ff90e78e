//! Password hashing with argon2id on a bounded set of blocking threads.
//!
//! Hashing is deliberately slow (tens of milliseconds of CPU), so it never runs on the async
//! threads, and at most `workers` hashes run at once. Callers beyond that wait in a bounded
//! queue; when the queue is full they are refused at once with [`HashError::Busy`] rather than
//! piling up, so a burst of sign-ins cannot starve token checks or other requests. One client
//! may hold only its share of the admission (`share.rs`), so its burst cannot crowd out others.

mod share;

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier, Version,
    password_hash::SaltString,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use self::share::ClientShare;
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
    argon2: Argon2<'static>,
    /// Admission: workers plus queue slots. `try_acquire` on it is what refuses a burst.
    admission: Arc<Semaphore>,
    /// At most this many hashes run at once.
    workers: Arc<Semaphore>,
    /// Admission slots one client may hold at once.
    share: Arc<ClientShare>,
    /// Checked when the user does not exist, so that answer takes as long as a wrong password.
    dummy_hash: String,
    queue: HashQueue,
}

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
fn owasp_params() -> Params {
    // These constants are within argon2's limits, so `new` cannot fail; the fallback is the
    // crate's own default (which is the same recommendation).
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

impl PasswordHasher {
    /// `per_client`: the admission slots (of `workers + queue`) one client may hold at once.
    pub fn new(workers: usize, queue: usize, per_client: usize) -> anyhow::Result<Self> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let dummy_hash = argon2
            .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("failed to compute the dummy password hash")?
            .to_string();
        let workers = workers.max(1);
        Ok(Self {
            argon2,
            admission: Arc::new(Semaphore::new(workers + queue)),
            workers: Arc::new(Semaphore::new(workers)),
            share: Arc::new(ClientShare::new(per_client)),
            dummy_hash,
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
        let argon2 = self.argon2.clone();
        self.run(client, move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("failed to hash password: {e}"))
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
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let argon2 = self.argon2.clone();
        let matches = self
            .run(client, move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|e| anyhow::anyhow!("stored password hash is invalid: {e}"))?;
                Ok(argon2
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        client: Option<Client>,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let _share = match client {
            Some(client) => Some(self.share.try_hold(client).ok_or(HashError::Busy)?),
            None => None,
        };
        let _admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let waiting = self.queue.waiting();
        // The semaphore is never closed, so acquiring can only wait, not fail.
        let _worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        drop(waiting);
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task failed")?
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
