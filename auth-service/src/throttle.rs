//! Throttled guessing, shared by every replica through the database.
//!
//! **Sign-in.** Failed password checks are counted per (account, client) and per account across
//! all clients, over sliding windows. An unknown login is counted under its normalised form
//! instead of an account id, with the same limits, so a refusal looks the same whether the
//! account exists or not. A sign-in over a limit is refused before any password is hashed, with
//! the time until the oldest counted failure leaves the window (RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo`); refusals are not counted, so waiting is enough.
//!
//! A sign-in is recorded as failed *before* its password is checked and the record is taken back
//! when the password matches (or was never checked), so requests in flight count as well and a
//! burst cannot slip past the limit while the hashes run. The record carries the request id and
//! a short fingerprint of the password: the gateway retrying one request on another replica finds
//! the same record and is counted once, while an attacker reusing one request id for different
//! guesses is counted for each. The fingerprint is 24 bits of HMAC-SHA256, over the request id
//! and the password, under an [`AttemptKey`] every replica derives from the secret it already
//! shares (the key-encryption key, or the HS256 secret) and no caller knows: nobody can search
//! offline for a guess whose fingerprint matches a recorded one (with a plain hash, one request
//! id and a few million hashes gave guesses that were checked and never counted), and a
//! database dump holds 24 keyed bits per wrong password, nothing to crack it with.
//!
//! A successful sign-in clears that client's failures for the account, and only those: the
//! owner who mistyped is not slowed later on the same device, while a guesser elsewhere stays
//! throttled and the account's total keeps its other clients' failures. It also makes the client
//! known to the account for [`KNOWN_CLIENT_FOR`]: a known client is held by its own per-client
//! limit only, not by the per-account one, so guesses spread over many clients cannot lock the
//! owner out of a device they signed in from before. An admin can clear an account's failures
//! from every client.
//!
//! **Sign-up.** Answers that a username or email is taken are counted per client; over the limit
//! every sign-up from that client is refused the same way until the window moves on, whether its
//! name is free or not, so the answers stop telling which names exist. Admins are not counted.
//!
//! **Client credentials.** A service account's failed authentications (`IssueClientToken`,
//! `IntrospectToken`) are counted like failed sign-ins, under `client:<client id>`, and limited
//! per client address only (`AUTH_SIGNIN_MAX_FAILURES` per `AUTH_SIGNIN_WINDOW`): the secret is
//! 256 random bits, so there is no weak secret for a guess spread over many addresses to find,
//! and a limit across all addresses would let anyone lock an internal service out. The secret
//! check costs one SHA-256, so a failure is recorded after the check rather than before it;
//! a success clears that address's failures only when it had any, so a healthy grant costs
//! one read. An admin can clear a service account's failures from every address.
//!
//! **Clients.** An IPv4 address, or the /64 an IPv6 address belongs to (one subscriber's usual
//! allocation, whose addresses its owner can rotate through at will).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use token::unix_now;

use crate::{
    domain::{ClientId, UserId},
    store::{Store, StoreError, ThrottleKey},
};

/// A client as throttling and hashing admission tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    /// The client `address` belongs to: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Self(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Where a call came from: the client's address and the request id, which stays the same when
/// the gateway retries the call on another replica.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub address: Option<IpAddr>,
    pub request_id: String,
}

impl Origin {
    pub fn client(&self) -> Option<Client> {
        self.address.map(Client::of)
    }

    /// The client as stored: its text, or `unknown` (one shared bucket) without an address.
    pub(crate) fn client_key(&self) -> String {
        self.client()
            .map_or_else(|| "unknown".to_owned(), |c| c.to_string())
    }
}

/// The key of attempt fingerprints (see the module comment): derived with HKDF-SHA256 from a
/// secret every replica shares and no caller knows, so every replica fingerprints one attempt
/// alike and nobody else can compute a fingerprint at all.
#[derive(Clone)]
pub struct AttemptKey(SecretSlice<u8>);

