//! Sessions: starting one at sign-in, refreshing it, and every way access ends (sign-out, a
//! password change, a demotion, disabling, an admin ending one). Whenever access ends, the
//! revocation is written before the session rows go, so a failure in between never leaves a
//! valid token for an ended session.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use token::{Claims, LEEWAY_SECS, unix_now};
use uuid::Uuid;

use crate::{
    accounts::{Accounts, ClientInfo, SessionTokens},
    config::LONGEST_TOKEN_TTL,
    domain::{Password, User, UserId},
    error::Error,
    refresh_token::RefreshToken,
    store::{
        AdminChange, NewRevocation, NewSession, RefreshOutcome, RevocationKind, Rotation, Session,
    },
    throttle::{Origin, Subject, ThrottleError},
};

/// The longest user agent kept for the session list; the rest is cut.
const MAX_USER_AGENT: usize = 256;
/// Longer than any refresh token this service hands out (43 characters).
const MAX_REFRESH_TOKEN: usize = 128;

/// How a caller names the session it wants to end.
pub enum SignOutBy<'a> {
    RefreshToken(RefreshToken),
    /// An access token, verified except for its expiry.
    AccessToken(&'a str),
}

fn user_agent(info: &ClientInfo) -> String {
    info.user_agent.chars().take(MAX_USER_AGENT).collect()
}

fn address(info: &ClientInfo) -> String {
    info.address.map(|a| a.to_string()).unwrap_or_default()
}

impl Accounts {
    /// Until when a revocation written now must be kept: the longest an access token issued
    /// up to now can still be accepted. That is the longest lifetime the settings allow, not the
    /// one set now: a token issued before `AUTH_ACCESS_TOKEN_TTL` was lowered (or by a replica
    /// not yet restarted with the new value) lives as long as it was issued for.
    pub(crate) fn revocation_expiry(now: i64) -> i64 {
        now + LONGEST_TOKEN_TTL.as_secs() as i64 + LEEWAY_SECS as i64
    }

    fn issue(&self, user: &User, sid: &str) -> Result<token::Issued, Error> {
        Ok(self
            .keys
            .current()
            .issuer
            .issue_in_session(&user.id.to_string(), &user.username, &user.roles, Some(sid))
            .map_err(anyhow::Error::new)?)
    }

