//! The revoked sessions and users a verifier knows of, kept small enough to hold hundreds of
//! thousands in memory and checked with at most two hash lookups.

use std::collections::HashMap;

/// Revoked sessions (by `sid`) and users (by `sub`, with the time before which their tokens are
/// void), each remembered until no token it covers can still be valid.
///
/// Ids in the canonical lowercase UUID form (what auth-service issues) are stored as 16 bytes
/// and times as `u32` Unix seconds (good until 2106), so a revoked session costs about 21 bytes
/// of table and a revoked user 25; any other id is kept as text in a map of its own.
#[derive(Debug, Default)]
pub struct RevocationSet {
    /// Session id → expires at.
    sessions: HashMap<[u8; 16], u32>,
    sessions_text: HashMap<Box<str>, u32>,
    /// User id → (not before, expires at).
    users: HashMap<[u8; 16], (u32, u32)>,
    users_text: HashMap<Box<str>, (u32, u32)>,
}

/// What a revocation voids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokedSubject<'a> {
    /// Every token whose `sid` is this.
    Session(&'a str),
    /// Every token of this `sub` issued at or before the revocation's `not_before`.
    User(&'a str),
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a revocation. For a user revoked more than once, the latest `not_before` and
    /// `expires_at` win (a later revocation voids everything an earlier one did).
    pub fn insert(&mut self, subject: RevokedSubject<'_>, not_before: i64, expires_at: i64) {
        let not_before = seconds(not_before);
        let expires_at = seconds(expires_at);
        match subject {
            RevokedSubject::Session(sid) => {
                let slot = match uuid_key(sid) {
                    Some(key) => self.sessions.entry(key).or_insert(0),
                    None => self.sessions_text.entry(sid.into()).or_insert(0),
                };
                *slot = (*slot).max(expires_at);
            }
            RevokedSubject::User(sub) => {
                let slot = match uuid_key(sub) {
                    Some(key) => self.users.entry(key).or_insert((0, 0)),
                    None => self.users_text.entry(sub.into()).or_insert((0, 0)),
                };
                *slot = (slot.0.max(not_before), slot.1.max(expires_at));
            }
        }
    }

    /// Whether a token with these claims has been revoked: its session ended, or its user's
    /// tokens were voided at or after its `iat` (in whole seconds, so a token issued in the
    /// same second as the revocation is refused too).
    pub fn is_revoked(&self, sid: Option<&str>, sub: &str, iat: i64) -> bool {
        if let Some(sid) = sid
            && !(self.sessions.is_empty() && self.sessions_text.is_empty())
        {
            let found = match uuid_key(sid) {
                Some(key) => self.sessions.contains_key(&key),
                None => self.sessions_text.contains_key(sid),
            };
            if found {
                return true;
            }
        }
        if self.users.is_empty() && self.users_text.is_empty() {
            return false;
        }
        let entry = match uuid_key(sub) {
            Some(key) => self.users.get(&key),
            None => self.users_text.get(sub),
        };
        entry.is_some_and(|&(not_before, _)| iat <= i64::from(not_before))
    }

    /// Forgets every revocation that expired at or before `now`; returns how many.
    pub fn evict_expired(&mut self, now: i64) -> usize {
        let before = self.len();
        let live = |expires_at: u32| i64::from(expires_at) > now;
        self.sessions.retain(|_, e| live(*e));
        self.sessions_text.retain(|_, e| live(*e));
        self.users.retain(|_, e| live(e.1));
        self.users_text.retain(|_, e| live(e.1));
        before - self.len()
    }

    /// Revoked sessions plus revoked users.
    pub fn len(&self) -> usize {
        self.sessions.len() + self.sessions_text.len() + self.users.len() + self.users_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unix seconds as stored: before 1970 is 0, after 2106 is the end of time.
fn seconds(unix: i64) -> u32 {
    u32::try_from(unix.max(0)).unwrap_or(u32::MAX)
}

/// The 16 bytes of an id written as a canonical (lowercase, hyphenated) UUID, `None` for any
/// other text. Only one spelling maps to each key, so two different ids never collide.
fn uuid_key(id: &str) -> Option<[u8; 16]> {
    let text = id.as_bytes();
    if text.len() != 36 {
        return None;
    }
    let mut key = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in text.iter().enumerate() {
        let hyphen = matches!(i, 8 | 13 | 18 | 23);
        let value = match c {
            b'-' if hyphen => continue,
            b'0'..=b'9' if !hyphen => c - b'0',
            b'a'..=b'f' if !hyphen => c - b'a' + 10,
            _ => return None,
        };
        key[nibbles / 2] |= value << if nibbles % 2 == 0 { 4 } else { 0 };
        nibbles += 1;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "0190c2a4-7e1c-7000-8000-000000000001";
    const USER: &str = "0190c2a4-7e1c-7000-8000-0000000000aa";

    #[test]
    fn a_revoked_session_refuses_its_tokens_and_no_other() {
        let mut set = RevocationSet::new();
        set.insert(RevokedSubject::Session(SID), 100, 2_000);
        set.insert(RevokedSubject::Session("not-a-uuid"), 100, 2_000);
        assert!(set.is_revoked(Some(SID), USER, 1_000));
        assert!(set.is_revoked(Some("not-a-uuid"), USER, 1_000));
        assert!(!set.is_revoked(Some("0190c2a4-7e1c-7000-8000-000000000002"), USER, 1_000));
        assert!(!set.is_revoked(None, USER, 1_000));
    }

    #[test]
    fn a_revoked_user_refuses_tokens_issued_up_to_the_same_second() {
        let mut set = RevocationSet::new();
        set.insert(RevokedSubject::User(USER), 1_000, 2_000);
        assert!(set.is_revoked(None, USER, 999));
        // Whole seconds: issued in the very second of the revocation is refused.
        assert!(set.is_revoked(None, USER, 1_000));
        assert!(!set.is_revoked(None, USER, 1_001));
        assert!(!set.is_revoked(None, "someone-else", 999));
    }

    #[test]
    fn the_latest_not_before_of_a_user_wins() {
        let mut set = RevocationSet::new();
        set.insert(RevokedSubject::User("alice"), 2_000, 3_000);
        set.insert(RevokedSubject::User("alice"), 1_000, 2_500);
        assert!(set.is_revoked(None, "alice", 2_000));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn revocations_are_forgotten_once_they_expire() {
        let mut set = RevocationSet::new();
        set.insert(RevokedSubject::Session(SID), 100, 1_000);
        set.insert(RevokedSubject::User(USER), 100, 2_000);
        assert_eq!(set.evict_expired(1_000), 1);
        assert!(!set.is_revoked(Some(SID), "x", 50));
        assert!(set.is_revoked(None, USER, 50));
        assert_eq!(set.evict_expired(2_000), 1);
        assert!(set.is_empty());
    }

    #[test]
    fn only_the_canonical_uuid_spelling_is_packed() {
        assert!(uuid_key(SID).is_some());
        assert!(uuid_key(&SID.to_uppercase()).is_none());
        assert!(uuid_key(&SID.replace('-', "")).is_none());
        assert!(uuid_key("0190c2a4-7e1c-7000-8000-00000000000g").is_none());
        assert!(uuid_key("0190c2a47-e1c-7000-8000-000000000001").is_none());
        // Upper case is kept as text, so it is still found under its own spelling.
        let mut set = RevocationSet::new();
        set.insert(RevokedSubject::Session(&SID.to_uppercase()), 0, 10);
        assert!(set.is_revoked(Some(&SID.to_uppercase()), "x", 0));
        assert!(!set.is_revoked(Some(SID), "x", 0));
    }
}
