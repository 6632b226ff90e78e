//! Sign-up, sign-in and account administration: the service's rules, free of transport.

use std::{net::IpAddr, sync::Arc};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use token::{Claims, Issued, Role, unix_now};

use crate::{
    domain::{Email, NewUser, Password, User, UserId, Username, roles_with_user},
    error::Error,
    keyring::KeyRing,
    password::PasswordHasher,
    store::{Store, StoreError},
};

pub struct Accounts {
    store: Arc<Store>,
    hasher: PasswordHasher,
    keys: Arc<KeyRing>,
}

/// A sign-up request, parsed.
pub struct SignUp {
    pub username: Username,
    pub email: Email,
    pub password: Password,
    pub roles: Vec<Role>,
}

/// The first admin account, created at start-up when configured.
pub struct BootstrapAdmin {
    pub username: Username,
    pub email: Email,
    pub password: Password,
}

/// The longest login or password worth hashing; anything longer cannot be a real account.
const MAX_LOGIN: usize = 254;

/// Names the account a sign-in was for without putting the login in the log: the first 16 hex
/// digits of SHA-256 over the lowercased login (usernames and emails match case-insensitively),
/// enough to group attempts on one account, and no more readable than that.
pub fn login_hash(login: &str) -> String {
    let digest = Sha256::digest(login.trim().to_lowercase().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Accounts {
    pub fn new(store: Arc<Store>, hasher: PasswordHasher, keys: Arc<KeyRing>) -> Self {
        Self {
            store,
            hasher,
            keys,
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Creates an account. `caller` is the signed-in user, if any: only an admin may grant
    /// roles beyond `user`.
    pub async fn sign_up(&self, request: SignUp, caller: Option<&Claims>) -> Result<User, Error> {
        let roles = roles_with_user(request.roles);
        if roles != [Role::User] && !caller.is_some_and(|c| c.has_role(Role::Admin)) {
            return Err(Error::CannotGrantRoles);
        }
        let password_hash = self.hasher.hash(request.password.secret().clone()).await?;
        let user = self
            .store
            .insert_user(&NewUser {
                id: UserId::new(),
                username: request.username,
                email: request.email,
                password_hash,
                roles,
                created_at: unix_now(),
            })
            .await?;
        tracing::info!(user_id = %user.id, username = %user.username, "account created");
        Ok(user)
    }

    /// Checks the password and issues an access token. Unknown user and wrong password give
    /// the same error after the same amount of work. `client` is the caller's address, for the
    /// log: a refusal is logged with it and a hash of the login, so that guessing shows up as
    /// many refusals from one client or against one account.
    pub async fn sign_in(
        &self,
        login: &str,
        password: SecretString,
        client: Option<IpAddr>,
    ) -> Result<(User, Issued), Error> {
        let login = login.trim();
        if login.is_empty() || password.expose_secret().is_empty() {
            return Err(Error::CredentialsMissing);
        }
        let client = client.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        let refused = || {
            tracing::info!(client = %client, login_hash = %login_hash(login), "sign-in refused");
            Error::InvalidCredentials
        };
        if login.len() > MAX_LOGIN || password.expose_secret().chars().count() > Password::MAX {
            return Err(refused());
        }
        let found = self.store.find_credentials(login).await?;
        let (user, hash) = match found {
            Some(c) => (Some(c.user), Some(c.password_hash)),
            None => (None, None),
        };
        let matches = self.hasher.verify(password, hash).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(refused()),
        };
        let issued = self
            .keys
            .current()
            .issuer
            .issue(&user.id.to_string(), &user.username, &user.roles)
            .map_err(anyhow::Error::new)?;
        tracing::info!(user_id = %user.id, jti = %issued.claims.jti, client = %client, "signed in");
        Ok((user, issued))
    }

    pub async fn me(&self, caller: &Claims) -> Result<User, Error> {
        // Every token this service issues names a user id; one that does not names nobody.
        let id: UserId = caller.sub.parse().map_err(|_| Error::AccountGone)?;
        self.store.find_user(id).await?.ok_or(Error::AccountGone)
    }

    pub async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>, Error> {
        Ok(self.store.list_users(after, limit).await?)
    }

    pub async fn set_roles(
        &self,
        caller: &Claims,
        id: UserId,
        roles: Vec<Role>,
    ) -> Result<User, Error> {
        let roles = roles_with_user(roles);
        if caller.sub == id.to_string() && !roles.contains(&Role::Admin) {
            return Err(Error::CannotDropOwnAdmin);
        }
        let user = self
            .store
            .set_roles(id, &roles)
            .await?
            .ok_or(Error::UserNotFound(id))?;
        tracing::info!(user_id = %id, by = %caller.sub, roles = ?user.roles, "roles changed");
        Ok(user)
    }

    /// Creates the configured first admin unless an account with that username exists.
    /// Concurrent replicas may all try; the unique index lets exactly one succeed.
    pub async fn ensure_admin(&self, admin: BootstrapAdmin) -> Result<(), Error> {
        if let Some(existing) = self.store.find_credentials(admin.username.as_ref()).await? {
            return self.check_existing_admin(&existing.user).await;
        }
        let password_hash = self.hasher.hash(admin.password.secret().clone()).await?;
        let result = self
            .store
            .insert_user(&NewUser {
                id: UserId::new(),
                username: admin.username.clone(),
                email: admin.email,
                password_hash,
                roles: vec![Role::User, Role::Admin],
                created_at: unix_now(),
            })
            .await;
        match result {
            Ok(user) => {
                tracing::info!(user_id = %user.id, username = %user.username, "created the bootstrap admin");
                Ok(())
            }
            // Another replica created it first.
            Err(StoreError::UsernameTaken) => {
                match self.store.find_credentials(admin.username.as_ref()).await? {
                    Some(existing) => self.check_existing_admin(&existing.user).await,
                    None => {
                        Err(anyhow::anyhow!("bootstrap admin vanished after a conflict").into())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An account that already has the bootstrap admin's name is normally that admin. If it is
    /// a plain user, start-up fails only when no admin exists at all, since then none ever
    /// would; once some admin exists, the name was demoted or taken later, and refusing would
    /// stop every replica from starting over a name nobody needs any more.
    async fn check_existing_admin(&self, user: &User) -> Result<(), Error> {
        if user.roles.contains(&Role::Admin) {
            tracing::info!(username = %user.username, "bootstrap admin already exists");
            return Ok(());
        }
        if self.store.any_admin().await? {
            tracing::warn!(
                username = %user.username,
                "the bootstrap admin's name belongs to an account that is not an admin; another \
                 admin exists, so starting without creating one"
            );
            return Ok(());
        }
        Err(Error::BootstrapNameTaken(user.username.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::login_hash;

    #[test]
    fn a_login_hash_is_16_hex_digits_the_same_for_any_case_and_hides_the_login() {
        let hash = login_hash("Alice@Example.com");
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, login_hash(" alice@example.com "));
        assert_ne!(hash, login_hash("bob@example.com"));
        assert!(!hash.contains("alice"));
    }
}
