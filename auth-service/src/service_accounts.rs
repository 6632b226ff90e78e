//! Service accounts: their administration (admins only, the role re-read from the database),
//! client authentication by id and secret, and the client-credentials grant.
//!
//! Disabling or deleting an account revokes its tokens through the revocation feed: a
//! user-level revocation of subject `sa:<client id>`, which verifiers compare with the token's
//! `sub` like any user's.

use std::time::Duration;

use token::{Claims, Issued, Role, unix_now};

use crate::{
    accounts::{Accounts, client_text},
    domain::{
        ClientId, ClientSecret, MAX_CLIENT_SECRET, NewServiceAccount, ServiceAccount,
        ServiceAccountName, service_account_roles,
    },
    error::Error,
    store::{NewRevocation, RevocationKind},
    throttle::{Origin, ThrottleError},
};

/// How long a rotated-out secret keeps working when the admin does not say.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest a rotated-out secret may keep working.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(30 * 86_400);
/// Longer than any client id (a UUID is 36 characters) or any sensible scope; longer ones are
/// refused before any work.
const MAX_CLIENT_ID: usize = 64;
const MAX_SCOPE: usize = 256;

/// A token of the client-credentials grant.
pub struct ClientToken {
    pub access: Issued,
    /// The roles it carries (the scope granted).
    pub roles: Vec<Role>,
}

/// The token is a bearer credential: `Debug` shows the claims, never the token.
impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientToken")
            .field("claims", &self.access.claims)
            .field("access_token", &"[REDACTED]")
            .finish()
    }
}

impl Accounts {
    pub async fn create_service_account(
        &self,
        caller: &Claims,
        name: ServiceAccountName,
        roles: Vec<Role>,
    ) -> Result<(ServiceAccount, ClientSecret), Error> {
        let roles = service_account_roles(roles)?;
        self.require_admin(caller).await?;
        let secret = ClientSecret::generate();
        let account = self
            .store
            .insert_service_account(&NewServiceAccount {
                id: ClientId::new(),
                name,
                roles,
                secret_hash: secret.hash().to_vec(),
                created_at: unix_now(),
            })
            .await?;
        tracing::info!(client_id = %account.id, name = %account.name, roles = ?account.roles, by = %caller.sub, "service account created");
        Ok((account, secret))
    }

    pub async fn list_service_accounts(
        &self,
        caller: &Claims,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<Vec<ServiceAccount>, Error> {
        self.require_admin(caller).await?;
        Ok(self.store.list_service_accounts(after, limit).await?)
    }

    /// Disables the account (no more tokens; the ones it holds are revoked) or enables it.
    pub async fn set_service_account_disabled(
        &self,
        caller: &Claims,
        id: ClientId,
        disabled: bool,
    ) -> Result<ServiceAccount, Error> {
        self.require_admin(caller).await?;
        if disabled {
            self.disable_service_account(id).await?;
        } else {
            // Tokens issued in the second of the last revocation would be refused with it, so
            // the account comes back only once that second is over.
            if let Some(through) = self.store.revoked_through(&id.subject()).await? {
                let wait = through + 1 - unix_now();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
                }
            }
            if !self.store.set_service_account_disabled(id, None).await? {
                return Err(Error::ServiceAccountNotFound(id));
            }
        }
        tracing::info!(client_id = %id, by = %caller.sub, disabled, "service account disabled flag changed");
        self.service_account(id).await
    }

    /// Deletes the account and revokes its tokens. It is disabled and revoked first, so a
    /// failure on the way leaves a disabled account to delete again, never live tokens of a
    /// deleted one.
    pub async fn delete_service_account(&self, caller: &Claims, id: ClientId) -> Result<(), Error> {
        self.require_admin(caller).await?;
        self.disable_service_account(id).await?;
        if !self.store.delete_service_account(id).await? {
            return Err(Error::ServiceAccountNotFound(id));
        }
        tracing::info!(client_id = %id, by = %caller.sub, "service account deleted");
        Ok(())
    }

    /// Forgets the account's failed client authentications from every address, lifting the
    /// throttle that guesses put on it (neither a new secret nor disabling does).
    pub async fn clear_client_throttle(&self, caller: &Claims, id: ClientId) -> Result<(), Error> {
        self.require_admin(caller).await?;
        if self.store.find_service_account(id).await?.is_none() {
            return Err(Error::ServiceAccountNotFound(id));
        }
        let cleared = self.throttle.clear_client(id).await?;
        tracing::info!(client_id = %id, by = %caller.sub, cleared, "client authentication throttle cleared");
        Ok(())
    }

