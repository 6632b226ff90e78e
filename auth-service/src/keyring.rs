//! Which key signs now, which keys verify, and rotation: the same answer on every replica,
//! because the database decides.
//!
//! A new key is stored `publish_ahead` before it starts signing (its `activates_at`), so every
//! verifier has fetched it from the JWKS by the time a token signed with it reaches them. A key
//! stops signing when the next generation activates and stays published until every token it
//! signed has expired (the access-token lifetime plus the verifiers' leeway); then it is deleted.
//! Rotation happens on a schedule (`AUTH_KEY_ROTATION_PERIOD`) and when an admin asks; a
//! rotation asked for while a key is pending is refused, and two replicas rotating at once
//! cannot both win (the generation is unique). Each replica re-reads the table every few seconds
//! and at each activation, and verifies its own tokens against what it read. HS256 has one
//! configured secret and never rotates.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use token::{Audience, Ed25519Key, Issuer, Jwk, SigningKey, Verifier, unix_now};

use crate::{
    signing::{self, KeyConfig, KeyEncryptionKey, OpenedKey},
    store::Store,
    throttle::AttemptKey,
};

/// How long a retired key stays published beyond the access-token lifetime: the verifiers'
/// clock leeway, so a token signed in the key's last second is checked with it to the end.
const RETIRE_LEEWAY_SECS: i64 = 60;
/// The longest a replica goes without re-reading the key table.
const MAX_REFRESH: Duration = Duration::from_secs(30);

/// When keys rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// How long a key signs before the next one takes over; `None` rotates only on request.
    pub period: Option<Duration>,
    /// How long a new key is published before it signs.
    pub publish_ahead: Duration,
}

impl Rotation {
    /// How long a verifier may cache the JWKS: half the publish-ahead time, so a verifier that
    /// refetches only when its copy expires still sees a new key before it signs.
    pub fn jwks_max_age(&self) -> Duration {
        (self.publish_ahead / 2).max(Duration::from_secs(1))
    }

    /// How often a replica re-reads the key table.
    fn refresh_every(&self) -> Duration {
        (self.publish_ahead / 4).clamp(Duration::from_secs(1), MAX_REFRESH)
    }
}

/// The keys in force at one moment.
pub struct KeySet {
    pub issuer: Issuer,
    pub verifier: Verifier,
    /// Public keys to publish; empty for HS256, whose key is secret.
    pub jwks: Vec<Jwk>,
    /// The key stored but not yet signing, if any.
    pub pending: Option<PendingKey>,
    /// Unix seconds at which this set next changes by itself (a key activating or leaving).
    next_change: Option<i64>,
    /// When the signing key started signing (for the schedule).
    active_since: i64,
    /// The highest generation stored (the next rotation stores one more).
    max_generation: i64,
}

/// A key published ahead of signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingKey {
    pub kid: String,
    pub activates_at: i64,
}

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("a signing key is already pending: {} activates at {}", .0.kid, .0.activates_at)]
    Pending(PendingKey),
    #[error("HS256 signs with one configured secret, which does not rotate")]
    NotRotatable,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

enum Source {
    Hs256,
    Ed25519 {
        store: Arc<Store>,
        kek: KeyEncryptionKey,
    },
}

/// The replica's view of the key table, refreshed in the background by [`KeyRing::run`].
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    source: Source,
    audience: Audience,
    ttl: Duration,
    /// The longest lifetime of any token signed: how long a retired key stays published.
    longest: Duration,
    rotation: Rotation,
    /// The handle the service's own `AuthnLayer` verifies with; replaced on every change.
    verifiers: authn::Keys,
    /// The throttle's attempt-fingerprint key, derived from the KEK or the HS256 secret, which
    /// every replica shares.
    attempt_key: AttemptKey,
}

