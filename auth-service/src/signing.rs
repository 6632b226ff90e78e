//! The keys this service signs with, shared by every replica through the database.
//!
//! The private key lives in the `signing_keys` table, always sealed with XChaCha20-Poly1305
//! under a key-encryption key (KEK), so a database dump alone cannot mint tokens. On PostgreSQL
//! the KEK comes from configuration (`AUTH_KEY_ENCRYPTION_KEY`, mounted from a Secret) and is
//! required; on the embedded SQLite file it may instead be a file generated once next to the
//! database. The first replica to start with an empty table generates a key; the table's unique
//! `generation` makes every concurrent attempt but one a no-op, and all replicas then load the
//! same key.
//!
//! Keys stored unsealed by earlier releases are sealed by the first start that finds no sealed
//! key; from then on an unsealed row is refused, because only someone with write access to the
//! database could have put it there (and a higher generation would become the active key).
//! `AUTH_PREVIOUS_KEY_ENCRYPTION_KEY` rotates the KEK: a start with both re-seals every key that
//! only the previous one opens.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use token::{Ed25519Key, Hs256Secret, unix_now};

use crate::{
    store::{Store, StoredKey},
    throttle::AttemptKey,
};

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

    /// Standard or URL-safe base64 of 32 bytes, surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = general_purpose::STANDARD
            .decode(text)
            .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| anyhow::anyhow!("the key-encryption key is not valid base64"))?;
        Self::new(bytes)
    }

    /// The key in `path`, or a new random one written there (owner-only) if there is none yet
    /// and `may_create`. Without `may_create` a missing file is an error saying to restore it,
    /// and nothing is written.
    fn load_or_create_file(path: &Path, may_create: bool) -> anyhow::Result<Self> {
        if !may_create {
            return match std::fs::read_to_string(path) {
                Ok(text) => Self::from_base64(&text)
                    .with_context(|| format!("{} is unusable", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "the key-encryption key file {} is missing, but the database holds signing keys sealed with it: restore that file from a backup of the data directory (or, to start over, delete the signing_keys rows, which invalidates every token issued); nothing was written",
                    path.display()
                ),
                Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
            };
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            database::private_dir(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let mut bytes = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let text = general_purpose::STANDARD.encode(&bytes);
        let mut options = std::fs::OpenOptions::new();
        // `create_new` so that two processes starting on one data directory never overwrite
        // each other's key; the loser reads the winner's.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("failed to write {}", path.display()))?;
                tracing::info!(
                    path = %path.display(),
                    "generated a key-encryption key for the signing keys; keep it with the database, which cannot be used without it"
                );
                Self::new(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read {}", path.display()))?;
                Self::from_base64(&text).with_context(|| format!("{} is unusable", path.display()))
            }
            Err(e) => Err(e).with_context(|| format!("failed to create {}", path.display())),
        }
    }

    /// The key of the throttle's attempt fingerprints, derived from this one.
    pub(crate) fn attempt_key(&self) -> AttemptKey {
        AttemptKey::derive(self.0.expose_secret())
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
            bail!("sealed signing key {} is truncated", shown(kid));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("sealed signing key {} is truncated", shown(kid)))?;
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
                    "cannot unseal signing key {}: the key-encryption key (AUTH_KEY_ENCRYPTION_KEY, or without it the data directory's key-encryption-key file; AUTH_PREVIOUS_KEY_ENCRYPTION_KEY while rotating) is not the key it was sealed with",
                    shown(kid)
                )
            })
    }
}

/// Where the key-encryption key comes from.
#[derive(Clone)]
pub enum KekSource {
    /// `AUTH_KEY_ENCRYPTION_KEY` or its file.
    Configured(KeyEncryptionKey),
    /// None configured, on the embedded SQLite database only: this file, generated at the first
    /// start (`<data dir>/key-encryption-key`).
    File(PathBuf),
}

impl KekSource {
    /// The key. A generated file is created only while `store` holds no sealed signing key:
    /// once keys are sealed, a new file could not open them, so a missing one must be restored.
    pub(crate) async fn load(&self, store: &Store) -> anyhow::Result<KeyEncryptionKey> {
        match self {
            Self::Configured(kek) => Ok(kek.clone()),
            Self::File(path) => {
                let sealed = store
                    .signing_keys()
                    .await?
                    .iter()
                    .any(|k| k.encryption == SEALED);
                KeyEncryptionKey::load_or_create_file(path, !sealed)
            }
        }
    }
}

/// How tokens are signed, from configuration.
#[derive(Clone)]
pub enum KeyConfig {
    /// Ed25519 keys kept in the database, sealed under `kek`. `previous` opens keys sealed
    /// before a rotation of the KEK, which are then re-sealed under `kek`.
    Ed25519 {
        kek: KekSource,
        previous: Option<KeyEncryptionKey>,
    },
    /// One shared secret from configuration; nothing is stored.
    Hs256(Hs256Secret),
}

/// A stored Ed25519 key, opened, with its place in the rotation.
#[derive(Clone)]
pub struct OpenedKey {
    pub key: Ed25519Key,
    pub generation: i64,
    pub activates_at: i64,
}

