//! Sign-up, sign-in and account administration: the service's rules, free of transport.

use std::{net::IpAddr, sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use token::{Claims, Issued, Role, unix_now};

use crate::{
    domain::{Email, NewUser, Password, User, UserId, Username, roles_with_user},
    error::Error,
    feed::Feed,
    keyring::KeyRing,
    password::PasswordHasher,
    refresh_token::RefreshToken,
    store::{AdminChange, AdminChangeOutcome, Store, StoreError},
    throttle::{Attempt, Origin, Subject, Throttle, ThrottleError},
};

pub struct Accounts {
    pub(crate) store: Arc<Store>,
    pub(crate) hasher: PasswordHasher,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) sessions: SessionPolicy,
    pub(crate) throttle: Arc<Throttle>,
    /// This replica's revocation feed, woken after each revocation written here so its
    /// followers hear of it at once (on SQLite the feed would otherwise wait for its next poll).
    pub(crate) feed: Feed,
    /// The lifetime of a service account's tokens (`AUTH_SERVICE_TOKEN_TTL`).
    pub(crate) service_token_ttl: Duration,
}

/// How long sessions and their refresh tokens live, from configuration.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle_ttl: Duration,
    /// A session ends this long after sign-in, however much it is used.
    pub absolute_ttl: Duration,
    /// A retry of a spent refresh token this soon gets the same new token back.
    pub refresh_grace: Duration,
    /// Live sessions a user may hold; signing in beyond it ends the oldest.
    pub max_per_user: usize,
}

/// Who is signing in or refreshing, for the session list and the log.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub address: Option<IpAddr>,
    pub user_agent: String,
}

/// A signed-in (or refreshed) session: an access token and the refresh token that renews it.
pub struct SessionTokens {
    pub access: Issued,
    pub refresh: RefreshToken,
    /// When the refresh token stops working if unused (Unix seconds).
    pub refresh_expires_at: i64,
}

