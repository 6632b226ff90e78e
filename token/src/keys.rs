//! Signing keys: Ed25519 by default, a shared HS256 secret for single-binary set-ups.

use std::{fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::Jwk;

/// The algorithms this project signs with. Verifiers pin one; the token's own `alg` never decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    EdDSA,
    HS256,
}

impl Algorithm {
    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        })
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "EDDSA" | "ED25519" => Ok(Algorithm::EdDSA),
            "HS256" => Ok(Algorithm::HS256),
            _ => Err(KeyError::UnsupportedAlgorithm(s.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported token algorithm {0:?}: expected EdDSA or HS256")]
    UnsupportedAlgorithm(String),
    #[error("the HS256 secret must be at least {min} bytes, got {got}")]
    SecretTooShort { min: usize, got: usize },
    #[error("an Ed25519 seed must be exactly 32 bytes")]
    BadSeed,
}

/// An Ed25519 key pair; its `kid` is the RFC 7638 thumbprint of the public key.
#[derive(Clone)]
pub struct Ed25519Key {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl Ed25519Key {
    pub fn generate() -> Self {
        Self::from_signing_key(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Rebuilds a key from the 32-byte seed that [`Ed25519Key::seed`] returned.
    pub fn from_seed(seed: &[u8]) -> Result<Self, KeyError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::BadSeed)?;
        Ok(Self::from_signing_key(
            ed25519_dalek::SigningKey::from_bytes(&seed),
        ))
    }

    fn from_signing_key(key: ed25519_dalek::SigningKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        // RFC 7638: the members in lexicographic order, no white space.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Self { kid, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private seed. Handle with care: this is the key.
    pub fn seed(&self) -> SecretSlice<u8> {
        self.key.to_bytes().to_vec().into()
    }

    pub fn public_jwk(&self) -> Jwk {
        Jwk::ed25519(
            &self.kid,
            &URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        )
    }

    /// Signs `message` with the bare Ed25519 primitive, for tests that forge tokens by hand.
    #[cfg(test)]
    pub(crate) fn raw_sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A shared secret for HS256; anyone holding it can mint tokens, so it suits one-binary set-ups.
#[derive(Clone)]
pub struct Hs256Secret {
    secret: SecretSlice<u8>,
}

impl Hs256Secret {
    pub const MIN_LEN: usize = 32;
    /// Symmetric keys are never published, so one fixed key id is enough.
    pub const KID: &'static str = "hs256";

    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < Self::MIN_LEN {
            return Err(KeyError::SecretTooShort {
                min: Self::MIN_LEN,
                got: secret.len(),
            });
        }
        Ok(Self {
            secret: secret.to_vec().into(),
        })
    }

    /// The secret itself: for signing, and for deriving other keys from it (auth-service's
    /// throttle fingerprints). Never to be logged.
    pub fn bytes(&self) -> &[u8] {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for Hs256Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hs256Secret([REDACTED])")
    }
}

/// The key an [`crate::Issuer`] signs with.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // One per process; boxing would buy nothing.
pub enum SigningKey {
    Ed25519(Ed25519Key),
    Hs256(Hs256Secret),
}

impl SigningKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Ed25519(_) => Algorithm::EdDSA,
            SigningKey::Hs256(_) => Algorithm::HS256,
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            SigningKey::Ed25519(k) => k.kid(),
            SigningKey::Hs256(_) => Hs256Secret::KID,
        }
    }

    /// The key in the form that signs: parsed once, here, rather than on every token.
    pub(crate) fn sign_key(&self) -> SignKey {
        match self {
            SigningKey::Ed25519(k) => SignKey::Ed25519(k.key.clone()),
            SigningKey::Hs256(s) => SignKey::Hs256(EncodingKey::from_secret(s.bytes())),
        }
    }

    /// The key that checks this key's signatures.
    pub(crate) fn check_key(&self) -> CheckKey {
        match self {
            SigningKey::Ed25519(k) => CheckKey::Ed25519(k.key.verifying_key()),
            SigningKey::Hs256(s) => CheckKey::Hs256(DecodingKey::from_secret(s.bytes())),
        }
    }
}

/// A signing key ready to use. An Ed25519 key is held expanded (scalar, nonce prefix and public
/// key), so signing costs one signature, not a key derivation as well.
pub(crate) enum SignKey {
    Ed25519(ed25519_dalek::SigningKey),
    Hs256(EncodingKey),
}

/// A verification key ready to use. An Ed25519 key is held with its point already decompressed, so
/// checking a signature costs one verification, not a decompression as well.
#[derive(Clone)]
pub(crate) enum CheckKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Hs256(DecodingKey),
}

impl CheckKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            CheckKey::Ed25519(_) => Algorithm::EdDSA,
            CheckKey::Hs256(_) => Algorithm::HS256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_key_survives_a_round_trip_through_its_seed() {
        let key = Ed25519Key::generate();
        let again = Ed25519Key::from_seed(key.seed().expose_secret()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
    }

    #[test]
    fn different_keys_have_different_kids() {
        assert_ne!(Ed25519Key::generate().kid(), Ed25519Key::generate().kid());
    }

    #[test]
    fn short_hs256_secret_is_refused() {
        assert!(matches!(
            Hs256Secret::new(b"too short"),
            Err(KeyError::SecretTooShort { min: 32, got: 9 })
        ));
        assert!(Hs256Secret::new(&[7u8; 32]).is_ok());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let secret = Hs256Secret::new(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{secret:?}"), "Hs256Secret([REDACTED])");
        let key = Ed25519Key::generate();
        assert_eq!(
            format!("{key:?}"),
            format!("Ed25519Key {{ kid: {:?}, .. }}", key.kid())
        );
    }
}
