//! Service accounts: identities for internal services, which authenticate with a client id and
//! a client secret (the OAuth 2.0 client-credentials grant) instead of a password.

use std::{fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use token::Role;
use uuid::Uuid;

use super::{Invalid, roles_with_user};

/// A service account's id, which is also its OAuth 2.0 client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub Uuid);

impl ClientId {
    /// Time-ordered, so listing by id lists by creation.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The `sub` of the account's tokens, and the subject its revocations name.
    pub fn subject(&self) -> String {
        format!("{}{self}", token::SERVICE_ACCOUNT_PREFIX)
    }
}

impl Default for ClientId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for ClientId {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| Invalid("client_id must be a UUID".to_owned()))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A service account's name: 3 to 64 of `a-z`, `0-9`, `-`, `_` and `.`; unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountName(String);

impl ServiceAccountName {
    pub const MIN: usize = 3;
    pub const MAX: usize = 64;

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let len = s.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(Invalid(format!(
                "service account name must be {} to {} characters, got {len}",
                Self::MIN,
                Self::MAX
            )));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        }) {
            return Err(Invalid(format!(
                "service account name may only contain a-z, 0-9, '-', '_' and '.', found {c:?}"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for ServiceAccountName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service account's roles: `roles` plus `user`, sorted, without repeats; never `admin`
/// (administration needs a person, whose role is re-read from the database on every call).
pub fn service_account_roles(roles: Vec<Role>) -> Result<Vec<Role>, Invalid> {
    if roles.contains(&Role::Admin) {
        return Err(Invalid(
            "a service account cannot hold the admin role; give it user or moderator".to_owned(),
        ));
    }
    Ok(roles_with_user(roles))
}

/// A stored service account, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: ClientId,
    pub name: String,
    pub roles: Vec<Role>,
    /// Unix seconds.
    pub created_at: i64,
    /// A disabled account gets no token.
    pub disabled: bool,
    /// When the current secret was issued (Unix seconds).
    pub secret_created_at: i64,
    /// When the rotated-out secret stops working, if one was kept (Unix seconds; it may have
    /// passed already).
    pub previous_secret_expires_at: Option<i64>,
}

/// A service account with the hashes of its secrets, for authenticating it.
#[derive(Clone)]
pub struct ServiceAccountSecrets {
    pub account: ServiceAccount,
    pub secret_hash: Vec<u8>,
    pub previous_secret_hash: Option<Vec<u8>>,
}

impl fmt::Debug for ServiceAccountSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountSecrets")
            .field("account", &self.account)
            .field("secret_hash", &"[REDACTED]")
            .field("previous_secret_hash", &"[REDACTED]")
            .finish()
    }
}

impl ServiceAccountSecrets {
    /// Whether `secret` is the current secret, or the previous one while its overlap lasts at
    /// `now`. Both comparisons always run, in constant time, so the answer's timing tells
    /// nothing of which secret (or how much of it) matched.
    pub fn accepts(&self, secret: &ClientSecret, now: i64) -> bool {
        let hash = secret.hash();
        let current = hash.ct_eq(self.secret_hash.as_slice());
        let previous_live = self
            .account
            .previous_secret_expires_at
            .is_some_and(|until| now < until);
        let previous = match &self.previous_secret_hash {
            Some(previous) => hash.ct_eq(previous.as_slice()),
            None => hash.ct_eq(&[0u8; 32]),
        };
        bool::from(current | (previous & subtle::Choice::from(u8::from(previous_live))))
    }
}

/// A service account about to be stored.
#[derive(Clone)]
pub struct NewServiceAccount {
    pub id: ClientId,
    pub name: ServiceAccountName,
    pub roles: Vec<Role>,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
}

impl fmt::Debug for NewServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewServiceAccount")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("secret_hash", &"[REDACTED]")
            .finish()
    }
}

/// 256 random bits, as the proto promises.
const SECRET_BYTES: usize = 32;
/// Longer than any secret this service hands out (43 characters); longer ones are refused
/// without hashing them.
pub const MAX_CLIENT_SECRET: usize = 128;

/// A client secret as the service holds it. Never logged: `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ClientSecret(SecretString);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([REDACTED])")
    }
}

impl ClientSecret {
    /// A new secret: 256 bits from the operating system, base64url without padding.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_client(text: String) -> Self {
        Self(SecretString::from(text))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the database keeps: SHA-256 of the secret. The secret is 256 random bits, so no
    /// salt or slow hash is needed to make the hash useless to a thief, and a grant costs
    /// microseconds, not an argon2 run.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.expose().as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_allowed_alphabet_and_length_parse() {
        for ok in ["abc", "billing-worker", "a_b.c-9", &"x".repeat(64)] {
            assert!(ServiceAccountName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            &"x".repeat(65),
            "Billing",
            "a b",
            "émile",
            "a/b",
            "x\0y",
        ] {
            let error = ServiceAccountName::parse(bad).unwrap_err();
            assert!(
                error.0.starts_with("service account name"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn roles_always_include_user_and_never_admin() {
        assert_eq!(service_account_roles(vec![]).unwrap(), [Role::User]);
        assert_eq!(
            service_account_roles(vec![Role::Moderator, Role::Moderator]).unwrap(),
            [Role::User, Role::Moderator]
        );
        let error = service_account_roles(vec![Role::User, Role::Admin]).unwrap_err();
        assert!(error.0.contains("admin role"), "{error}");
    }

    #[test]
    fn secrets_are_256_random_bits_hashed_to_32_bytes_and_never_shown() {
        let a = ClientSecret::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), ClientSecret::generate().expose());
        assert_eq!(
            a.hash(),
            ClientSecret::from_client(a.expose().to_owned()).hash()
        );
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    fn secrets(
        current: &ClientSecret,
        previous: Option<(&ClientSecret, i64)>,
    ) -> ServiceAccountSecrets {
        ServiceAccountSecrets {
            account: ServiceAccount {
                id: ClientId::new(),
                name: "svc".into(),
                roles: vec![Role::User],
                created_at: 0,
                disabled: false,
                secret_created_at: 0,
                previous_secret_expires_at: previous.map(|(_, until)| until),
            },
            secret_hash: current.hash().to_vec(),
            previous_secret_hash: previous.map(|(s, _)| s.hash().to_vec()),
        }
    }

    #[test]
    fn the_current_secret_works_and_the_previous_one_only_until_its_overlap_ends() {
        let (old, new, other) = (
            ClientSecret::generate(),
            ClientSecret::generate(),
            ClientSecret::generate(),
        );
        let stored = secrets(&new, Some((&old, 1_000)));
        assert!(stored.accepts(&new, 5_000));
        assert!(stored.accepts(&old, 999));
        assert!(!stored.accepts(&old, 1_000));
        assert!(!stored.accepts(&other, 999));
        let alone = secrets(&new, None);
        assert!(alone.accepts(&new, 0));
        assert!(!alone.accepts(&old, 0));
        // No previous secret: the all-zero stand-in never matches a real secret's hash.
        assert!(!alone.accepts(&ClientSecret::from_client(String::new()), 0));
    }
}
