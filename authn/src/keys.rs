//! The verification keys in force, swapped whole when the key set changes.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};

use token::{Claims, Verifier, VerifyError};

use crate::JwksSource;

/// Why [`Keys::verify`] refused a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token itself is bad: the caller gets UNAUTHENTICATED.
    Invalid(VerifyError),
    /// We have no keys at all yet (auth-service never answered): the caller gets UNAVAILABLE
    /// and may retry, since the token may well be good.
    NoKeys,
    /// The token names a key id we do not have, and a JWKS refetch for it has started in the
    /// background (only from [`Keys::verify_without_waiting`]): UNAUTHENTICATED, but a retry
    /// may succeed once the new key has arrived.
    KeyPending,
}

/// The verifier in force and a count of key removals. Shared by [`Keys`] and the JWKS source.
pub(crate) struct KeySlot {
    current: RwLock<Arc<Verifier>>,
    /// Bumped whenever a key disappears, so tokens cached under the old set are checked again
    /// (a key withdrawn after a compromise must stop working at once, cached or not).
    removals: AtomicU64,
}

impl KeySlot {
    pub(crate) fn new(verifier: Verifier) -> Self {
        Self {
            current: RwLock::new(Arc::new(verifier)),
            removals: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self) -> Arc<Verifier> {
        // A poisoned lock only means a writer panicked between two whole values; the value
        // inside is still a complete verifier.
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn install(&self, verifier: Verifier) {
        let mut current = match self.current.write() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        let removed = current.key_ids().any(|kid| !verifier.knows_key(kid));
        *current = Arc::new(verifier);
        if removed {
            self.removals.fetch_add(1, Ordering::AcqRel);
            tracing::info!("a token key was withdrawn; cached tokens will be verified again");
        }
    }
}

/// Shared handle to the current [`Verifier`]; cloning it is cheap.
#[derive(Clone)]
pub struct Keys {
    slot: Arc<KeySlot>,
    jwks: Option<JwksSource>,
}

impl Keys {
    /// Keys that only change when [`Keys::replace`] is called: auth-service's own, or HS256.
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            slot: Arc::new(KeySlot::new(verifier)),
            jwks: None,
        }
    }

    pub(crate) fn remote(slot: Arc<KeySlot>, jwks: JwksSource) -> Self {
        Self {
            slot,
            jwks: Some(jwks),
        }
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        self.slot.get()
    }

    pub fn replace(&self, verifier: Verifier) {
        self.slot.install(verifier);
    }

    /// How long ago a JWKS fetch last brought a usable key set; `None` for keys that come from
    /// no JWKS.
    pub fn jwks_age(&self) -> Option<std::time::Duration> {
        self.jwks.as_ref().map(JwksSource::age)
    }

    /// How many times a key has been withdrawn; a cached token verified under an older count
    /// must be verified again.
    pub fn removals(&self) -> u64 {
        self.slot.removals.load(Ordering::Acquire)
    }

    /// Verifies locally. Only a token signed with a key id we have never seen triggers a JWKS
    /// refetch, and that refetch is shared by concurrent callers and rate-limited; this waits
    /// for it.
    pub async fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        match self.verify_now(token) {
            Err(Refusal::Invalid(VerifyError::UnknownKey(kid))) => match &self.jwks {
                Some(jwks) => {
                    jwks.refetch_for(&kid).await;
                    self.verify_with_what_we_have(token)
                }
                None => Err(Refusal::Invalid(VerifyError::UnknownKey(kid))),
            },
            other => other,
        }
    }

    /// [`Keys::verify`] for a caller that cannot wait (a tonic interceptor): a token naming a
    /// key id we have never seen starts the same single-flight refetch in the background and is
    /// refused at once with [`Refusal::KeyPending`] (or [`Refusal::NoKeys`] while we have none).
    pub fn verify_without_waiting(&self, token: &str) -> Result<Claims, Refusal> {
        match self.verify_now(token) {
            Err(Refusal::Invalid(VerifyError::UnknownKey(kid))) => match &self.jwks {
                Some(jwks) => {
                    jwks.refetch_in_background(kid);
                    if self.verifier().key_count() == 0 {
                        Err(Refusal::NoKeys)
                    } else {
                        Err(Refusal::KeyPending)
                    }
                }
                None => Err(Refusal::Invalid(VerifyError::UnknownKey(kid))),
            },
            other => other,
        }
    }

    /// The first attempt of both: the key set in hand, unknown key ids reported as such.
    fn verify_now(&self, token: &str) -> Result<Claims, Refusal> {
        self.verifier().verify(token).map_err(Refusal::Invalid)
    }

    /// After a refetch: a key set that is still empty means auth-service never answered.
    fn verify_with_what_we_have(&self, token: &str) -> Result<Claims, Refusal> {
        let verifier = self.verifier();
        if verifier.key_count() == 0 {
            return Err(Refusal::NoKeys);
        }
        verifier.verify(token).map_err(Refusal::Invalid)
    }
}