/// Every stored Ed25519 key, newest first, generating the first one (active at once) if there is
/// none, and sealing or re-sealing rows as the configured KEKs say. Start-up only.
pub(crate) async fn load_ed25519(
    store: &Store,
    kek: &KeyEncryptionKey,
    previous: Option<&KeyEncryptionKey>,
) -> anyhow::Result<Vec<OpenedKey>> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        let key = Ed25519Key::generate();
        let now = unix_now();
        if insert_key(store, kek, &key, 1, now).await? {
            tracing::info!(
                kid = key.kid(),
                "generated a new Ed25519 signing key and stored it for every replica"
            );
        } else {
            tracing::info!("another replica generated the signing key first; using it");
        }
        stored = store.signing_keys().await?;
    }
    if reseal(store, &stored, kek, previous).await? {
        stored = store.signing_keys().await?;
    }
    open_all(&stored, kek)
}

/// Every stored Ed25519 key, newest first, as the database holds them now.
pub(crate) async fn reload_ed25519(
    store: &Store,
    kek: &KeyEncryptionKey,
) -> anyhow::Result<Vec<OpenedKey>> {
    open_all(&store.signing_keys().await?, kek)
}

fn open_all(stored: &[StoredKey], kek: &KeyEncryptionKey) -> anyhow::Result<Vec<OpenedKey>> {
    stored
        .iter()
        .filter(|k| k.algorithm == "EdDSA")
        .map(|k| {
            Ok(OpenedKey {
                key: unseal(k, kek)?,
                generation: k.generation,
                activates_at: k.activates_at,
            })
        })
        .collect()
}

/// Stores `key` sealed under `kek` as `generation`, signing from `activates_at`. Returns false
/// when that generation exists already (another replica stored it first).
pub(crate) async fn insert_key(
    store: &Store,
    kek: &KeyEncryptionKey,
    key: &Ed25519Key,
    generation: i64,
    activates_at: i64,
) -> anyhow::Result<bool> {
    Ok(store
        .insert_signing_key(&StoredKey {
            kid: key.kid().to_owned(),
            generation,
            algorithm: "EdDSA".to_owned(),
            encryption: SEALED.to_owned(),
            private_key: kek.seal(key.kid(), key.seed().expose_secret())?,
            created_at: unix_now(),
            activates_at,
        })
        .await?)
}

/// Seals the keys of a database that has never seen a KEK (an earlier release stored them in
/// the clear), and re-seals under `kek` what only `previous` opens. Returns whether any row was
/// rewritten. Once one key is sealed, unsealed rows are left for [`unseal`] to refuse: sealing
/// them would launder a planted key. (Replicas migrating several unsealed keys at once may see
/// the database half-sealed and refuse to start; their restart finds it sealed.)
async fn reseal(
    store: &Store,
    stored: &[StoredKey],
    kek: &KeyEncryptionKey,
    previous: Option<&KeyEncryptionKey>,
) -> anyhow::Result<bool> {
    let never_sealed = stored.iter().all(|k| k.encryption == PLAIN);
    let mut rewritten = false;
    for key in stored {
        let seed = match key.encryption.as_str() {
            PLAIN if never_sealed => key.private_key.clone(),
            SEALED => match previous {
                Some(previous) if kek.open(&key.kid, &key.private_key).is_err() => {
                    match previous.open(&key.kid, &key.private_key) {
                        Ok(seed) => seed,
                        // Neither opens it; `unseal` says so.
                        Err(_) => continue,
                    }
                }
                _ => continue,
            },
            _ => continue,
        };
        let sealed = kek.seal(&key.kid, &seed)?;
        // A replica that got there first already stored the same seed under the same KEK.
        if store.reseal_signing_key(key, SEALED, &sealed).await? {
            tracing::info!(
                kid = %shown(&key.kid),
                "sealed the signing key under the current key-encryption key"
            );
        }
        rewritten = true;
    }
    Ok(rewritten)
}

fn unseal(stored: &StoredKey, kek: &KeyEncryptionKey) -> anyhow::Result<Ed25519Key> {
    let seed = match stored.encryption.as_str() {
        SEALED => kek.open(&stored.kid, &stored.private_key)?,
        PLAIN => bail!(
            "signing key {} is stored unsealed while the others are sealed: only someone with write access to the database could have stored it; delete that row",
            shown(&stored.kid)
        ),
        other => bail!(
            "signing key {} uses unknown encryption {}",
            shown(&stored.kid),
            shown(other)
        ),
    };
    let key = Ed25519Key::from_seed(&seed).context("stored signing key is corrupt")?;
    if key.kid() != stored.kid {
        bail!(
            "stored signing key {} does not match its key id",
            shown(&stored.kid)
        );
    }
    Ok(key)
}

/// A value read from the database, for a message: quoted, escaped, and cut short, since whoever
/// planted a row chose it.
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
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
    fn a_kid_from_the_database_is_quoted_escaped_and_cut_short_in_messages() {
        assert_eq!(shown("k1"), "\"k1\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = shown(&"x".repeat(10_000));
        assert!(long.len() < 80, "{long}");
    }

    #[test]
    fn a_kek_must_be_32_bytes() {
        assert!(KeyEncryptionKey::new(vec![0; 16]).is_err());
    }
}
