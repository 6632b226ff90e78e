//! Checking access tokens: signature, pinned algorithm, issuer, audience and validity window.

use std::collections::HashMap;

use jsonwebtoken::{DecodingKey, Validation, errors::ErrorKind};

use crate::{Algorithm, Audience, Claims, Hs256Secret, Jwk, SigningKey};

/// Why a token was refused. Callers answer all of these with "unauthenticated"; the variants
/// exist for logs, metrics and the unknown-key refetch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token header has no key id")]
    MissingKeyId,
    /// The key id is the token's, chosen by whoever made it: kept for logs and the refetch, left
    /// out of the message, which callers pass on to clients.
    #[error("token is signed with an unknown key")]
    UnknownKey(String),
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by someone else")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("token claims are invalid")]
    InvalidClaims,
}

/// Verifies tokens against a fixed set of keys. Build a new one when the key set changes.
#[derive(Clone)]
pub struct Verifier {
    algorithm: Algorithm,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

/// Clock skew tolerated on `exp` and `nbf` between replicas, in seconds.
pub const LEEWAY_SECS: u64 = 5;

impl Verifier {
    fn new(algorithm: Algorithm, keys: HashMap<String, DecodingKey>, audience: &Audience) -> Self {
        // Every check is spelled out rather than left to `Validation::default()`.
        let mut validation = Validation::new(algorithm.jwt());
        validation.algorithms = vec![algorithm.jwt()];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&audience.issuer]);
        validation.set_audience(&[&audience.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Self {
            algorithm,
            keys,
            validation,
        }
    }

    /// Verifies EdDSA tokens with the Ed25519 keys of a JWK Set; other keys in the set are ignored.
    pub fn from_jwks<'a>(keys: impl IntoIterator<Item = &'a Jwk>, audience: &Audience) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|jwk| Some((jwk.kid.clone(), jwk.decoding_key()?)))
            .collect();
        Self::new(Algorithm::EdDSA, keys, audience)
    }

    /// Verifies HS256 tokens with a shared secret.
    pub fn hs256(secret: &Hs256Secret, audience: &Audience) -> Self {
        let key = SigningKey::Hs256(secret.clone());
        let keys = HashMap::from([(Hs256Secret::KID.to_owned(), key.decoding_key())]);
        Self::new(Algorithm::HS256, keys, audience)
    }

    /// Verifies tokens signed by any of these keys, which must share one algorithm.
    pub fn for_keys<'a>(
        keys: impl IntoIterator<Item = &'a SigningKey>,
        audience: &Audience,
    ) -> Self {
        let mut algorithm = Algorithm::EdDSA;
        let keys = keys
            .into_iter()
            .map(|k| {
                algorithm = k.algorithm();
                (k.kid().to_owned(), k.decoding_key())
            })
            .collect();
        Self::new(algorithm, keys, audience)
    }

    pub fn knows_key(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_with(token, &self.validation)
    }

    /// Like [`Verifier::verify`] but accepts a token past its `exp`: signature, algorithm,
    /// issuer and audience still must hold. Only for ending a session, which an expired token
    /// may still ask for.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut validation = self.validation.clone();
        validation.validate_exp = false;
        self.verify_with(token, &validation)
    }

    fn verify_with(&self, token: &str, validation: &Validation) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        // The token's own `alg` only has to match the one we pinned; it never picks the check.
        if header.alg != self.algorithm.jwt() {
            return Err(VerifyError::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    VerifyError::AlgorithmNotAllowed
                }
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    VerifyError::Malformed
                }
                _ => VerifyError::InvalidClaims,
            })
    }
}

#[cfg(test)]
mod tests;
