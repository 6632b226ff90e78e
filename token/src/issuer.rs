//! Minting access tokens.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::Signer as _;

use crate::{
    Audience, Claims, KeyError, Role, SERVICE_ACCOUNT_PREFIX, SigningKey, keys::SignKey, unix_now,
};

/// Room for the claims JSON of a typical token, so serialising it rarely reallocates.
const CLAIMS_CAPACITY: usize = 512;
/// Length of the longest signature this issuer writes (Ed25519, 64 bytes) in base64url.
const SIGNATURE_B64_LEN: usize = 86;

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
    #[error("failed to encode the token")]
    Encode(#[source] serde_json::Error),
}

/// Signs access tokens with one key. Cheap to share behind an `Arc`.
///
/// Writes the JWS compact form (RFC 7515) itself: the key is parsed and the protected header
/// encoded once, when the issuer is built, so a token costs the claims JSON and one signature.
pub struct Issuer {
    key: SignKey,
    kid: String,
    /// The protected header in base64url, the same in every token.
    header: String,
    audience: Audience,
    ttl: Duration,
}

impl Issuer {
    pub fn new(key: SigningKey, audience: Audience, ttl: Duration) -> Result<Self, IssueError> {
        let mut header = jsonwebtoken::Header::new(key.algorithm().jwt());
        header.kid = Some(key.kid().to_owned());
        let header =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(IssueError::Encode)?);
        Ok(Self {
            key: key.sign_key(),
            kid: key.kid().to_owned(),
            header,
            audience,
            ttl,
        })
    }

    /// The key id in every header this issuer writes.
    pub fn kid(&self) -> &str {
        &self.kid
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
        let mut json = Vec::with_capacity(CLAIMS_CAPACITY);
        serde_json::to_writer(&mut json, claims).map_err(IssueError::Encode)?;
        let payload_len = base64::encoded_len(json.len(), false).unwrap_or_default();
        let mut token =
            String::with_capacity(self.header.len() + payload_len + SIGNATURE_B64_LEN + 2);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        // The signing input is everything so far: header.payload.
        match &self.key {
            SignKey::Ed25519(key) => {
                let signature = key.sign(token.as_bytes()).to_bytes();
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature, &mut token);
            }
            SignKey::Hs256(key) => {
                let signature = jsonwebtoken::crypto::sign(
                    token.as_bytes(),
                    key,
                    jsonwebtoken::Algorithm::HS256,
                )
                .map_err(IssueError::Sign)?;
                token.push('.');
                token.push_str(&signature);
            }
        }
        Ok(token)
    }
}
