//! Accounts as the rest of the service sees them.

use std::{fmt, str::FromStr};

use token::Role;
use uuid::Uuid;

use super::{Email, Invalid, Username};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl UserId {
    /// Time-ordered, so listing by id lists by creation.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for UserId {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| Invalid("user id must be a UUID".to_owned()))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored account, without its password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub roles: Vec<Role>,
    /// Unix seconds.
    pub created_at: i64,
    /// A disabled account cannot sign in or refresh.
    pub disabled: bool,
}

/// An account about to be stored.
#[derive(Clone)]
pub struct NewUser {
    pub id: UserId,
    pub username: Username,
    pub email: Email,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub created_at: i64,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password_hash", &"[REDACTED]")
            .field("roles", &self.roles)
            .finish()
    }
}

/// `roles` plus `user`, which every account has, sorted and without repeats.
pub fn roles_with_user(roles: impl IntoIterator<Item = Role>) -> Vec<Role> {
    let mut roles: Vec<Role> = roles.into_iter().chain([Role::User]).collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_has_the_user_role_once() {
        assert_eq!(roles_with_user([]), vec![Role::User]);
        assert_eq!(
            roles_with_user([Role::Admin, Role::User, Role::Admin]),
            vec![Role::User, Role::Admin]
        );
    }

    #[test]
    fn user_ids_parse_and_print() {
        let id = UserId::new();
        assert_eq!(id.to_string().parse::<UserId>(), Ok(id));
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
