//! Service accounts over the real binaries on PostgreSQL: an admin creates them over gRPC, a
//! service gets its own tokens with the client-credentials grant through `authn`'s
//! `ClientCredentials` source, resource-service applies the account's roles, and disabling,
//! deleting or rotating the account takes effect on every replica.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use authn::client::{Bearer, BearerLayer, ClientCredentials};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use e2e::{ResourceReplica, ServiceAccount, Stack, authorized, sign_in};
use proto::{
    auth::v1::{
        DeleteServiceAccountRequest, RotateServiceAccountSecretRequest,
        SetServiceAccountDisabledRequest, auth_service_client::AuthServiceClient,
    },
    person::v1::{
        CreatePersonRequest, ListPersonsRequest, person_service_client::PersonServiceClient,
    },
};
use secrecy::SecretString;
use tonic::{Code, transport::Channel};
use tower::ServiceBuilder;

/// The bound the issue sets for a revocation to reach every verifier.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

/// A resource-service client whose calls carry the account's own tokens, fetched from
/// auth-service at `auth_urls` by the client-credentials source.
async fn client_as(
    replica: &ResourceReplica,
    auth_urls: &[String],
    client_id: &str,
    secret: &str,
) -> PersonServiceClient<Bearer<Channel>> {
    let source =
        ClientCredentials::new(auth_urls, client_id, SecretString::from(secret.to_owned()))
            .unwrap();
    let channel = e2e::connect(&replica.url).await;
    PersonServiceClient::new(
        ServiceBuilder::new()
            .layer(BearerLayer::new(source))
            .service(channel),
    )
}

fn new_person(name: &str) -> CreatePersonRequest {
    CreatePersonRequest {
        name: format!("{name} {}", e2e::unique("Sa")),
        email: format!("{}@example.com", e2e::unique("sa")),
        age: 40,
    }
}

