//! Service accounts as an admin creates them over gRPC (`CreateServiceAccount` with an admin's
//! token), and the client-credentials grant as a service uses it.

use proto::auth::v1::{
    CreateServiceAccountRequest, IssueClientTokenRequest, SignInRequest,
    auth_service_client::AuthServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::{Credentials, authorized};

/// A service account's client id and its secret, as `CreateServiceAccount` answered them.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The access token of `who` (a user), signed in over gRPC.
pub async fn sign_in(auth: &mut AuthServiceClient<Channel>, who: &Credentials) -> String {
    auth.sign_in(SignInRequest {
        login: who.username.clone(),
        password: who.password.clone(),
    })
    .await
    .unwrap_or_else(|s| panic!("sign-in of {} failed: {s}", who.username))
    .into_inner()
    .access_token
}

impl ServiceAccount {
    /// A new account named `prefix` plus a unique suffix, with `roles`, created by the admin
    /// whose token is `admin`.
    pub async fn create(
        auth: &mut AuthServiceClient<Channel>,
        admin: &str,
        prefix: &str,
        roles: &[&str],
    ) -> Self {
        let name = crate::unique(prefix);
        let response = auth
            .create_service_account(authorized(
                CreateServiceAccountRequest {
                    name: name.clone(),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                },
                admin,
            ))
            .await
            .unwrap_or_else(|s| panic!("CreateServiceAccount {name} failed: {s}"))
            .into_inner();
        let account = response
            .service_account
            .expect("CreateServiceAccount answers the account");
        assert_eq!(account.name, name);
        assert!(
            !response.client_secret.is_empty(),
            "CreateServiceAccount answers the secret"
        );
        Self {
            client_id: account.client_id,
            client_secret: response.client_secret,
            name,
        }
    }

    /// An access token from the client-credentials grant with `secret`, or the refusal's code
    /// and message.
    pub async fn token_with(
        &self,
        auth: &mut AuthServiceClient<Channel>,
        secret: &str,
    ) -> Result<String, (Code, String)> {
        auth.issue_client_token(IssueClientTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: secret.to_owned(),
            scope: String::new(),
        })
        .await
        .map(|r| r.into_inner().access_token)
        .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// An access token with the account's current secret; fails the test if refused.
    pub async fn token(&self, auth: &mut AuthServiceClient<Channel>) -> String {
        self.token_with(auth, &self.client_secret.clone())
            .await
            .unwrap_or_else(|e| panic!("IssueClientToken for {} was refused: {e:?}", self.name))
    }
}
