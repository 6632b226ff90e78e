//! Refresh tokens: opaque random strings, stored only as a hash. The child a refresh hands out
//! is kept for the grace window sealed under a key derived from its parent, so a retry of the
//! parent gets the same child back and a database dump yields no usable token.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// 256 bits of randomness, as the issue asks.
const TOKEN_BYTES: usize = 32;
const NONCE_LEN: usize = 24;
/// Domain separation for the sealing key, so it can never equal a key derived for anything else.
const SEALING_INFO: &[u8] = b"auth-service refresh-token child v1";

/// A refresh token as the client holds it. Never logged: `Debug` shows nothing of it.
#[derive(Clone)]
pub struct RefreshToken(SecretString);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

impl RefreshToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_client(text: String) -> Self {
        Self(SecretString::from(text.trim().to_owned()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the database keeps: SHA-256 of the token. The token is 256 random bits, so no salt
    /// or slow hash is needed to make the hash useless to a thief.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.expose().as_bytes()).to_vec()
    }

    fn sealing_cipher(&self) -> XChaCha20Poly1305 {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so `expand` cannot fail.
        let _ = Hkdf::<Sha256>::new(None, self.expose().as_bytes()).expand(SEALING_INFO, &mut key);
        XChaCha20Poly1305::new(&key.into())
    }

    /// Seals `child` under a key derived from this (parent) token.
    pub fn seal_child(&self, child: &RefreshToken) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .sealing_cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: child.expose().as_bytes(),
                    aad: SEALING_INFO,
                },
            )
            .map_err(|_| anyhow::anyhow!("failed to seal the child refresh token"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`RefreshToken::seal_child`] sealed with this token.
    pub fn open_child(&self, sealed: &[u8]) -> anyhow::Result<RefreshToken> {
        if sealed.len() < NONCE_LEN {
            anyhow::bail!("sealed child refresh token is truncated");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("sealed child refresh token is truncated"))?;
        let child = self
            .sealing_cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: SEALING_INFO,
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot open the sealed child refresh token"))?;
        let child = String::from_utf8(child)
            .map_err(|_| anyhow::anyhow!("sealed child refresh token is not text"))?;
        Ok(Self(SecretString::from(child)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits_and_hash_to_32_bytes() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash().len(), 32);
        assert_eq!(
            a.hash(),
            RefreshToken::from_client(a.expose().to_owned()).hash()
        );
    }

    #[test]
    fn only_the_parent_opens_the_child() {
        let parent = RefreshToken::generate();
        let child = RefreshToken::generate();
        let sealed = parent.seal_child(&child).unwrap();
        let plain = child.expose().as_bytes();
        assert!(!sealed.windows(8).any(|w| plain.windows(8).any(|c| c == w)));
        assert_eq!(parent.open_child(&sealed).unwrap().expose(), child.expose());
        assert!(RefreshToken::generate().open_child(&sealed).is_err());
        assert!(parent.open_child(&sealed[..10]).is_err());
    }

    #[test]
    fn debug_shows_no_token() {
        let token = RefreshToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