impl KeyRing {
    /// Loads the keys (generating the first one for every replica if there is none).
    /// `ttl` is the user access-token lifetime the issuer signs with; `longest` the longest
    /// lifetime of any token signed (service accounts' may differ), which a retired key stays
    /// published for.
    pub async fn load(
        store: Arc<Store>,
        config: &KeyConfig,
        audience: &Audience,
        (ttl, longest): (Duration, Duration),
        rotation: Rotation,
    ) -> anyhow::Result<Self> {
        let (source, set, attempt_key) = match config {
            KeyConfig::Hs256(secret) => {
                tracing::info!("signing tokens with HS256 and the configured shared secret");
                let attempt_key = AttemptKey::derive(secret.bytes());
                let key = SigningKey::Hs256(secret.clone());
                let set = KeySet {
                    verifier: Verifier::for_keys([&key], audience),
                    issuer: Issuer::new(key, audience.clone(), ttl)?,
                    jwks: Vec::new(),
                    pending: None,
                    next_change: None,
                    active_since: 0,
                    max_generation: 0,
                };
                (Source::Hs256, set, attempt_key)
            }
            KeyConfig::Ed25519 { kek, previous } => {
                let kek = kek.load(&store).await?;
                let keys = signing::load_ed25519(&store, &kek, previous.as_ref()).await?;
                let set = arrange(keys, unix_now(), audience, ttl, longest)?;
                tracing::info!(
                    kid = set.issuer.kid(),
                    keys = set.jwks.len(),
                    "signing tokens with Ed25519"
                );
                let attempt_key = kek.attempt_key();
                (Source::Ed25519 { store, kek }, set, attempt_key)
            }
        };
        let verifiers = authn::Keys::fixed(set.verifier.clone());
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            source,
            audience: audience.clone(),
            ttl,
            longest: longest.max(ttl),
            rotation,
            verifiers,
            attempt_key,
        })
    }

    /// The key of the throttle's attempt fingerprints.
    pub fn attempt_key(&self) -> &AttemptKey {
        &self.attempt_key
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The handle for this service's own token checks; it follows every change of the ring.
    pub fn verifiers(&self) -> authn::Keys {
        self.verifiers.clone()
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// Re-reads the key table and installs what it says. Keys no longer needed are deleted.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let Source::Ed25519 { store, kek } = &self.source else {
            return Ok(());
        };
        let now = unix_now();
        let keys = signing::reload_ed25519(store, kek).await?;
        for kid in expired(&keys, now, self.longest) {
            if store.delete_signing_key(&kid).await? {
                tracing::info!(%kid, "deleted a retired signing key: every token it signed has expired");
            }
        }
        let set = arrange(keys, now, &self.audience, self.ttl, self.longest)?;
        let changed = {
            let old = self.current();
            old.issuer.kid() != set.issuer.kid() || old.jwks != set.jwks
        };
        if changed {
            tracing::info!(kid = set.issuer.kid(), published = set.jwks.len(), pending = ?set.pending, "signing keys changed");
            self.verifiers.replace(set.verifier.clone());
        }
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Stores a new key that starts signing `publish_ahead` from now.
    pub async fn rotate(&self) -> Result<PendingKey, RotateError> {
        let Source::Ed25519 { store, kek } = &self.source else {
            return Err(RotateError::NotRotatable);
        };
        self.refresh().await?;
        let set = self.current();
        if let Some(pending) = &set.pending {
            return Err(RotateError::Pending(pending.clone()));
        }
        let key = Ed25519Key::generate();
        let activates_at = unix_now() + ceil_secs(self.rotation.publish_ahead);
        let stored =
            signing::insert_key(store, kek, &key, set.max_generation + 1, activates_at).await?;
        self.refresh().await?;
        if !stored {
            // Another replica rotated in the meantime; its key is the pending one.
            return match self.current().pending.clone() {
                Some(pending) => Err(RotateError::Pending(pending)),
                None => Err(anyhow::anyhow!("a concurrent rotation's key is not pending").into()),
            };
        }
        tracing::info!(
            kid = key.kid(),
            activates_at,
            "stored a new signing key; it is published now and signs from activates_at"
        );
        Ok(PendingKey {
            kid: key.kid().to_owned(),
            activates_at,
        })
    }

    /// Keeps the ring current until the task is dropped: re-reads the table every few seconds
    /// and at each activation, and stores the next key when the schedule says so.
    pub async fn run(self: Arc<Self>) {
        if matches!(self.source, Source::Hs256) {
            return;
        }
        loop {
            let set = self.current();
            let now = unix_now();
            let mut wait = self.rotation.refresh_every();
            if let Some(at) = set.next_change {
                wait = wait.min(Duration::from_secs(at.saturating_sub(now).max(0) as u64));
            }
            tokio::time::sleep(wait).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(error = %format!("{error:#}"), "failed to re-read the signing keys; keeping the ones loaded");
                continue;
            }
            let set = self.current();
            if rotation_due(&self.rotation, &set, unix_now()) {
                match self.rotate().await {
                    Ok(_) | Err(RotateError::Pending(_)) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "scheduled signing key rotation failed")
                    }
                }
            }
        }
    }
}

