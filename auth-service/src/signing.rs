//! The keys this service signs with, shared by every replica through the database.
//!
//! The private key lives in the `signing_keys` table, sealed with XChaCha20-Poly1305 under a
//! key-encryption key from configuration (`AUTH_KEY_ENCRYPTION_KEY`, mounted from a Secret), so
//! a database dump alone cannot mint tokens. The first replica to start with an empty table
//! generates a key; the table's unique `generation` makes every concurrent attempt but one a
//! no-op, and all replicas then load the same key.

use anyhow::{Context, bail};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use token::{Audience, Ed25519Key, Hs256Secret, Issuer, Jwk, SigningKey, Verifier, unix_now};

use crate::store::{Store, StoredKey};

const SEALED: &str = "xchacha20poly1305";
const PLAIN: &str = "none";
const NONCE_LEN: usize = 24;

/// A 32-byte key that seals signing keys at rest.
#[derive(Clone)]
pub struct KeyEncryptionKey(SecretSlice<u8>);

impl KeyEncryptionKey {
    pub fn new(bytes: Vec<u8>) -> anyhow::Result<Self> {
        if bytes.len() != 32 {
            bail!(
                "the key-encryption key must be 32 bytes, got {}",
                bytes.len()
            );
        }
        Ok(Self(bytes.into()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // The length was checked in `new`, so this conversion cannot fail.
        XChaCha20Poly1305::new(self.0.expose_secret().into())
    }

    fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("failed to seal signing key"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("sealed signing key {kid} is truncated");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("sealed signing key {kid} is truncated"))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot unseal signing key {kid}: AUTH_KEY_ENCRYPTION_KEY is not the key it was sealed with"
                )
            })
    }
}

/// How tokens are signed, from configuration.
#[derive(Clone)]
pub enum KeyConfig {
    /// Ed25519 keys kept in the database, sealed when a key-encryption key is given.
    Ed25519 { kek: Option<KeyEncryptionKey> },
    /// One shared secret from configuration; nothing is stored.
    Hs256(Hs256Secret),
}

/// The active signing key and everything needed to check what it and its predecessors signed.
pub struct SigningKeys {
    pub issuer: Issuer,
    pub verifier: Verifier,
    /// Public keys to publish; empty for HS256, whose key is secret.
    pub jwks: Vec<Jwk>,
}

impl SigningKeys {
    pub async fn load_or_create(
        store: &Store,
        config: &KeyConfig,
        audience: &Audience,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Self> {
        match config {
            KeyConfig::Hs256(secret) => {
                tracing::info!("signing tokens with HS256 and the configured shared secret");
                let key = SigningKey::Hs256(secret.clone());
                Ok(Self {
                    verifier: Verifier::for_keys([&key], audience),
                    issuer: Issuer::new(key, audience.clone(), ttl)?,
                    jwks: Vec::new(),
                })
            }
            KeyConfig::Ed25519 { kek } => {
                let keys = load_ed25519(store, kek.as_ref()).await?;
                let active = keys
                    .first()
                    .context("no signing key after generating one")?
                    .clone();
                tracing::info!(
                    kid = active.kid(),
                    keys = keys.len(),
                    "signing tokens with Ed25519"
                );
                Ok(Self {
                    verifier: Verifier::from_jwks(
                        keys.iter()
                            .map(|k| k.public_jwk())
                            .collect::<Vec<_>>()
                            .iter(),
                        audience,
                    ),
                    jwks: keys.iter().map(Ed25519Key::public_jwk).collect(),
                    issuer: Issuer::new(SigningKey::Ed25519(active), audience.clone(), ttl)?,
                })
            }
        }
    }
}

/// Every stored Ed25519 key, newest first, generating the first one if there is none.
async fn load_ed25519(
    store: &Store,
    kek: Option<&KeyEncryptionKey>,
) -> anyhow::Result<Vec<Ed25519Key>> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        let key = Ed25519Key::generate();
        let seed = key.seed();
        let (encryption, private_key) = match kek {
            Some(kek) => (SEALED, kek.seal(key.kid(), seed.expose_secret())?),
            None => {
                tracing::warn!(
                    "AUTH_KEY_ENCRYPTION_KEY is not set: the signing key is stored unsealed; set it in production"
                );
                (PLAIN, seed.expose_secret().to_vec())
            }
        };
        let inserted = store
            .insert_signing_key(&StoredKey {
                kid: key.kid().to_owned(),
                generation: 1,
                algorithm: "EdDSA".to_owned(),
                encryption: encryption.to_owned(),
                private_key,
                created_at: unix_now(),
            })
            .await?;
        if inserted {
            tracing::info!(
                kid = key.kid(),
                "generated a new Ed25519 signing key and stored it for every replica"
            );
        } else {
            tracing::info!("another replica generated the signing key first; using it");
        }
        stored = store.signing_keys().await?;
    }
    stored
        .iter()
        .filter(|k| k.algorithm == "EdDSA")
        .map(|k| unseal(k, kek))
        .collect()
}

fn unseal(stored: &StoredKey, kek: Option<&KeyEncryptionKey>) -> anyhow::Result<Ed25519Key> {
    let seed = match (stored.encryption.as_str(), kek) {
        (SEALED, Some(kek)) => kek.open(&stored.kid, &stored.private_key)?,
        (SEALED, None) => bail!(
            "signing key {} is sealed; set AUTH_KEY_ENCRYPTION_KEY to the key it was sealed with",
            stored.kid
        ),
        (PLAIN, kek) => {
            if kek.is_some() {
                tracing::warn!(
                    kid = %stored.kid,
                    "signing key is stored unsealed although AUTH_KEY_ENCRYPTION_KEY is set; it was stored before the key-encryption key was configured, or planted by someone with write access to the database"
                );
            }
            stored.private_key.clone()
        }
        (other, _) => bail!(
            "signing key {} uses unknown encryption {other:?}",
            stored.kid
        ),
    };
    let key = Ed25519Key::from_seed(&seed).context("stored signing key is corrupt")?;
    if key.kid() != stored.kid {
        bail!(
            "stored signing key {} does not match its key id",
            stored.kid
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_kid() {
        let kek = KeyEncryptionKey::new(vec![1; 32]).unwrap();
        let sealed = kek.seal("kid-1", b"seed bytes").unwrap();
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"seed bytes");
        assert!(kek.open("kid-2", &sealed).is_err());
        let other = KeyEncryptionKey::new(vec![2; 32]).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(kek.open("kid-1", &sealed[..10]).is_err());
    }

    #[test]
    fn a_kek_must_be_32_bytes() {
        assert!(KeyEncryptionKey::new(vec![0; 16]).is_err());
    }
}