impl AttemptKey {
    const INFO: &'static [u8] = b"auth-service throttle attempt fingerprint v1";

    /// The key derived from `shared`: the key-encryption key, or the HS256 secret.
    pub fn derive(shared: &[u8]) -> Self {
        let mut key = vec![0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expanding cannot fail.
        let _ = Hkdf::<Sha256>::new(None, shared).expand(Self::INFO, &mut key);
        Self(key.into())
    }

    /// What `origin` tried (`tried`, one or more secrets or names), as recorded: the request id
    /// with a keyed fingerprint. Without a request id (the service's own layer always sets one)
    /// every call is its own attempt.
    pub fn attempt(&self, origin: &Origin, tried: &[&[u8]]) -> Attempt {
        let request_id = if origin.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            origin.request_id.clone()
        };
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .expect("HMAC accepts any key length");
        // Each part with its length, so no two different lists of parts read alike.
        for part in std::iter::once(request_id.as_bytes()).chain(tried.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let fingerprint: String = mac.finalize().into_bytes()[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Attempt(format!("{request_id}/{fingerprint}"))
    }
}

impl fmt::Debug for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttemptKey([REDACTED])")
    }
}

/// One attempt as recorded: its request id and the keyed fingerprint of what it tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt(String);

impl Attempt {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most `max` events per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failed sign-ins for one account (or unknown login) from one client.
    pub sign_in_per_client: Limit,
    /// Failed sign-ins for one account (or unknown login) from all clients together.
    pub sign_in_per_account: Limit,
    /// "Taken" answers to one client's sign-ups.
    pub sign_up_taken: Limit,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            sign_in_per_client: Limit {
                max: 10,
                window: Duration::from_secs(15 * 60),
            },
            sign_in_per_account: Limit {
                max: 100,
                window: Duration::from_secs(60 * 60),
            },
            sign_up_taken: Limit {
                max: 10,
                window: Duration::from_secs(15 * 60),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Over `limit` (`client` or `account`); the caller may try again after `retry_after`.
    #[error("over the {limit} limit")]
    Refused {
        limit: &'static str,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const SIGN_IN: &str = "sign-in";
const SIGN_UP: &str = "sign-up";
/// A client's last successful sign-in to an account is one `sign-in` event per (account, client)
/// under the account's subject with this prefix, which no failure is counted under.
const KNOWN_PREFIX: &str = "known:";
const ACCOUNT_PREFIX: &str = "user:";

/// How long a client that signed in to an account stays known to it: past the per-account
/// limit, which holds back every other client.
pub const KNOWN_CLIENT_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How often each replica deletes events no window covers any more. Pruning is idempotent, so
/// replicas doing it at once only repeat each other's work.
const PRUNE_EVERY: Duration = Duration::from_secs(5 * 60);

/// What sign-ins are counted under: an account, or a login that names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub fn account(id: UserId) -> Self {
        Self(format!("{ACCOUNT_PREFIX}{id}"))
    }

    /// A service account, by client id: failed client authentications are counted under it.
    pub fn client(id: ClientId) -> Self {
        Self(format!("client:{id}"))
    }

    /// A login that names no account, normalised as logins are matched (trimmed, ignoring
    /// case) and hashed, so the table holds no text someone typed (perhaps a password).
    pub fn login(login: &str) -> Self {
        let digest = Sha256::digest(login.trim().to_lowercase().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("login:{hex}"))
    }
}

/// A client authentication that passed the throttle: what a failure is recorded under.
#[derive(Debug)]
pub struct ClientAttempt {
    subject: Subject,
    client: String,
    /// Whether this address has failures within the window, to clear after a success.
    failed_before: bool,
}

impl ClientAttempt {
    fn key(&self) -> ThrottleKey<'_> {
        ThrottleKey {
            kind: SIGN_IN,
            subject: &self.subject.0,
            client: &self.client,
        }
    }
}

