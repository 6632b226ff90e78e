//! What every verifier exports: `authn_verifications_total{outcome}` for each call that needed a
//! token, and `authn_jwks_age_seconds`, how old the key set fetched from auth-service is.
//!
//! The outcome counters are made once per [`crate::Gate`], after the binary installed its
//! recorder, so counting a call is an index and an atomic add.

use metrics::Counter;
use token::VerifyError;

use crate::{Keys, keys::Refusal};

/// How a call's token check ended; the label values are a contract with dashboards and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified (or found in the cache) and the caller holds a role the method allows.
    Ok,
    /// The method needs a token and none came.
    Missing,
    /// The header or the token cannot be read (no key id, not a JWT, a foreign scheme).
    Malformed,
    UnknownKey,
    BadAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    /// Another issuer or audience, or claims that do not parse.
    InvalidClaims,
    /// A valid token without a role the method allows.
    Forbidden,
    /// No key is known yet: the service cannot check any token.
    NoKeys,
    /// A valid token of an ended session or of a user whose earlier tokens were revoked (or,
    /// failing closed, one the service cannot tell about while its revocation view is stale).
    Revoked,
}

impl Outcome {
    const ALL: [Outcome; 12] = [
        Outcome::Ok,
        Outcome::Missing,
        Outcome::Malformed,
        Outcome::UnknownKey,
        Outcome::BadAlgorithm,
        Outcome::BadSignature,
        Outcome::Expired,
        Outcome::NotYetValid,
        Outcome::InvalidClaims,
        Outcome::Forbidden,
        Outcome::NoKeys,
        Outcome::Revoked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Malformed => "malformed",
            Outcome::UnknownKey => "unknown_key",
            Outcome::BadAlgorithm => "bad_algorithm",
            Outcome::BadSignature => "bad_signature",
            Outcome::Expired => "expired",
            Outcome::NotYetValid => "not_yet_valid",
            Outcome::InvalidClaims => "invalid_claims",
            Outcome::Forbidden => "forbidden",
            Outcome::NoKeys => "no_keys",
            Outcome::Revoked => "revoked",
        }
    }

    pub(crate) fn of(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::NoKeys => Outcome::NoKeys,
            Refusal::KeyPending => Outcome::UnknownKey,
            Refusal::Invalid(error) => match error {
                VerifyError::Malformed | VerifyError::MissingKeyId => Outcome::Malformed,
                VerifyError::UnknownKey(_) => Outcome::UnknownKey,
                VerifyError::AlgorithmNotAllowed => Outcome::BadAlgorithm,
                VerifyError::BadSignature => Outcome::BadSignature,
                VerifyError::Expired => Outcome::Expired,
                VerifyError::NotYetValid => Outcome::NotYetValid,
                VerifyError::WrongIssuer
                | VerifyError::WrongAudience
                | VerifyError::InvalidClaims => Outcome::InvalidClaims,
            },
        }
    }
}

/// One counter per [`Outcome`], made when the layer is built.
#[derive(Clone)]
pub(crate) struct Verifications {
    counters: [Counter; Outcome::ALL.len()],
}

impl Verifications {
    pub(crate) fn new() -> Self {
        Self {
            counters: Outcome::ALL.map(|outcome| {
                metrics::counter!("authn_verifications_total", "outcome" => outcome.label())
            }),
        }
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        self.counters[outcome as usize].increment(1);
    }
}

/// Sets `authn_jwks_age_seconds` from `keys`: the time since a JWKS fetch last brought a usable
/// key set (since start while none has; an answer without usable keys does not count). Keys that come from no JWKS (auth-service's own, HS256)
/// leave it unset. Meant for a metrics sampler, which runs it before every scrape.
pub fn record_jwks_age(keys: &Keys) {
    if let Some(age) = keys.jwks_age() {
        metrics::gauge!("authn_jwks_age_seconds").set(age.as_secs_f64());
    }
}

/// Sets `authn_revocation_staleness_seconds` from `revocations`: how long since the service's
/// view of revoked tokens was last confirmed current by the feed (an update or a heartbeat).
/// A service that follows no feed leaves it unset. Meant for a metrics sampler.
pub fn record_revocation_staleness(revocations: &crate::Revocations) {
    if let Some(staleness) = revocations.staleness() {
        metrics::gauge!("authn_revocation_staleness_seconds").set(staleness.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_indexed_in_declaration_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn verifier_errors_map_to_their_outcome() {
        let of = |e| Outcome::of(&Refusal::Invalid(e)).label();
        assert_eq!(of(VerifyError::Expired), "expired");
        assert_eq!(of(VerifyError::BadSignature), "bad_signature");
        assert_eq!(of(VerifyError::UnknownKey("k".into())), "unknown_key");
        assert_eq!(of(VerifyError::MissingKeyId), "malformed");
        assert_eq!(of(VerifyError::WrongAudience), "invalid_claims");
        assert_eq!(Outcome::of(&Refusal::NoKeys).label(), "no_keys");
        assert_eq!(Outcome::of(&Refusal::KeyPending).label(), "unknown_key");
    }
}
