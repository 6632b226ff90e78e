//! Rows as both databases return them, and their mapping to the domain.

use anyhow::Context;
use token::Role;
use uuid::Uuid;

use super::Credentials;
use crate::domain::{User, UserId};

/// A user as both databases return it.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    username: String,
    email: String,
    created_at: i64,
    /// Comma-separated; `NULL` when the user has no roles.
    roles: Option<String>,
    disabled_at: Option<i64>,
}

impl UserRow {
    /// Rows were checked on the way in; one that no longer parses means someone wrote to the
    /// tables behind our back, which is our problem, not the caller's.
    pub(super) fn into_user(self) -> anyhow::Result<User> {
        let id = Uuid::parse_str(&self.id).context("stored user id is not a UUID")?;
        let mut roles = self
            .roles
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::parse::<Role>)
            .collect::<Result<Vec<_>, _>>()
            .context("stored role is not known")?;
        roles.sort();
        Ok(User {
            id: UserId(id),
            username: self.username,
            email: self.email,
            roles,
            created_at: self.created_at,
            disabled: self.disabled_at.is_some(),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl CredentialsRow {
    pub(super) fn into_credentials(self) -> anyhow::Result<Credentials> {
        Ok(Credentials {
            user: self.user.into_user()?,
            password_hash: self.password_hash,
        })
    }
}