/// Whether the schedule says the next key is due to be stored now: when, published
/// `publish_ahead` from now, it would start no earlier than one period after the active key did.
fn rotation_due(rotation: &Rotation, set: &KeySet, now: i64) -> bool {
    let Some(period) = rotation.period else {
        return false;
    };
    set.pending.is_none()
        && now + ceil_secs(rotation.publish_ahead) >= set.active_since + ceil_secs(period)
}

fn ceil_secs(duration: Duration) -> i64 {
    duration.as_secs_f64().ceil() as i64
}

/// When each key stops being published: `None` while it signs or is pending.
fn retire_ends(keys: &[OpenedKey], ttl: Duration) -> Vec<Option<i64>> {
    // Newest first: a key's successor is the one before it.
    keys.iter()
        .enumerate()
        .map(|(i, _)| {
            i.checked_sub(1)
                .map(|succ| keys[succ].activates_at + ceil_secs(ttl) + RETIRE_LEEWAY_SECS)
        })
        .collect()
}

/// Kids of retired keys that no longer verify any live token (never the signing key).
fn expired(keys: &[OpenedKey], now: i64, ttl: Duration) -> Vec<String> {
    let active = active_index(keys, now);
    retire_ends(keys, ttl)
        .into_iter()
        .enumerate()
        .filter(|(i, end)| *i > active && end.is_some_and(|end| end <= now))
        .map(|(i, _)| keys[i].key.kid().to_owned())
        .collect()
}

/// The signing key: the newest one whose time has come; the oldest if none has.
fn active_index(keys: &[OpenedKey], now: i64) -> usize {
    keys.iter()
        .position(|k| k.activates_at <= now)
        .unwrap_or(keys.len().saturating_sub(1))
}