    /// A new secret; the current one keeps working for `overlap` (none: it stops at once).
    pub async fn rotate_service_account_secret(
        &self,
        caller: &Claims,
        id: ClientId,
        overlap: Duration,
    ) -> Result<(ServiceAccount, ClientSecret), Error> {
        self.require_admin(caller).await?;
        let secret = ClientSecret::generate();
        let now = unix_now();
        let previous_expires_at = (!overlap.is_zero()).then(|| now + overlap.as_secs() as i64);
        if !self
            .store
            .rotate_service_account_secret(id, &secret.hash(), now, previous_expires_at)
            .await?
        {
            return Err(Error::ServiceAccountNotFound(id));
        }
        if overlap.is_zero() {
            // No overlap is what a leaked secret calls for: the tokens got with it go too. A
            // token got with the new secret in the revocation's second would be refused with
            // them, so the new secret is handed out only once that second is over.
            let now = self.revoke_service_account_tokens(id).await?;
            let wait = now + 1 - unix_now();
            if wait > 0 {
                tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
            }
        }
        tracing::info!(client_id = %id, by = %caller.sub, overlap_secs = overlap.as_secs(), "service account secret rotated");
        Ok((self.service_account(id).await?, secret))
    }

    /// Checks a client id and secret: the current secret, or the previous one while its
    /// overlap lasts, of an enabled account. Unknown, wrong and disabled are one answer,
    /// `InvalidClient`. Failures are throttled per client id and address before the secret is
    /// looked at; the check is one SHA-256, and the account and the throttle are read at once.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
        origin: &Origin,
    ) -> Result<ServiceAccount, Error> {
        let client = client_text(origin);
        if secret.is_empty() || secret.len() > MAX_CLIENT_SECRET || client_id.len() > MAX_CLIENT_ID
        {
            tracing::info!(client = %client, "client authentication refused: malformed credentials");
            return Err(Error::InvalidClient);
        }
        // No account has an id that is not a UUID: nothing to look up or count.
        let Ok(id) = client_id.parse::<ClientId>() else {
            tracing::info!(client = %client, "client authentication refused: the client id is not a UUID");
            return Err(Error::InvalidClient);
        };
        let secret = ClientSecret::from_client(secret.to_owned());
        let (found, attempt) = tokio::join!(
            self.store.find_service_account(id),
            self.throttle.check_client(id, origin)
        );
        let attempt = match attempt {
            Ok(attempt) => attempt,
            Err(ThrottleError::Refused { retry_after, .. }) => {
                tracing::warn!(client_id = %id, client = %client, retry_after_secs = retry_after.as_secs(), "client authentication throttled");
                return Err(Error::ClientThrottled(retry_after));
            }
            Err(ThrottleError::Store(e)) => return Err(e.into()),
        };
        let found = found?;
        match found {
            Some(stored) if stored.accepts(&secret, unix_now()) => {
                // The secret was right; failing to forget earlier failures must not refuse it.
                if let Err(error) = self.throttle.client_succeeded(&attempt).await {
                    tracing::warn!(error.cause_chain = ?error, "failed to clear failed client authentications");
                }
                if stored.account.disabled {
                    // Not a guess, so not counted: a re-enabled service is not kept out.
                    tracing::info!(client_id = %id, client = %client, "client authentication refused: account disabled");
                    return Err(Error::InvalidClient);
                }
                Ok(stored.account)
            }
            _ => {
                let tried = self.attempt(origin, &[secret.expose().as_bytes()]);
                self.throttle.client_failed(&attempt, &tried).await?;
                tracing::info!(client_id = %id, client = %client, "client authentication refused");
                Err(Error::InvalidClient)
            }
        }
    }

    /// The client-credentials grant: a token of the account's own, with its roles narrowed to
    /// `scope` when one is given (space-separated role names the account holds).
    pub async fn issue_client_token(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
        origin: &Origin,
    ) -> Result<ClientToken, Error> {
        let account = self.authenticate_client(client_id, secret, origin).await?;
        #[cfg(feature = "test-util")]
        crate::test_hooks::client_grant(account.name.as_ref()).await;
        let id = account.id;
        let secret = ClientSecret::from_client(secret.to_owned());
        let (access, roles) = self.issue_client_checked(account, &secret, scope).await?;
        tracing::info!(client_id = %id, jti = %access.claims.jti, roles = ?roles, client = %client_text(origin), "client token issued");
        Ok(ClientToken { access, roles })
    }

    /// Issues a token for `account`, then reads the account again and returns the token only if
    /// it still stands, as `issue_checked` does for users: disabling (and rotating the secret
    /// with no overlap) changes the row first and revokes the account's tokens after, with
    /// `not_before` = then. A change that lands before the second read is seen there
    /// (`invalid_client`, as for a disabled account or a wrong secret), and one that lands after
    /// it revokes from a second no earlier than this token's `iat`: no token outlives a disable
    /// that raced its grant. Changed roles are granted again.
    async fn issue_client_checked(
        &self,
        mut account: ServiceAccount,
        secret: &ClientSecret,
        scope: &str,
    ) -> Result<(Issued, Vec<Role>), Error> {
        // Each pass follows a change that landed meanwhile; more than a few means the account
        // is being changed continuously, and the caller may try again.
        for _ in 0..3 {
            let roles = granted_roles(&account.roles, scope)?;
            let access = self
                .keys
                .current()
                .issuer
                .issue_for_client(
                    &account.id.to_string(),
                    &account.name,
                    &roles,
                    self.service_token_ttl,
                )
                .map_err(anyhow::Error::new)?;
            let now = match self.store.find_service_account(account.id).await? {
                Some(stored) if !stored.account.disabled && stored.accepts(secret, unix_now()) => {
                    stored.account
                }
                _ => {
                    tracing::info!(client_id = %account.id, "client token withdrawn: the account was disabled, deleted or given a new secret while it was issued");
                    return Err(Error::InvalidClient);
                }
            };
            if now.roles != account.roles {
                account = now;
                continue;
            }
            return Ok((access, roles));
        }
        Err(Error::Busy)
    }

    /// RFC 7662 introspection for a service account: [`Accounts::validate`] after the caller
    /// authenticated with its client id and secret.
    pub async fn introspect(
        &self,
        client_id: &str,
        secret: &str,
        token: &str,
        origin: &Origin,
    ) -> Result<Option<Claims>, Error> {
        self.authenticate_client(client_id, secret, origin).await?;
        self.validate(token).await
    }

    async fn service_account(&self, id: ClientId) -> Result<ServiceAccount, Error> {
        self.store
            .find_service_account(id)
            .await?
            .map(|stored| stored.account)
            .ok_or(Error::ServiceAccountNotFound(id))
    }

    /// Marks the account disabled, then revokes every token it was issued up to now (after
    /// the mark, so a grant that read the account before it issued a token this covers).
    async fn disable_service_account(&self, id: ClientId) -> Result<(), Error> {
        if !self
            .store
            .set_service_account_disabled(id, Some(unix_now()))
            .await?
        {
            return Err(Error::ServiceAccountNotFound(id));
        }
        self.revoke_service_account_tokens(id).await?;
        Ok(())
    }

    /// Revokes every token of the account issued up to now; returns that time.
    async fn revoke_service_account_tokens(&self, id: ClientId) -> Result<i64, Error> {
        let now = unix_now();
        let revocation = [NewRevocation {
            kind: RevocationKind::User,
            subject: id.subject(),
            not_before: now,
            expires_at: Accounts::revocation_expiry(now),
        }];
        self.store.insert_revocations(&revocation).await?;
        self.feed.revoked(&revocation);
        Ok(now)
    }
}

