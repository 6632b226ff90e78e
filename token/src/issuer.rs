//! Minting access tokens.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};

use crate::{Audience, Claims, KeyError, Role, SigningKey, unix_now};

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
        let now = unix_now();
        let claims = Claims {
            iss: self.audience.issuer.clone(),
            aud: self.audience.audience.clone(),
            sub: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: roles.to_vec(),
            username: username.to_owned(),
            sid: sid.map(str::to_owned),
        };
        let token = self.sign(&claims)?;
        Ok(Issued { token, claims })
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