    /// Issues an access token in session `sid` for `user`, then reads the account again and
    /// returns the token only if it still stands; `None` if the account is gone or disabled.
    ///
    /// Disabling a user or taking a role away stores the change first and writes the user's
    /// revocation after it. So a change that lands before the second read is seen there, and one
    /// that lands after it writes a `not_before` no earlier than this token's `iat`, which the
    /// revocation covers: no token outlives a disable or a demotion that raced its issuing.
    /// Changed roles are issued again.
    ///
    /// For a `new_session`: a token whose `iat` falls in the second of a user revocation (signing
    /// in again right after signing out everywhere) would be refused with it, so then this waits
    /// for the next second and issues again. An older session needs no such wait: every user
    /// revocation ends all the user's sessions, so its refresh fails anyway.
    async fn issue_checked(
        &self,
        user: &User,
        sid: &str,
        new_session: bool,
    ) -> Result<Option<token::Issued>, Error> {
        let mut user = user.clone();
        // Each pass follows a change that landed meanwhile; more than a few means the account
        // is being changed continuously, and the caller may try again.
        for _ in 0..3 {
            let access = self.issue(&user, sid)?;
            let now = match self.store.find_user(user.id).await? {
                Some(now) if !now.disabled => now,
                _ => return Ok(None),
            };
            if now.roles != user.roles || now.username != user.username {
                user = now;
                continue;
            }
            if !new_session {
                return Ok(Some(access));
            }
            let iat = access.claims.iat;
            match self.store.revoked_through(&user.id.to_string()).await? {
                Some(through) if through >= iat => {
                    let wait =
                        Duration::from_secs((through + 1 - unix_now()).max(0).unsigned_abs());
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(Some(access)),
            }
        }
        Err(Error::Busy)
    }

    /// Stores a new session for `user` and issues its first tokens; ends the oldest sessions
    /// beyond the per-user cap.
    pub(crate) async fn start_session(
        &self,
        user: &User,
        info: &ClientInfo,
    ) -> Result<SessionTokens, Error> {
        let now = unix_now();
        let refresh = RefreshToken::generate();
        let absolute = now + self.sessions.absolute_ttl.as_secs() as i64;
        let session = NewSession {
            id: Uuid::new_v4().to_string(),
            user_id: user.id,
            token_hash: refresh.hash(),
            created_at: now,
            expires_at: (now + self.sessions.idle_ttl.as_secs() as i64).min(absolute),
            absolute_expires_at: absolute,
            client_address: address(info),
            user_agent: user_agent(info),
        };
        self.store.insert_session(&session).await?;
        let Some(access) = self.issue_checked(user, &session.id, true).await? else {
            // Disabled or deleted while signing in: the session goes with the account's others.
            self.end_sessions(std::slice::from_ref(&session.id)).await?;
            return Err(Error::AccountDisabled);
        };
        let stored = self.store.user_sessions_oldest_first(user.id).await?;
        if stored.len() > self.sessions.max_per_user {
            let excess = stored.len() - self.sessions.max_per_user;
            let oldest: Vec<String> = stored.into_iter().take(excess).map(|s| s.id).collect();
            tracing::info!(user_id = %user.id, ended = oldest.len(), "session cap reached; the oldest sessions ended");
            self.end_sessions(&oldest).await?;
        }
        Ok(SessionTokens {
            access,
            refresh,
            refresh_expires_at: session.expires_at,
        })
    }

    /// Spends a refresh token. See `Store::refresh_session` for the race and the grace window.
    pub async fn refresh(&self, token: String, info: ClientInfo) -> Result<SessionTokens, Error> {
        if token.trim().is_empty() || token.len() > MAX_REFRESH_TOKEN {
            return Err(Error::RefreshRefused);
        }
        let parent = RefreshToken::from_client(token);
        let child = RefreshToken::generate();
        let rotation = Rotation {
            now: unix_now(),
            grace: self.sessions.refresh_grace.as_secs() as i64,
            idle: self.sessions.idle_ttl.as_secs() as i64,
            child_hash: child.hash(),
            sealed_child: parent.seal_child(&child)?,
            client_address: address(&info),
            user_agent: user_agent(&info),
        };
        let (session_id, user_id, refresh, refresh_expires_at) = match self
            .store
            .refresh_session(&parent.hash(), &rotation)
            .await?
        {
            RefreshOutcome::Rotated {
                session_id,
                user_id,
                expires_at,
            } => (session_id, user_id, child, expires_at),
            RefreshOutcome::Retried {
                session_id,
                user_id,
                sealed_child,
                expires_at,
            } => {
                let child = parent.open_child(&sealed_child)?;
                tracing::info!(sid = %session_id, %user_id, "refresh retried within the grace window; same token returned");
                (session_id, user_id, child, expires_at)
            }
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => {
                tracing::warn!(
                    target: "security",
                    sid = %session_id,
                    %user_id,
                    client = %address(&info),
                    "a spent refresh token was reused after the grace window; the session is revoked"
                );
                self.end_sessions(std::slice::from_ref(&session_id)).await?;
                return Err(Error::RefreshRefused);
            }
            RefreshOutcome::Refused => return Err(Error::RefreshRefused),
        };
        // The roles are the database's now, not the ones the session started with.
        let user = match self.store.find_user(user_id).await? {
            Some(user) if !user.disabled => user,
            _ => return Err(Error::RefreshRefused),
        };
        let Some(access) = self.issue_checked(&user, &session_id, false).await? else {
            return Err(Error::RefreshRefused);
        };
        Ok(SessionTokens {
            access,
            refresh,
            refresh_expires_at,
        })
    }

    /// Ends the session named by `by`, or every session of its user with `all`. Ending what
    /// has already ended is not an error.
    ///
    /// Ending one session accepts whatever still names it. Ending every session of the user
    /// (`all`) takes a credential that still works: a refresh token that would refresh (or a
    /// retry of one within the grace window), or an access token of a session that is still
    /// live, expired or not; a leaked old credential must not sign its owner out everywhere.
    pub async fn sign_out(&self, by: SignOutBy<'_>, all: bool) -> Result<(), Error> {
        let (user, sid) = match by {
            SignOutBy::RefreshToken(token) if all => {
                let grace = self.sessions.refresh_grace.as_secs() as i64;
                match self
                    .store
                    .find_live_session_by_token(&token.hash(), unix_now(), grace)
                    .await?
                {
                    Some((sid, user)) => (user, Some(sid)),
                    None => return Err(Error::RefreshRefused),
                }
            }
            SignOutBy::RefreshToken(token) => {
                match self.store.find_session_by_token(&token.hash()).await? {
                    Some((sid, user)) => (user, Some(sid)),
                    // Already ended, expired or never issued: nothing is left to end.
                    None => return Ok(()),
                }
            }
            SignOutBy::AccessToken(token) => {
                let claims = self
                    .keys
                    .current()
                    .verifier
                    .verify_ignoring_expiry(token)
                    .map_err(|_| Error::InvalidAccessToken)?;
                if claims.is_service_account() {
                    return Err(Error::NotForServiceAccounts(
                        "sign out: service accounts have no sessions",
                    ));
                }
                let user = claims.sub.parse().map_err(|_| Error::InvalidAccessToken)?;
                if all {
                    let live = match &claims.sid {
                        Some(sid) => self
                            .store
                            .list_sessions(user, unix_now())
                            .await?
                            .iter()
                            .any(|s| &s.id == sid),
                        None => false,
                    };
                    let revoked = self
                        .store
                        .is_revoked(claims.sid.as_deref(), &claims.sub, claims.iat, unix_now())
                        .await?;
                    if !live || revoked {
                        return Err(Error::InvalidAccessToken);
                    }
                }
                (user, claims.sid)
            }
        };
        if all {
            self.end_every_session(user).await?;
            tracing::info!(user_id = %user, "signed out everywhere");
        } else if let Some(sid) = sid {
            self.end_sessions(std::slice::from_ref(&sid)).await?;
            tracing::info!(user_id = %user, %sid, "signed out");
        }
        Ok(())
    }

    /// Changes the caller's password after checking the current one, and ends every other
    /// session of the caller.
    ///
    /// The check of the current password is a sign-in as far as guessing goes: it passes the
    /// same throttle, under the same account and client, so a stolen access token cannot be
    /// used to try passwords faster than the sign-in page allows.
    pub async fn change_password(
        &self,
        caller: &Claims,
        current: SecretString,
        new: Password,
        origin: &Origin,
    ) -> Result<(), Error> {
        let id: UserId = caller.sub.parse().map_err(|_| Error::AccountGone)?;
        let client = origin.client();
        let hash = self
            .store
            .password_hash(id)
            .await?
            .ok_or(Error::AccountGone)?;
        let attempt = match self
            .throttle
            .begin_sign_in(
                Subject::account(id),
                origin,
                self.attempt(origin, &[current.expose_secret().as_bytes()]),
            )
            .await
        {
            Ok(attempt) => attempt,
            Err(ThrottleError::Refused { limit, retry_after }) => {
                tracing::warn!(
                    user_id = %id,
                    client = %origin.client_key(),
                    limit,
                    retry_after_secs = retry_after.as_secs(),
                    "password change throttled"
                );
                return Err(Error::SignInThrottled(retry_after));
            }
            Err(ThrottleError::Store(e)) => return Err(e.into()),
        };
        let matches = match self.hasher.verify(current, Some(hash), client).await {
            Ok(matches) => matches,
            Err(e) => {
                // Not a password check, so not a failure to count.
                if let Err(error) = self.throttle.sign_in_abandoned(&attempt).await {
                    tracing::warn!(error.cause_chain = ?error, "failed to take back a password check");
                }
                return Err(e.into());
            }
        };
        if !matches {
            tracing::info!(user_id = %id, "password change refused: wrong current password");
            return Err(Error::WrongCurrentPassword);
        }
        if let Err(error) = self.throttle.sign_in_succeeded(&attempt).await {
            tracing::warn!(error.cause_chain = ?error, "failed to clear failed sign-ins");
        }
        let hash = self.hasher.hash(new.secret().clone(), client).await?;
        if !self.store.set_password_hash(id, &hash).await? {
            return Err(Error::AccountGone);
        }
        let others: Vec<String> = self
            .store
            .user_sessions_oldest_first(id)
            .await?
            .into_iter()
            .map(|s| s.id)
            .filter(|s| Some(s) != caller.sid.as_ref())
            .collect();
        self.end_sessions(&others).await?;
        tracing::info!(user_id = %id, ended = others.len(), "password changed; other sessions ended");
        Ok(())
    }

    /// Whose sessions `target` names: the caller's own (empty) or, for an admin, anyone's.
    async fn session_owner(
        &self,
        caller: &Claims,
        target: Option<UserId>,
    ) -> Result<UserId, Error> {
        let own: UserId = caller.sub.parse().map_err(|_| Error::AccountGone)?;
        match target {
            Some(other) if other != own => {
                self.require_admin(caller).await?;
                Ok(other)
            }
            _ => Ok(own),
        }
    }

    pub async fn list_sessions(
        &self,
        caller: &Claims,
        target: Option<UserId>,
    ) -> Result<Vec<Session>, Error> {
        let user = self.session_owner(caller, target).await?;
        Ok(self.store.list_sessions(user, unix_now()).await?)
    }

    pub async fn end_session(
        &self,
        caller: &Claims,
        target: Option<UserId>,
        session_id: &str,
    ) -> Result<(), Error> {
        let user = self.session_owner(caller, target).await?;
        let found = self
            .store
            .user_sessions_oldest_first(user)
            .await?
            .into_iter()
            .any(|s| s.id == session_id);
        if !found {
            return Err(Error::SessionNotFound);
        }
        self.end_sessions(&[session_id.to_owned()]).await?;
        tracing::info!(user_id = %user, sid = %session_id, by = %caller.sub, "session ended");
        Ok(())
    }

    /// Disables (no sign-in, no refresh, every session ended) or enables the user. Decided
    /// like a role change (`Accounts::change_as_admin`): the caller must still be an enabled
    /// admin when it is written, and the last enabled admin cannot be disabled.
    pub async fn set_disabled(
        &self,
        caller: &Claims,
        id: UserId,
        disabled: bool,
    ) -> Result<User, Error> {
        let admin = self.require_admin(caller).await?;
        if disabled && admin.id == id {
            return Err(Error::CannotDisableSelf);
        }
        let (_, user) = self
            .change_as_admin(&admin, id, AdminChange::Disabled(disabled.then(unix_now)))
            .await?;
        if disabled {
            self.end_every_session(id).await?;
        }
        tracing::info!(user_id = %id, by = %caller.sub, disabled, "account disabled flag changed");
        Ok(user)
    }

    /// Whether `token` is active: signature, lifetime and revocations, checked here. The
    /// claims when it is.
    pub async fn validate(&self, token: &str) -> Result<Option<Claims>, Error> {
        let Ok(claims) = self.keys.current().verifier.verify(token) else {
            return Ok(None);
        };
        let revoked = self
            .store
            .is_revoked(claims.sid.as_deref(), &claims.sub, claims.iat, unix_now())
            .await?;
        Ok((!revoked).then_some(claims))
    }

    /// Deletes expired sessions; returns how many. (Revocations are pruned by the feed.)
    pub async fn prune(&self) -> Result<u64, Error> {
        Ok(self.store.prune_sessions(unix_now()).await?)
    }

    /// Revokes these sessions, then deletes them.
    pub(crate) async fn end_sessions(&self, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        let revocations: Vec<NewRevocation> = ids
            .iter()
            .map(|id| NewRevocation {
                kind: RevocationKind::Session,
                subject: id.clone(),
                not_before: now,
                expires_at: Self::revocation_expiry(now),
            })
            .collect();
        self.store.insert_revocations(&revocations).await?;
        self.feed.revoked(&revocations);
        self.store.delete_sessions(ids).await?;
        Ok(())
    }

    /// Revokes every token of the user issued up to now, then deletes every session.
    pub(crate) async fn end_every_session(&self, user: UserId) -> Result<(), Error> {
        let now = unix_now();
        let revocation = [NewRevocation {
            kind: RevocationKind::User,
            subject: user.to_string(),
            not_before: now,
            expires_at: Self::revocation_expiry(now),
        }];
        self.store.insert_revocations(&revocation).await?;
        self.feed.revoked(&revocation);
        self.store.delete_user_sessions(user).await?;
        Ok(())
    }
}
