//! Verified tokens, remembered until they expire, so a repeated token skips the signature check.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, sync::Cache};
use token::{Claims, unix_now};

/// Holds identity and claims only. Role checks run on every call after the lookup, so a cache
/// hit can never grant more than a fresh verification would.
#[derive(Clone)]
pub struct TokenCache {
    cache: Option<Cache<String, Entry, Hasher>>,
}

/// Every call hashes its whole token (some 500 bytes) to look it up: foldhash does that several
/// times faster than std's SipHash. Its per-process random seed is enough here: only verified
/// tokens are ever inserted, so no caller can fill the table with colliding keys.
type Hasher = foldhash::fast::RandomState;

/// A verified token's claims and the key-removal count it was verified under.
#[derive(Clone)]
struct Entry {
    claims: Arc<Claims>,
    removals: u64,
}

/// Each entry lives until its token's `exp`, never longer.
struct UntilExpiry;

impl Expiry<String, Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            entry.claims.exp.saturating_sub(unix_now()).max(0) as u64,
        ))
    }
}

impl TokenCache {
    /// Remembers up to `capacity` tokens (about 1 KiB each).
    pub fn new(capacity: u64) -> Self {
        if capacity == 0 {
            return Self::disabled();
        }
        Self {
            cache: Some(
                Cache::builder()
                    .max_capacity(capacity)
                    .expire_after(UntilExpiry)
                    .build_with_hasher(Hasher::default()),
            ),
        }
    }

    /// Verifies every token every time; benchmarks use it to price a miss.
    pub fn disabled() -> Self {
        Self { cache: None }
    }

    /// The claims of `token` if it was verified while `removals` keys had been withdrawn,
    /// that is, under a key set that still holds its key.
    pub fn get(&self, token: &str, removals: u64) -> Option<Arc<Claims>> {
        let entry = self.cache.as_ref()?.get(token)?;
        // The entry may outlive `exp` by the expiry timer's granularity; check exactly.
        (entry.removals == removals && entry.claims.exp > unix_now()).then_some(entry.claims)
    }

    pub fn insert(&self, token: &str, claims: Arc<Claims>, removals: u64) {
        if let Some(cache) = &self.cache {
            cache.insert(token.to_owned(), Entry { claims, removals });
        }
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use token::Role;

    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            iat: 0,
            nbf: 0,
            exp,
            jti: "j".into(),
            roles: vec![Role::User],
            username: "u".into(),
            sid: None,
            client_id: None,
        })
    }

    #[test]
    fn a_cached_token_is_found_until_it_expires() {
        let cache = TokenCache::new(10);
        cache.insert("live", claims(unix_now() + 60), 0);
        cache.insert("dead", claims(unix_now() - 1), 0);
        assert!(cache.get("live", 0).is_some());
        assert!(cache.get("dead", 0).is_none());
        assert!(cache.get("other", 0).is_none());
    }

    #[test]
    fn a_withdrawn_key_invalidates_what_was_cached_before() {
        let cache = TokenCache::new(10);
        cache.insert("live", claims(unix_now() + 60), 3);
        assert!(cache.get("live", 4).is_none());
    }

    #[test]
    fn a_disabled_cache_remembers_nothing() {
        let cache = TokenCache::disabled();
        cache.insert("live", claims(unix_now() + 60), 0);
        assert!(cache.get("live", 0).is_none());
    }
}