/// Both tokens are bearer credentials: `Debug` shows the claims, never a token.
impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("claims", &self.access.claims)
            .field("access_token", &"[REDACTED]")
            .field("refresh", &self.refresh)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
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
    pub fn new(
        store: Arc<Store>,
        hasher: PasswordHasher,
        keys: Arc<KeyRing>,
        sessions: SessionPolicy,
        throttle: Arc<Throttle>,
        feed: Feed,
        service_token_ttl: Duration,
    ) -> Self {
        Self {
            store,
            hasher,
            keys,
            sessions,
            throttle,
            feed,
            service_token_ttl,
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// What `origin` tried, as the throttle records it (a keyed fingerprint, never the secret).
    pub(crate) fn attempt(&self, origin: &Origin, tried: &[&[u8]]) -> Attempt {
        self.keys.attempt_key().attempt(origin, tried)
    }

    /// Creates an account. `caller` is the signed-in user, if any: only an admin may grant
    /// roles beyond `user`. A client told too often that names are taken is refused for a
    /// while (admins are not counted).
    pub async fn sign_up(
        &self,
        request: SignUp,
        caller: Option<&Claims>,
        origin: &Origin,
    ) -> Result<User, Error> {
        let admin = caller.is_some_and(|c| c.has_role(Role::Admin));
        let roles = roles_with_user(request.roles);
        if roles != [Role::User] {
            // The token's roles may be stale (a demoted admin): the database decides.
            let caller = caller.ok_or(Error::CannotGrantRoles)?;
            self.require_admin(caller).await.map_err(|e| match e {
                Error::NotAdmin => Error::CannotGrantRoles,
                other => other,
            })?;
        }
        if !admin {
            match self.throttle.check_sign_up(origin).await {
                Ok(()) => {}
                Err(ThrottleError::Refused { retry_after, .. }) => {
                    tracing::warn!(
                        client = %client_text(origin),
                        retry_after_secs = retry_after.as_secs(),
                        "sign-up throttled"
                    );
                    return Err(Error::SignUpThrottled(retry_after));
                }
                Err(ThrottleError::Store(e)) => return Err(e.into()),
            }
        }
        let password_hash = self
            .hasher
            .hash(request.password.secret().clone(), origin.client())
            .await?;
        let inserted = self
            .store
            .insert_user(&NewUser {
                id: UserId::new(),
                username: request.username.clone(),
                email: request.email.clone(),
                password_hash,
                roles,
                created_at: unix_now(),
            })
            .await;
        let user = match inserted {
            Ok(user) => user,
            Err(e @ (StoreError::UsernameTaken | StoreError::EmailTaken)) => {
                if !admin {
                    let tried = self.attempt(
                        origin,
                        &[
                            request.username.as_ref().as_bytes(),
                            request.email.as_ref().as_bytes(),
                        ],
                    );
                    self.throttle.sign_up_taken(origin, &tried).await?;
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user_id = %user.id, username = %user.username, "account created");
        Ok(user)
    }

    /// Checks the password, starts a session and issues its tokens. Unknown user and wrong
    /// password give the same error after the same amount of work. `info` names the caller's
    /// address and user agent, for the session list; `origin` its address and request:
    /// failures are throttled per account and client (`throttle.rs`), checked before any
    /// hashing, and a refusal is logged with the client and a hash of the login, so that
    /// guessing shows up as many refusals from one client or against one account.
    pub async fn sign_in(
        &self,
        login: &str,
        password: SecretString,
        info: ClientInfo,
        origin: &Origin,
    ) -> Result<(User, SessionTokens), Error> {
        let login = login.trim();
        if login.is_empty() || password.expose_secret().is_empty() {
            return Err(Error::CredentialsMissing);
        }
        let client = client_text(origin);
        let refused = || {
            tracing::info!(client = %client, login_hash = %login_hash(login), "sign-in refused");
            Error::InvalidCredentials
        };
        // No username or email holds a control character (and PostgreSQL refuses a NUL in text,
        // which would make the lookup an internal error instead of a refusal).
        if login.len() > MAX_LOGIN
            || login.chars().any(char::is_control)
            || password.expose_secret().chars().count() > Password::MAX
        {
            return Err(refused());
        }
        // A place among the password checks first: when hashing is saturated the sign-in is
        // refused at once, before any database work, and counts as no attempt.
        let admitted = self.hasher.admit(origin.client())?;
        let found = self.store.find_credentials(login).await?;
        let (user, hash) = match found {
            Some(c) => (Some(c.user), Some(c.password_hash)),
            None => (None, None),
        };
        let subject = user
            .as_ref()
            .map_or_else(|| Subject::login(login), |u| Subject::account(u.id));
        let attempt = match self
            .throttle
            .begin_sign_in(
                subject,
                origin,
                self.attempt(origin, &[password.expose_secret().as_bytes()]),
            )
            .await
        {
            Ok(attempt) => attempt,
            Err(ThrottleError::Refused { limit, retry_after }) => {
                tracing::warn!(
                    client = %client,
                    login_hash = %login_hash(login),
                    limit,
                    retry_after_secs = retry_after.as_secs(),
                    "sign-in throttled"
                );
                return Err(Error::SignInThrottled(retry_after));
            }
            Err(ThrottleError::Store(e)) => return Err(e.into()),
        };
        let matches = match self.hasher.verify_admitted(admitted, password, hash).await {
            Ok(matches) => matches,
            Err(e) => {
                // Not a password check, so not a failure to count.
                if let Err(error) = self.throttle.sign_in_abandoned(&attempt).await {
                    tracing::warn!(error.cause_chain = ?error, "failed to take back a sign-in attempt");
                }
                return Err(e.into());
            }
        };
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(refused()),
        };
        // The password was right; failing to forget earlier failures must not refuse it.
        if let Err(error) = self.throttle.sign_in_succeeded(&attempt).await {
            tracing::warn!(error.cause_chain = ?error, "failed to clear failed sign-ins");
        }
        // Only someone who knows the password learns that the account is disabled.
        if user.disabled {
            tracing::info!(user_id = %user.id, client = %client, "sign-in refused: account disabled");
            return Err(Error::AccountDisabled);
        }
        let tokens = self.start_session(&user, &info).await?;
        tracing::info!(
            user_id = %user.id,
            jti = %tokens.access.claims.jti,
            sid = tokens.access.claims.sid.as_deref().unwrap_or_default(),
            client = %client,
            "signed in"
        );
        Ok((user, tokens))
    }

    /// Forgets the account's failed sign-ins from every client.
    pub async fn clear_sign_in_throttle(&self, caller: &Claims, id: UserId) -> Result<(), Error> {
        // Like every admin call: the role as the database holds it now.
        self.require_admin(caller).await?;
        if self.store.find_user(id).await?.is_none() {
            return Err(Error::UserNotFound(id));
        }
        let cleared = self.throttle.clear_sign_in(id).await?;
        tracing::info!(user_id = %id, by = %caller.sub, cleared, "sign-in throttle cleared");
        Ok(())
    }

    pub async fn me(&self, caller: &Claims) -> Result<User, Error> {
        // Every token this service issues names a user id; one that does not names nobody.
        let id: UserId = caller.sub.parse().map_err(|_| Error::AccountGone)?;
        self.store.find_user(id).await?.ok_or(Error::AccountGone)
    }

    pub async fn list_users(
        &self,
        caller: &Claims,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, Error> {
        self.require_admin(caller).await?;
        Ok(self.store.list_users(after, limit).await?)
    }

    /// Replaces the user's roles. Taking any role away ends every session of the user, so no
    /// token still carries it; a refresh would reissue the current roles anyway. The change is
    /// decided in one serialised transaction (`Store::change_as_admin`): the caller must still
    /// be an enabled admin there, the last enabled admin keeps the role, and the roles taken
    /// away are those the user held just before that write.
    pub async fn set_roles(
        &self,
        caller: &Claims,
        id: UserId,
        roles: Vec<Role>,
    ) -> Result<User, Error> {
        let admin = self.require_admin(caller).await?;
        let roles = roles_with_user(roles);
        if admin.id == id && !roles.contains(&Role::Admin) {
            return Err(Error::CannotDropOwnAdmin);
        }
        let (before, user) = self
            .change_as_admin(&admin, id, AdminChange::Roles(&roles))
            .await?;
        tracing::info!(user_id = %id, by = %caller.sub, roles = ?user.roles, "roles changed");
        if before.roles.iter().any(|r| !user.roles.contains(r)) {
            self.end_every_session(id).await?;
            tracing::info!(user_id = %id, "a role was removed; every session of the user ended");
        }
        Ok(user)
    }

    /// Applies an admin's change to account `id` under the store's admin rules; the account
    /// just before and just after it.
    pub(crate) async fn change_as_admin(
        &self,
        admin: &User,
        id: UserId,
        change: AdminChange<'_>,
    ) -> Result<(User, User), Error> {
        match self.store.change_as_admin(admin.id, id, change).await? {
            AdminChangeOutcome::Changed { before, after } => Ok((*before, *after)),
            AdminChangeOutcome::NotFound => Err(Error::UserNotFound(id)),
            AdminChangeOutcome::CallerNotAdmin => {
                tracing::warn!(
                    target: "security",
                    user_id = %admin.id,
                    "an admin call by an admin demoted or disabled while it was being made"
                );
                Err(Error::NotAdmin)
            }
            AdminChangeOutcome::LastAdmin => Err(Error::LastAdmin),
        }
    }

    /// The caller as the database knows it now, if it still holds the admin role. Admin calls
    /// check this rather than the token, whose roles may predate a demotion.
    pub(crate) async fn require_admin(&self, caller: &Claims) -> Result<User, Error> {
        let id: UserId = caller.sub.parse().map_err(|_| Error::NotAdmin)?;
        match self.store.find_user(id).await? {
            Some(user) if !user.disabled && user.roles.contains(&Role::Admin) => Ok(user),
            // Only a token that claims the role is news for security: anyone else trying an
            // admin call is refused like any other call beyond their roles.
            _ if caller.roles.contains(&Role::Admin) => {
                tracing::warn!(
                    target: "security",
                    user_id = %caller.sub,
                    "an admin call with a token whose admin role the database no longer grants"
                );
                Err(Error::NotAdmin)
            }
            _ => Err(Error::NotAdmin),
        }
    }

    /// Creates the configured first admin unless an account with that username exists.
    /// Concurrent replicas may all try; the unique index lets exactly one succeed.
    pub async fn ensure_admin(&self, admin: BootstrapAdmin) -> Result<(), Error> {
        if let Some(existing) = self.store.find_credentials(admin.username.as_ref()).await? {
            return self.check_existing_admin(&existing.user).await;
        }
        let password_hash = self
            .hasher
            .hash(admin.password.secret().clone(), None)
            .await?;
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

/// The client for the log: its address, or `unknown`.
pub(crate) fn client_text(origin: &Origin) -> String {
    origin
        .address
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
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