/// A sign-in recorded as failed until [`Throttle::sign_in_succeeded`] or
/// [`Throttle::sign_in_abandoned`] says otherwise.
#[derive(Debug)]
pub struct SignInAttempt {
    subject: Subject,
    /// What the client's successful sign-ins to the account are remembered under.
    known_subject: String,
    client: String,
    attempt: String,
    /// False when a retry of the same request had recorded it already.
    recorded: bool,
}

impl SignInAttempt {
    fn key(&self) -> ThrottleKey<'_> {
        ThrottleKey {
            kind: SIGN_IN,
            subject: &self.subject.0,
            client: &self.client,
        }
    }

    fn known_key(&self) -> ThrottleKey<'_> {
        ThrottleKey {
            kind: SIGN_IN,
            subject: &self.known_subject,
            client: &self.client,
        }
    }
}

pub struct Throttle {
    store: Arc<Store>,
    settings: ThrottleSettings,
}

impl Throttle {
    pub fn new(store: Arc<Store>, settings: ThrottleSettings) -> Self {
        Self { store, settings }
    }

    /// Refuses a sign-in for `subject` over a limit; otherwise records it as failed (once per
    /// request) and returns the record, to be taken back if the password matches.
    pub async fn begin_sign_in(
        &self,
        subject: Subject,
        origin: &Origin,
        tried: Attempt,
    ) -> Result<SignInAttempt, ThrottleError> {
        let now = unix_now();
        let attempt = SignInAttempt {
            known_subject: format!("{KNOWN_PREFIX}{}", subject.0),
            client: origin.client_key(),
            attempt: tried.0,
            subject,
            recorded: false,
        };
        let key = attempt.key();
        let per_client = self
            .retry_after(&key, true, self.settings.sign_in_per_client, now)
            .await?;
        let per_account = self
            .retry_after(&key, false, self.settings.sign_in_per_account, now)
            .await?;
        // A client that signed in to this account before is held only by its own limit: the
        // per-account one stops guesses spread over many clients, and must not also shut out
        // the owner on a device they use.
        let per_account = match per_account {
            Some(delay) if per_client.is_none() && self.is_known(&attempt).await? => {
                tracing::debug!(
                    limit = "account",
                    delay_secs = delay.as_secs(),
                    "a known client passes the per-account limit"
                );
                None
            }
            other => other,
        };
        let refused = match (per_client, per_account) {
            (None, None) => None,
            (Some(c), None) => Some(("client", c)),
            (None, Some(a)) => Some(("account", a)),
            (Some(c), Some(a)) if a > c => Some(("account", a)),
            (Some(c), Some(_)) => Some(("client", c)),
        };
        if let Some((limit, retry_after)) = refused {
            return Err(ThrottleError::Refused { limit, retry_after });
        }
        let recorded = self
            .store
            .record_throttle_event(&key, &attempt.attempt, now)
            .await?;
        Ok(SignInAttempt {
            recorded,
            ..attempt
        })
    }

    /// The password matched: clears this client's failures for the account, this one included,
    /// and remembers the client as known to the account (from now, for [`KNOWN_CLIENT_FOR`]).
    pub async fn sign_in_succeeded(&self, attempt: &SignInAttempt) -> Result<(), StoreError> {
        self.store
            .clear_throttle_events_from_client(&attempt.key())
            .await?;
        if let Subject(subject) = &attempt.subject
            && subject.starts_with(ACCOUNT_PREFIX)
        {
            let known = attempt.known_key();
            self.store.clear_throttle_events_from_client(&known).await?;
            self.store
                .record_throttle_event(&known, "known", unix_now())
                .await?;
        }
        Ok(())
    }

    /// Whether the attempt's client signed in to its account within [`KNOWN_CLIENT_FOR`].
    async fn is_known(&self, attempt: &SignInAttempt) -> Result<bool, StoreError> {
        if !attempt.subject.0.starts_with(ACCOUNT_PREFIX) {
            return Ok(false);
        }
        let since = unix_now() - secs(KNOWN_CLIENT_FOR);
        Ok(!self
            .store
            .latest_throttle_events(&attempt.known_key(), since, 1)
            .await?
            .is_empty())
    }

