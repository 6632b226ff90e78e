//! Rows as both databases return them, and their mapping to the domain.

use anyhow::Context;
use token::Role;
use uuid::Uuid;

use super::Credentials;
use crate::domain::{ClientId, ServiceAccount, ServiceAccountSecrets, User, UserId};

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
        Ok(User {
            id: UserId(id),
            username: self.username,
            email: self.email,
            roles: roles(self.roles.as_deref())?,
            created_at: self.created_at,
            disabled: self.disabled_at.is_some(),
        })
    }
}

/// Roles as one comma-separated column (`NULL` for none), sorted.
fn roles(column: Option<&str>) -> anyhow::Result<Vec<Role>> {
    let mut roles = column
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::parse::<Role>)
        .collect::<Result<Vec<_>, _>>()
        .context("stored role is not known")?;
    roles.sort();
    Ok(roles)
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

/// A service account as both databases return it.
#[derive(sqlx::FromRow)]
pub(super) struct ServiceAccountRow {
    id: String,
    name: String,
    /// Comma-separated; `NULL` when it has no roles.
    roles: Option<String>,
    created_at: i64,
    disabled_at: Option<i64>,
    secret_created_at: i64,
    previous_secret_expires_at: Option<i64>,
}

impl ServiceAccountRow {
    pub(super) fn into_account(self) -> anyhow::Result<ServiceAccount> {
        let id = Uuid::parse_str(&self.id).context("stored client id is not a UUID")?;
        Ok(ServiceAccount {
            id: ClientId(id),
            name: self.name,
            roles: roles(self.roles.as_deref())?,
            created_at: self.created_at,
            disabled: self.disabled_at.is_some(),
            secret_created_at: self.secret_created_at,
            previous_secret_expires_at: self.previous_secret_expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ServiceAccountSecretsRow {
    #[sqlx(flatten)]
    account: ServiceAccountRow,
    secret_hash: Vec<u8>,
    previous_secret_hash: Option<Vec<u8>>,
}

impl ServiceAccountSecretsRow {
    pub(super) fn into_secrets(self) -> anyhow::Result<ServiceAccountSecrets> {
        Ok(ServiceAccountSecrets {
            account: self.account.into_account()?,
            secret_hash: self.secret_hash,
            previous_secret_hash: self.previous_secret_hash,
        })
    }
}