/// The roles a token gets: every role of the account for an empty scope, otherwise exactly the
/// roles the scope names (each one the account holds, in any order, repeats ignored).
fn granted_roles(held: &[Role], scope: &str) -> Result<Vec<Role>, Error> {
    if scope.len() > MAX_SCOPE {
        return Err(Error::InvalidScope);
    }
    let mut roles = Vec::new();
    // RFC 6749 section 3.3: scope tokens are separated by spaces.
    for name in scope.split(' ').filter(|name| !name.is_empty()) {
        let role = Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .filter(|role| held.contains(role))
            .ok_or(Error::InvalidScope)?;
        roles.push(role);
    }
    if roles.is_empty() {
        return Ok(held.to_vec());
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_narrows_to_roles_the_account_holds_and_nothing_else() {
        let held = [Role::User, Role::Moderator];
        assert_eq!(granted_roles(&held, "").unwrap(), held);
        assert_eq!(granted_roles(&held, "  ").unwrap(), held);
        assert_eq!(
            granted_roles(&held, "moderator").unwrap(),
            [Role::Moderator]
        );
        assert_eq!(
            granted_roles(&held, "moderator user moderator").unwrap(),
            held
        );
        for bad in [
            "admin",
            "Moderator",
            "mod",
            "ROLE_USER",
            "user\tmoderator",
            "user,moderator",
        ] {
            assert!(
                matches!(granted_roles(&held, bad), Err(Error::InvalidScope)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            granted_roles(&[Role::User], "moderator"),
            Err(Error::InvalidScope)
        ));
        assert!(matches!(
            granted_roles(&held, &"user ".repeat(100)),
            Err(Error::InvalidScope)
        ));
    }
}