/// The key set in force at `now`, from every stored key, newest generation first: the issuer
/// signs for `ttl`, a retired key stays published for `longest`.
fn arrange(
    keys: Vec<OpenedKey>,
    now: i64,
    audience: &Audience,
    ttl: Duration,
    longest: Duration,
) -> anyhow::Result<KeySet> {
    let active = active_index(&keys, now);
    let signing = keys.get(active).context("no signing key is stored")?;
    let ends = retire_ends(&keys, longest.max(ttl));
    let published: Vec<&OpenedKey> = keys
        .iter()
        .zip(&ends)
        .enumerate()
        .filter(|(i, (_, end))| *i <= active || end.is_some_and(|end| end > now))
        .map(|(_, (k, _))| k)
        .collect();
    let jwks: Vec<Jwk> = published.iter().map(|k| k.key.public_jwk()).collect();
    let pending = keys[..active]
        .last()
        .filter(|k| k.activates_at > now)
        .map(|k| PendingKey {
            kid: k.key.kid().to_owned(),
            activates_at: k.activates_at,
        });
    let next_change = keys
        .iter()
        .map(|k| k.activates_at)
        .chain(ends.iter().flatten().copied())
        .filter(|&at| at > now)
        .min();
    Ok(KeySet {
        verifier: Verifier::from_jwks(jwks.iter(), audience),
        issuer: Issuer::new(
            SigningKey::Ed25519(signing.key.clone()),
            audience.clone(),
            ttl,
        )?,
        jwks,
        pending,
        next_change,
        active_since: signing.activates_at,
        max_generation: keys.first().map_or(0, |k| k.generation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(generation: i64, activates_at: i64) -> OpenedKey {
        OpenedKey {
            key: Ed25519Key::generate(),
            generation,
            activates_at,
        }
    }

    fn kids(set: &KeySet) -> Vec<String> {
        set.jwks.iter().map(|k| k.kid.clone()).collect()
    }

    const TTL: Duration = Duration::from_secs(900);

    #[test]
    fn a_pending_key_is_published_but_the_current_one_signs() {
        let keys = vec![key(2, 1_000), key(1, 0)];
        let (new, old) = (keys[0].key.kid().to_owned(), keys[1].key.kid().to_owned());
        let set = arrange(keys.clone(), 990, &Audience::default(), TTL, TTL).unwrap();
        assert_eq!(set.issuer.kid(), old);
        assert_eq!(kids(&set), [new.clone(), old.clone()]);
        assert_eq!(
            set.pending,
            Some(PendingKey {
                kid: new.clone(),
                activates_at: 1_000
            })
        );
        assert_eq!(set.next_change, Some(1_000));
        assert_eq!(set.max_generation, 2);

        // From its second on, the new key signs; the old one verifies until its tokens expire.
        let set = arrange(keys.clone(), 1_000, &Audience::default(), TTL, TTL).unwrap();
        assert_eq!(set.issuer.kid(), new);
        assert_eq!(set.pending, None);
        assert_eq!(kids(&set), [new.clone(), old.clone()]);
        let gone = 1_000 + 900 + RETIRE_LEEWAY_SECS;
        assert_eq!(set.next_change, Some(gone));
        assert!(expired(&keys, gone - 1, TTL).is_empty());

        let set = arrange(keys.clone(), gone, &Audience::default(), TTL, TTL).unwrap();
        assert_eq!(kids(&set), [new]);
        assert_eq!(expired(&keys, gone, TTL), [old]);
    }

    #[test]
    fn a_retired_key_stays_published_as_long_as_the_longest_token_it_signed() {
        let keys = vec![key(2, 1_000), key(1, 0)];
        let old = keys[1].key.kid().to_owned();
        let longest = Duration::from_secs(3_600);
        let set = arrange(keys.clone(), 1_000, &Audience::default(), TTL, longest).unwrap();
        // The issuer still signs user tokens for the access-token lifetime.
        assert_eq!(set.issuer.ttl(), TTL);
        let gone = 1_000 + 3_600 + RETIRE_LEEWAY_SECS;
        assert_eq!(set.next_change, Some(gone));
        let set = arrange(keys.clone(), gone - 1, &Audience::default(), TTL, longest).unwrap();
        assert!(kids(&set).contains(&old));
        assert!(expired(&keys, gone - 1, longest).is_empty());
        assert_eq!(expired(&keys, gone, longest), [old]);
    }

    #[test]
    fn the_schedule_counts_from_the_active_keys_start() {
        let rotation = Rotation {
            period: Some(Duration::from_secs(100)),
            publish_ahead: Duration::from_secs(10),
        };
        assert_eq!(rotation.jwks_max_age(), Duration::from_secs(5));
        let set = arrange(vec![key(1, 1_000)], 1_050, &Audience::default(), TTL, TTL).unwrap();
        assert_eq!(set.active_since, 1_000);
        // Due once the next key, published 10 s ahead, would start at 1 100.
        assert!(!rotation_due(&rotation, &set, 1_089));
        assert!(rotation_due(&rotation, &set, 1_090));
        // Never while a key is pending, nor without a period.
        let pending = arrange(
            vec![key(2, 1_200), key(1, 1_000)],
            1_150,
            &Audience::default(),
            TTL,
            TTL,
        )
        .unwrap();
        assert!(!rotation_due(&rotation, &pending, 1_150));
        let manual = Rotation {
            period: None,
            ..rotation
        };
        assert!(!rotation_due(&manual, &set, 5_000));
    }
}