    /// The password was never checked (the hashing queue was full): takes the record back,
    /// unless an earlier try of the same request made it.
    pub async fn sign_in_abandoned(&self, attempt: &SignInAttempt) -> Result<(), StoreError> {
        if !attempt.recorded {
            return Ok(());
        }
        self.store
            .delete_throttle_event(&attempt.key(), &attempt.attempt)
            .await
    }

    /// Refuses a client authentication for `id` from `origin`'s address once that address has
    /// failed the per-client sign-in limit; otherwise returns what a failure is recorded under.
    /// One read.
    pub async fn check_client(
        &self,
        id: ClientId,
        origin: &Origin,
    ) -> Result<ClientAttempt, ThrottleError> {
        let now = unix_now();
        let limit = self.settings.sign_in_per_client;
        let attempt = ClientAttempt {
            subject: Subject::client(id),
            client: origin.client_key(),
            failed_before: false,
        };
        let window = secs(limit.window);
        let failures = self
            .store
            .latest_throttle_events(&attempt.key(), now - window, limit.max)
            .await?;
        if failures.len() >= limit.max as usize
            && let Some(nth) = failures.last()
        {
            // The limit holds until the `max`-th most recent failure leaves the window.
            let retry_after = Duration::from_secs((nth + window - now).max(1).unsigned_abs());
            return Err(ThrottleError::Refused {
                limit: "client",
                retry_after,
            });
        }
        Ok(ClientAttempt {
            failed_before: !failures.is_empty(),
            ..attempt
        })
    }

    /// Counts a failed client authentication `tried`: once per request, a retry of the same
    /// request with the same secret (the gateway on another replica) finding the same record.
    pub async fn client_failed(
        &self,
        attempt: &ClientAttempt,
        tried: &Attempt,
    ) -> Result<(), StoreError> {
        self.store
            .record_throttle_event(&attempt.key(), tried.as_str(), unix_now())
            .await
            .map(drop)
    }

    /// The secret was right: forgets this address's failures for the account, if it had any.
    pub async fn client_succeeded(&self, attempt: &ClientAttempt) -> Result<(), StoreError> {
        if !attempt.failed_before {
            return Ok(());
        }
        self.store
            .clear_throttle_events_from_client(&attempt.key())
            .await
            .map(drop)
    }

    /// Refuses a sign-up from a client that was told "taken" too often.
    pub async fn check_sign_up(&self, origin: &Origin) -> Result<(), ThrottleError> {
        let client = origin.client_key();
        let key = sign_up_key(&client);
        match self
            .retry_after(&key, true, self.settings.sign_up_taken, unix_now())
            .await?
        {
            Some(retry_after) => Err(ThrottleError::Refused {
                limit: "client",
                retry_after,
            }),
            None => Ok(()),
        }
    }

    /// Counts a "taken" answer to `origin`'s sign-up `tried` (its username and email).
    pub async fn sign_up_taken(&self, origin: &Origin, tried: &Attempt) -> Result<(), StoreError> {
        let client = origin.client_key();
        self.store
            .record_throttle_event(&sign_up_key(&client), tried.as_str(), unix_now())
            .await
            .map(drop)
    }

    /// Forgets every failed sign-in for the account, from every client; returns how many.
    pub async fn clear_sign_in(&self, id: UserId) -> Result<u64, StoreError> {
        self.store
            .clear_throttle_events(SIGN_IN, &Subject::account(id).0)
            .await
    }

    /// Forgets every failed authentication of the service account, from every address;
    /// returns how many.
    pub async fn clear_client(&self, id: ClientId) -> Result<u64, StoreError> {
        self.store
            .clear_throttle_events(SIGN_IN, &Subject::client(id).0)
            .await
    }

