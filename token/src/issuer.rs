//! Minting access tokens.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};

use crate::{Audience, Claims, KeyError, Role, SERVICE_ACCOUNT_PREFIX, SigningKey, unix_now};

/// A freshly signed token and the claims inside it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("failed to sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Signs access tokens with one key. Cheap to share behind an `Arc`.
pub struct Issuer {
    encoding: EncodingKey,
    header: Header,
    audience: Audience,
    ttl: Duration,
}

impl Issuer {
    pub fn new(key: SigningKey, audience: Audience, ttl: Duration) -> Result<Self, IssueError> {
        let encoding = key.encoding_key()?;
        let mut header = Header::new(key.algorithm().jwt());
        header.kid = Some(key.kid().to_owned());
        Ok(Self {
            encoding,
            header,
            audience,
            ttl,
        })
    }

    /// The key id in every header this issuer writes.
    pub fn kid(&self) -> &str {
        self.header.kid.as_deref().unwrap_or_default()
    }

    /// Issues a token for `subject` valid from now for the configured lifetime.
    pub fn issue(
        &self,
        subject: &str,
        username: &str,
        roles: &[Role],
    ) -> Result<Issued, IssueError> {
        self.issue_in_session(subject, username, roles, None)
    }

    /// Like [`Issuer::issue`], for a token of session `sid` (the `sid` claim), so that ending
    /// the session revokes the token.
    pub fn issue_in_session(
        &self,
        subject: &str,
        username: &str,
        roles: &[Role],
        sid: Option<&str>,
    ) -> Result<Issued, IssueError> {
        let mut claims = self.claims(subject.to_owned(), username, roles, self.ttl);
        claims.sid = sid.map(str::to_owned);
        let token = self.sign(&claims)?;
        Ok(Issued { token, claims })
    }

    /// A token of the client-credentials grant for service account `client_id`: `sub` is
    /// `sa:<client_id>`, the `client_id` claim names it, no session; valid for `ttl` (service
    /// tokens have a lifetime setting of their own).
    pub fn issue_for_client(
        &self,
        client_id: &str,
        name: &str,
        roles: &[Role],
        ttl: Duration,
    ) -> Result<Issued, IssueError> {
        let subject = format!("{SERVICE_ACCOUNT_PREFIX}{client_id}");
        let mut claims = self.claims(subject, name, roles, ttl);
        claims.client_id = Some(client_id.to_owned());
        let token = self.sign(&claims)?;
        Ok(Issued { token, claims })
    }

    fn claims(&self, sub: String, username: &str, roles: &[Role], ttl: Duration) -> Claims {
        let now = unix_now();
        Claims {
            iss: self.audience.issuer.clone(),
            aud: self.audience.audience.clone(),
            sub,
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: roles.to_vec(),
            username: username.to_owned(),
            sid: None,
            client_id: None,
        }
    }

    /// The configured access-token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs exactly these claims. Tests use it to build expired or foreign tokens.
    pub fn sign(&self, claims: &Claims) -> Result<String, IssueError> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding).map_err(IssueError::Sign)
    }
}
