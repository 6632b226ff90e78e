//! A service's own identity: a service account's client id and secret, traded for access tokens
//! with auth-service's client-credentials grant (`auth.v1.AuthService/IssueClientToken`).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures::future::BoxFuture;
use proto::auth::v1::{IssueClientTokenRequest, auth_service_client::AuthServiceClient};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Code, transport::Channel};

use super::{TokenError, TokenSource};
use crate::tls::{EndpointProblem, InvalidEndpoint};

/// How long one replica may take to connect and answer before the next is asked.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`TokenSource`] that gets the service's own tokens from auth-service with its service
/// account's client id and secret. Make one at start-up and share it (through
/// [`super::Tokens`] or one [`super::BearerLayer`]) with every client: [`super::Tokens`] renews
/// the token at 80 % of its lifetime, one request at a time.
///
/// Each fetch asks the replica that answered last, then the others in turn, so one replica
/// down costs nothing. A refusal of the credentials (UNAUTHENTICATED "invalid_client": a wrong
/// or unknown client id or secret, or a disabled account) is the same on every replica, so it
/// is not retried elsewhere: the fetch fails with UNAUTHENTICATED and a message naming the
/// client id and `invalid_client`, and is logged at ERROR. The secret is never logged, shown
/// by `Debug`, or put in an error.
pub struct ClientCredentials {
    client_id: String,
    client_secret: SecretString,
    scope: String,
    replicas: Vec<(String, Channel)>,
    /// The replica that answered last, asked first next time.
    first: AtomicUsize,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("scope", &self.scope)
            .field(
                "replicas",
                &self.replicas.iter().map(|(url, _)| url).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ClientCredentials {
    /// The account `client_id` with `client_secret`, at any of the auth-service replicas at
    /// `endpoints` (connected lazily, so the replicas need not be up yet).
    pub fn new(
        endpoints: &[String],
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Result<Self, InvalidEndpoint> {
        let replicas = endpoints
            .iter()
            .map(|url| {
                crate::tls::endpoint(url, None).map(|endpoint| {
                    let channel = endpoint
                        .connect_timeout(ATTEMPT_TIMEOUT)
                        .timeout(ATTEMPT_TIMEOUT)
                        .connect_lazy();
                    (url.clone(), channel)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if replicas.is_empty() {
            return Err(InvalidEndpoint {
                url: String::new(),
                problem: EndpointProblem::NotAUrl,
            });
        }
        Ok(Self {
            client_id: client_id.into(),
            client_secret,
            scope: String::new(),
            replicas,
            first: AtomicUsize::new(0),
        })
    }

    /// Asks for tokens with only these of the account's roles (space-separated role names, RFC
    /// 6749's `scope`). Empty (the default): every role the account has.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn issue(&self) -> Result<String, TokenError> {
        let client_id = self.client_id.as_str();
        let count = self.replicas.len();
        let first = self.first.load(Ordering::Relaxed);
        let mut last_failure = String::new();
        for index in (0..count).map(|i| (first + i) % count) {
            let (url, channel) = &self.replicas[index];
            let request = IssueClientTokenRequest {
                client_id: client_id.to_owned(),
                client_secret: self.client_secret.expose_secret().to_owned(),
                scope: self.scope.clone(),
            };
            let status = match AuthServiceClient::new(channel.clone())
                .issue_client_token(request)
                .await
            {
                Ok(response) => {
                    self.first.store(index, Ordering::Relaxed);
                    let response = response.into_inner();
                    tracing::debug!(
                        client_id,
                        expires_in = response.expires_in,
                        replica = url.as_str(),
                        "got the service account's access token"
                    );
                    return Ok(response.access_token);
                }
                Err(status) => status,
            };
            match status.code() {
                // The replicas share one database: another would refuse the same way.
                Code::Unauthenticated => {
                    tracing::error!(
                        client_id,
                        replica = url.as_str(),
                        "auth-service refused the service account's credentials (invalid_client): \
                         the client id or secret is wrong, or the account is disabled or deleted"
                    );
                    return Err(TokenError::unauthenticated(format!(
                        "auth-service refused the credentials of service account {client_id:?} \
                         (invalid_client): the client id or secret is wrong, or the account is \
                         disabled or deleted"
                    )));
                }
                Code::InvalidArgument => {
                    tracing::error!(
                        client_id,
                        scope = self.scope.as_str(),
                        message = status.message(),
                        "auth-service refused the scope asked for"
                    );
                    return Err(TokenError::unauthenticated(format!(
                        "auth-service refused the scope {:?} of service account {client_id:?}: {}",
                        self.scope,
                        status.message()
                    )));
                }
                Code::ResourceExhausted => {
                    tracing::warn!(
                        client_id,
                        "auth-service throttles this client's token requests"
                    );
                    return Err(TokenError::unavailable(format!(
                        "auth-service throttles token requests of service account {client_id:?}; retry later"
                    )));
                }
                code => {
                    tracing::warn!(
                        client_id,
                        replica = url.as_str(),
                        ?code,
                        message = status.message(),
                        "auth-service replica did not issue a token; asking the next"
                    );
                    last_failure = format!("{url}: {code:?}: {}", status.message());
                }
            }
        }
        Err(TokenError::unavailable(format!(
            "no auth-service replica issued a token for service account {client_id:?} (last: {last_failure})"
        )))
    }
}

impl TokenSource for ClientCredentials {
    fn fetch(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        Box::pin(self.issue())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_never_shows_the_secret() {
        let source = ClientCredentials::new(
            &["http://127.0.0.1:1".to_owned()],
            "client-1",
            SecretString::from("s3cret-value"),
        )
        .unwrap();
        let shown = format!("{source:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("client-1"), "{shown}");
    }

    #[tokio::test]
    async fn a_bad_or_missing_url_is_refused() {
        let secret = || SecretString::from("x");
        assert!(ClientCredentials::new(&["not a url".to_owned()], "c", secret()).is_err());
        assert!(ClientCredentials::new(&[], "c", secret()).is_err());
    }
}
