//! Checking access tokens: signature, pinned algorithm, issuer, audience and validity window.
//!
//! The JWS compact form (RFC 7515) is taken apart here rather than in jsonwebtoken, so the keys are
//! parsed once, when the verifier is built (an Ed25519 key with its point decompressed), and the
//! header and claims are decoded once per token.

use std::{borrow::Cow, collections::HashMap};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

use crate::{Algorithm, Audience, Claims, Hs256Secret, Jwk, SigningKey, keys::CheckKey, unix_now};

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
    keys: HashMap<String, CheckKey>,
    audience: Audience,
}

/// Clock skew tolerated on `exp` and `nbf` between replicas, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The members of the protected header that decide anything. The others are ignored, except `crit`:
/// this verifier understands no extension, so a token that says it needs one is refused.
#[derive(Deserialize)]
struct Header<'a> {
    /// A name jsonwebtoken knows, or the token is malformed.
    alg: jsonwebtoken::Algorithm,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

impl Verifier {
    fn new(algorithm: Algorithm, keys: HashMap<String, CheckKey>, audience: &Audience) -> Self {
        Self {
            algorithm,
            keys,
            audience: audience.clone(),
        }
    }

    /// Verifies EdDSA tokens with the Ed25519 keys of a JWK Set; other keys in the set, and keys
    /// whose `x` is not a point on the curve, are ignored.
    pub fn from_jwks<'a>(keys: impl IntoIterator<Item = &'a Jwk>, audience: &Audience) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|jwk| Some((jwk.kid.clone(), CheckKey::Ed25519(jwk.verifying_key()?))))
            .collect();
        Self::new(Algorithm::EdDSA, keys, audience)
    }

    /// Verifies HS256 tokens with a shared secret.
    pub fn hs256(secret: &Hs256Secret, audience: &Audience) -> Self {
        let key = SigningKey::Hs256(secret.clone());
        let keys = HashMap::from([(Hs256Secret::KID.to_owned(), key.check_key())]);
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
                (k.kid().to_owned(), k.check_key())
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
        self.verify_with(token, true)
    }

    /// Like [`Verifier::verify`] but accepts a token past its `exp`: signature, algorithm,
    /// issuer and audience still must hold. Only for ending a session, which an expired token
    /// may still ask for.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_with(token, false)
    }

    /// The checks, in the order jsonwebtoken made them, so each token gets the same answer it
    /// always did: shape and header, pinned algorithm, key, signature, then the claims.
    fn verify_with(&self, token: &str, check_expiry: bool) -> Result<Claims, VerifyError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
        let (header, payload) = signing_input
            .rsplit_once('.')
            .ok_or(VerifyError::Malformed)?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| VerifyError::Malformed)?;
        // Whole UTF-8 first: the members skipped below would not be checked otherwise.
        let header = std::str::from_utf8(&header).map_err(|_| VerifyError::Malformed)?;
        let header: Header = serde_json::from_str(header).map_err(|_| VerifyError::Malformed)?;
        if header.crit.is_some() {
            return Err(VerifyError::Malformed);
        }
        // The token's own `alg` only has to match the one we pinned; it never picks the check.
        if header.alg != self.algorithm.jwt() {
            return Err(VerifyError::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
        let key = self
            .keys
            .get(kid.as_ref())
            .ok_or_else(|| VerifyError::UnknownKey(kid.into_owned()))?;
        check_signature(key, self.algorithm, signing_input, signature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| VerifyError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::InvalidClaims)?;
        self.check_claims(&claims, check_expiry)?;
        Ok(claims)
    }

    fn check_claims(&self, claims: &Claims, check_expiry: bool) -> Result<(), VerifyError> {
        // Times are NumericDates: a negative one is no date at all.
        if claims.exp < 0 || claims.nbf < 0 {
            return Err(VerifyError::InvalidClaims);
        }
        let now = unix_now();
        let leeway = LEEWAY_SECS as i64;
        if check_expiry && claims.exp < now - leeway {
            return Err(VerifyError::Expired);
        }
        if claims.nbf > now + leeway {
            return Err(VerifyError::NotYetValid);
        }
        if claims.iss != self.audience.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if claims.aud != self.audience.audience {
            return Err(VerifyError::WrongAudience);
        }
        Ok(())
    }
}

/// Checks `signature` (base64url, as in the token) over `signing_input` with `key`.
fn check_signature(
    key: &CheckKey,
    algorithm: Algorithm,
    signing_input: &str,
    signature: &str,
) -> Result<(), VerifyError> {
    // A verifier built from keys of mixed algorithms holds some it must not use.
    if key.algorithm() != algorithm {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    match key {
        CheckKey::Ed25519(key) => {
            let signature = URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| VerifyError::Malformed)?;
            let signature = ed25519_dalek::Signature::from_slice(&signature)
                .map_err(|_| VerifyError::BadSignature)?;
            ed25519_dalek::Verifier::verify(key, signing_input.as_bytes(), &signature)
                .map_err(|_| VerifyError::BadSignature)
        }
        CheckKey::Hs256(key) => match jsonwebtoken::crypto::verify(
            signature,
            signing_input.as_bytes(),
            key,
            jsonwebtoken::Algorithm::HS256,
        ) {
            Ok(true) => Ok(()),
            Ok(false) => Err(VerifyError::BadSignature),
            Err(_) => Err(VerifyError::Malformed),
        },
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod interop;
