//! The verification keys in force, swapped whole when the key set changes.

use std::sync::{Arc, RwLock};

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
}

/// Shared handle to the current [`Verifier`]; cloning it is cheap.
#[derive(Clone)]
pub struct Keys {
    current: Arc<RwLock<Arc<Verifier>>>,
    jwks: Option<JwksSource>,
}

impl Keys {
    /// Keys that only change when [`Keys::replace`] is called: auth-service's own, or HS256.
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(verifier))),
            jwks: None,
        }
    }

    pub(crate) fn remote(current: Arc<RwLock<Arc<Verifier>>>, jwks: JwksSource) -> Self {
        Self {
            current,
            jwks: Some(jwks),
        }
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        // A poisoned lock only means a writer panicked between two whole values; the value
        // inside is still a complete verifier.
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, verifier: Verifier) {
        let verifier = Arc::new(verifier);
        match self.current.write() {
            Ok(mut v) => *v = verifier,
            Err(poisoned) => *poisoned.into_inner() = verifier,
        }
    }

    /// Verifies locally. Only a token signed with a key id we have never seen triggers a JWKS
    /// refetch, and that refetch is shared by concurrent callers and rate-limited.
    pub async fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let verifier = self.verifier();
        match verifier.verify(token) {
            Ok(claims) => Ok(claims),
            Err(VerifyError::UnknownKey(kid)) => {
                let Some(jwks) = &self.jwks else {
                    return Err(Refusal::Invalid(VerifyError::UnknownKey(kid)));
                };
                jwks.refetch_for(&kid).await;
                let verifier = self.verifier();
                if verifier.key_count() == 0 {
                    return Err(Refusal::NoKeys);
                }
                verifier.verify(token).map_err(Refusal::Invalid)
            }
            Err(e) => Err(Refusal::Invalid(e)),
        }
    }
}