    /// Deletes the events no window covers any more; returns how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let s = &self.settings;
        let longest = [s.sign_in_per_client, s.sign_in_per_account, s.sign_up_taken]
            .iter()
            .map(|l| l.window)
            .max()
            .unwrap_or_default();
        let now = unix_now();
        self.store
            .prune_throttle_events(
                now - secs(longest),
                &format!("{KNOWN_PREFIX}%"),
                now - secs(KNOWN_CLIENT_FOR),
            )
            .await
    }

    /// Prunes every [`PRUNE_EVERY`] until dropped.
    pub async fn prune_periodically(self: Arc<Self>) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match self.prune().await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned old throttle events"),
                Err(error) => {
                    tracing::warn!(error.cause_chain = ?error, "failed to prune throttle events");
                }
            }
        }
    }

    /// When `limit` is reached for `key` at `now`, how long until it is not.
    async fn retry_after(
        &self,
        key: &ThrottleKey<'_>,
        per_client: bool,
        limit: Limit,
        now: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let window = secs(limit.window);
        let nth = self
            .store
            .nth_latest_throttle_event(key, per_client, now - window, limit.max)
            .await?;
        // The limit holds until the `max`-th most recent event leaves the window.
        Ok(nth.map(|at| Duration::from_secs((at + window - now).max(1).unsigned_abs())))
    }
}

fn sign_up_key(client: &str) -> ThrottleKey<'_> {
    ThrottleKey {
        kind: SIGN_UP,
        subject: "",
        client,
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let a = Client::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Client::of("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a, Client::of("2001:db8:1:3::1".parse().unwrap()));
        let mapped = Client::of("::ffff:203.0.113.7".parse().unwrap());
        assert_eq!(mapped.to_string(), "203.0.113.7");
        assert_ne!(mapped, Client::of("203.0.113.8".parse().unwrap()));
    }

    #[test]
    fn a_retry_is_the_same_attempt_and_another_password_is_not() {
        let key = AttemptKey::derive(&[7; 32]);
        let origin = Origin {
            address: None,
            request_id: "req-1".into(),
        };
        let first = key.attempt(&origin, &[b"guess"]);
        assert_eq!(first, key.attempt(&origin, &[b"guess"]));
        assert_ne!(first, key.attempt(&origin, &[b"other guess"]));
        assert!(first.as_str().starts_with("req-1/"));
        assert!(!first.as_str().contains("guess"));
        let anonymous = Origin::default();
        assert_ne!(
            key.attempt(&anonymous, &[b"x"]),
            key.attempt(&anonymous, &[b"x"])
        );
    }

    #[test]
    fn a_fingerprint_depends_on_the_key_and_is_not_the_plain_hash() {
        let origin = Origin {
            address: None,
            request_id: "req-1".into(),
        };
        let key = AttemptKey::derive(&[7; 32]);
        let attempt = key.attempt(&origin, &[b"guess"]);
        assert_eq!(
            attempt,
            AttemptKey::derive(&[7; 32]).attempt(&origin, &[b"guess"])
        );
        assert_ne!(
            attempt,
            AttemptKey::derive(&[8; 32]).attempt(&origin, &[b"guess"])
        );
        // The formula of earlier releases, which anyone could compute.
        let plain: String = Sha256::digest(b"req-1\0guess")[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(attempt.as_str(), format!("req-1/{plain}"));
        // Parts are told apart by their lengths, not by a separator they might contain.
        assert_ne!(
            key.attempt(&origin, &[b"ab", b"c"]),
            key.attempt(&origin, &[b"a", b"bc"])
        );
        assert_eq!(format!("{key:?}"), "AttemptKey([REDACTED])");
    }

    #[test]
    fn an_unknown_login_is_counted_normalised_and_hashed() {
        assert_eq!(Subject::login(" Alice "), Subject::login("alice"));
        assert!(!Subject::login("alice").0.contains("alice"));
    }
}
