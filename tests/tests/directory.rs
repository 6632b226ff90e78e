//! The example internal service over the real binaries: it verifies its callers' tokens with
//! `authn`'s interceptor (keys from auth-service's JWKS, revocations from its feed) and calls
//! resource-service with the caller's own token, which resource-service verifies in turn.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use directory::pb::{ListNamesRequest, directory_client::DirectoryClient};
use e2e::{Credentials, DirectoryReplica, Stack, authorized};
use proto::{
    auth::v1::{
        SignInRequest, SignOutRequest, SignUpRequest, auth_service_client::AuthServiceClient,
    },
    person::v1::CreatePersonRequest,
};
use tonic::{Code, transport::Channel};

async fn sign_in(auth: &mut AuthServiceClient<Channel>, who: &Credentials) -> String {
    auth.sign_in(SignInRequest {
        login: who.username.clone(),
        password: who.password.clone(),
    })
    .await
    .unwrap()
    .into_inner()
    .access_token
}

/// The names the directory answers for `filter`, or the refusal's code and message.
async fn list(
    directory: &mut DirectoryClient<Channel>,
    filter: &str,
    token: Option<&str>,
) -> Result<Vec<String>, (Code, String)> {
    let message = ListNamesRequest {
        name_filter: filter.into(),
    };
    let request = match token {
        Some(token) => authorized(message, token),
        None => tonic::Request::new(message),
    };
    directory
        .list_names(request)
        .await
        .map(|r| r.into_inner().names)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

#[tokio::test]
async fn the_directory_verifies_its_callers_and_calls_resource_service_for_them() {
    let stack = Stack::start("directory", 1, 1, 0).await;
    let auth_urls = vec![stack.auth[0].url.clone()];
    let resource_urls = vec![stack.resource[0].url.clone()];
    let directory = DirectoryReplica::start(&auth_urls, &resource_urls, "directory").await;
    let mut dir = directory.client().await;
    let mut auth = stack.auth[0].client().await;

    // Two persons, created by the admin, under a name no other test uses.
    let admin = sign_in(&mut auth, &stack.deployment.admin).await;
    let family = e2e::unique("Dir");
    let mut persons = stack.resource[0].client().await;
    for given in ["Ada", "Grace"] {
        persons
            .create_person(authorized(
                CreatePersonRequest {
                    name: format!("{given} {family}"),
                    email: format!("{}@example.com", e2e::unique(given)),
                    age: 36,
                },
                &admin,
            ))
            .await
            .unwrap();
    }
    let reader = Credentials::random("reader");
    auth.sign_up(SignUpRequest {
        username: reader.username.clone(),
        email: format!("{}@example.com", reader.username),
        password: reader.password.clone(),
        roles: Vec::new(),
    })
    .await
    .unwrap();
    let token = sign_in(&mut auth, &reader).await;

    // No token, or a forged one: refused by the directory itself.
    assert_eq!(
        list(&mut dir, &family, None).await,
        Err((Code::Unauthenticated, "missing access token".into()))
    );
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    let (code, message) = list(&mut dir, &family, Some(&forged)).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.starts_with("invalid access token"), "{message}");

    // A plain user's token: the directory forwards it, and resource-service (which needs a
    // signed-in caller) answers.
    assert_eq!(
        list(&mut dir, &family, Some(&token)).await,
        Ok(vec![format!("Ada {family}"), format!("Grace {family}")])
    );

    // Once the session ends, the directory's own revocation view refuses the token (not
    // resource-service's, whose refusal would carry its name). A generous bound.
    auth.sign_out(authorized(SignOutRequest::default(), &token))
        .await
        .unwrap();
    let ended = Instant::now();
    loop {
        match list(&mut dir, &family, Some(&token)).await {
            Err((Code::Unauthenticated, message)) if message == "token revoked" => break,
            other => assert!(
                ended.elapsed() < Duration::from_secs(10),
                "the directory still answers {other:?} for a signed-out token"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