/// The JSON payload of a JWT, unverified (the services verify it).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// How a replica answers a list call with `token`: `Ok` or the refusal's code.
async fn answer(replica: &ResourceReplica, token: &str) -> Result<(), Code> {
    replica
        .client()
        .await
        .list_persons(authorized(
            ListPersonsRequest {
                page_size: 1,
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop)
        .map_err(|s| s.code())
}

/// Polls every replica until each refuses `token` as UNAUTHENTICATED, failing the test if that
/// takes longer than the bound from `since`.
async fn refused_everywhere_within_bound(
    replicas: &[ResourceReplica],
    token: &str,
    since: Instant,
    what: &str,
) {
    for (i, replica) in replicas.iter().enumerate() {
        loop {
            match answer(replica, token).await {
                Err(Code::Unauthenticated) => break,
                other => assert!(
                    since.elapsed() < REVOCATION_BOUND,
                    "resource-{i} still answers {other:?} for the token of a {what} account \
                     {:?} after",
                    since.elapsed()
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!(
        "every replica refused the {what} account's token {:?} after",
        since.elapsed()
    );
}

async fn set_disabled(
    auth: &mut AuthServiceClient<Channel>,
    admin: &str,
    account: &ServiceAccount,
    disabled: bool,
) {
    let answer = auth
        .set_service_account_disabled(authorized(
            SetServiceAccountDisabledRequest {
                client_id: account.client_id.clone(),
                disabled,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.service_account.unwrap().disabled, disabled);
}

async fn rotate(
    auth: &mut AuthServiceClient<Channel>,
    admin: &str,
    account: &ServiceAccount,
    overlap_seconds: Option<i64>,
) -> String {
    auth.rotate_service_account_secret(authorized(
        RotateServiceAccountSecretRequest {
            client_id: account.client_id.clone(),
            overlap_seconds,
        },
        admin,
    ))
    .await
    .unwrap()
    .into_inner()
    .client_secret
}

fn is_invalid_client(answer: &Result<String, (Code, String)>) -> bool {
    matches!(answer, Err((Code::Unauthenticated, message)) if message.contains("invalid_client"))
}

#[tokio::test]
async fn an_account_acts_with_its_roles_and_its_secret_rotates_with_an_overlap() {
    let stack = Stack::start("sa-roles", 1, 1, 0).await;
    let auth_urls = vec![stack.auth[0].url.clone()];
    let resource = &stack.resource[0];
    let mut auth = stack.auth[0].client().await;
    let admin = sign_in(&mut auth, &stack.deployment.admin).await;
    let moderator = ServiceAccount::create(&mut auth, &admin, "importer", &["moderator"]).await;
    let reader = ServiceAccount::create(&mut auth, &admin, "reader", &[]).await;

    // The token names the account: sub "sa:<client id>", client_id, username, roles.
    let token = moderator.token(&mut auth).await;
    let claims = claims(&token);
    assert_eq!(claims["sub"], format!("sa:{}", moderator.client_id));
    assert_eq!(claims["client_id"], moderator.client_id.as_str());
    assert_eq!(claims["username"], moderator.name.as_str());
    let roles = claims["roles"].as_array().unwrap();
    assert!(
        roles.contains(&"moderator".into()) && !roles.contains(&"admin".into()),
        "{claims}"
    );

    // A moderator account creates persons; the client-credentials source fails over from a
    // replica that is down (nothing listens on the first URL) to the one that answers.
    let down = format!("http://127.0.0.1:{}", e2e::free_port());
    let mut as_moderator = client_as(
        resource,
        &[down, auth_urls[0].clone()],
        &moderator.client_id,
        &moderator.client_secret,
    )
    .await;
    let created = as_moderator
        .create_person(new_person("Importer"))
        .await
        .unwrap_or_else(|s| panic!("a moderator account may create persons: {s}"))
        .into_inner();
    assert!(created.person_id > 0);

    // A plain (user) account may read but not create.
    let mut as_reader = client_as(
        resource,
        &auth_urls,
        &reader.client_id,
        &reader.client_secret,
    )
    .await;
    as_reader
        .list_persons(ListPersonsRequest::default())
        .await
        .unwrap();
    let refused = as_reader
        .create_person(new_person("Reader"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A wrong secret: the call never leaves the process, and says invalid_client, never the
    // secret it was given.
    let wrong = "wrong-secret-9f3c1a";
    let mut as_nobody = client_as(resource, &auth_urls, &reader.client_id, wrong).await;
    let refused = as_nobody
        .list_persons(ListPersonsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("invalid_client")
            && refused.message().contains(&reader.client_id),
        "{refused:?}"
    );
    assert!(!refused.message().contains(wrong), "{refused:?}");

    // Rotation with the default overlap: both secrets get tokens, and both tokens work.
    let first = moderator.client_secret.clone();
    let second = rotate(&mut auth, &admin, &moderator, None).await;
    assert_ne!(first, second);
    for secret in [&first, &second] {
        let token = moderator.token_with(&mut auth, secret).await.unwrap();
        assert_eq!(answer(resource, &token).await, Ok(()));
    }
    // Rotation with no overlap: the secret it replaces stops at once, the older one too.
    let third = rotate(&mut auth, &admin, &moderator, Some(0)).await;
    for (which, secret) in [("replaced", &second), ("first", &first)] {
        let answer = moderator.token_with(&mut auth, secret).await;
        assert!(
            is_invalid_client(&answer),
            "the {which} secret after a rotation without overlap: {answer:?}"
        );
    }
    moderator.token_with(&mut auth, &third).await.unwrap();

    // No secret ever reaches a log.
    for secret in [&first, &second, &third, &reader.client_secret] {
        for process in [&stack.auth[0].process, &resource.process] {
            assert!(
                !process.logs().contains(secret.as_str()),
                "{} logged a client secret",
                process.label()
            );
        }
    }
}

#[tokio::test]
async fn a_deleted_or_disabled_account_is_refused_by_every_replica_within_a_second() {
    let stack = Stack::start("sa-revoke", 2, 2, 0).await;
    let mut auth = stack.auth[0].client().await;
    let mut other_auth = stack.auth[1].client().await;
    let admin = sign_in(&mut auth, &stack.deployment.admin).await;
    let doomed = ServiceAccount::create(&mut auth, &admin, "doomed", &[]).await;
    let paused = ServiceAccount::create(&mut auth, &admin, "paused", &[]).await;
    let bystander = ServiceAccount::create(&mut auth, &admin, "bystander", &[]).await;

    // Tokens from the other auth replica; every resource replica has verified (and cached)
    // each before the account changes.
    let doomed_token = doomed.token(&mut other_auth).await;
    let paused_token = paused.token(&mut other_auth).await;
    let bystander_token = bystander.token(&mut other_auth).await;
    for replica in &stack.resource {
        for token in [&doomed_token, &paused_token, &bystander_token] {
            assert_eq!(answer(replica, token).await, Ok(()));
        }
    }

    // Deleted: refused everywhere within a second, and no new token.
    auth.delete_service_account(authorized(
        DeleteServiceAccountRequest {
            client_id: doomed.client_id.clone(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let deleted = Instant::now();
    refused_everywhere_within_bound(&stack.resource, &doomed_token, deleted, "deleted").await;
    let after = doomed
        .token_with(&mut other_auth, &doomed.client_secret)
        .await;
    assert!(is_invalid_client(&after), "a deleted account: {after:?}");

    // Disabled: the same, and no new token while disabled.
    set_disabled(&mut auth, &admin, &paused, true).await;
    let disabled = Instant::now();
    refused_everywhere_within_bound(&stack.resource, &paused_token, disabled, "disabled").await;
    let after = paused
        .token_with(&mut other_auth, &paused.client_secret)
        .await;
    assert!(is_invalid_client(&after), "a disabled account: {after:?}");

    // Enabled again: a new token works on every replica; the one it held before stays
    // refused. Revocations count in whole seconds (a token issued in the second of the
    // disabling is refused with it), so the new token comes from a later second.
    tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(disabled.elapsed())).await;
    set_disabled(&mut auth, &admin, &paused, false).await;
    let fresh = paused.token(&mut other_auth).await;
    for replica in &stack.resource {
        assert_eq!(answer(replica, &fresh).await, Ok(()));
        assert_eq!(
            answer(replica, &paused_token).await,
            Err(Code::Unauthenticated)
        );
    }

    // Another account is untouched throughout.
    for replica in &stack.resource {
        assert_eq!(answer(replica, &bystander_token).await, Ok(()));
    }
}
