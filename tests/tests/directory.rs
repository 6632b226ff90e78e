//! The example internal service over the real binaries, two replicas of each service: the
//! directory verifies its callers' tokens with `authn`'s interceptor (keys from auth-service's
//! JWKS, revocations from its feed) and calls resource-service as itself, with its service
//! account's token from the client-credentials grant, renewed before it expires.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use directory::pb::{ListNamesRequest, directory_client::DirectoryClient};
use e2e::{Credentials, DirectoryReplica, ServiceAccount, Stack, authorized, sign_in};
use proto::{
    auth::v1::{SetServiceAccountDisabledRequest, SignOutRequest, SignUpRequest},
    person::v1::CreatePersonRequest,
};
use tonic::{Code, transport::Channel};

/// The shortest lifetime auth-service allows for a service account's token, so the directory's
/// own token must be renewed while the test runs.
const TOKEN_TTL: Duration = Duration::from_secs(10);

/// How long past its `exp` a verifier still accepts a token (clock leeway).
const LEEWAY: Duration = Duration::from_secs(5);

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

/// Calls every directory replica until each answers as `expected` says, failing the test after
/// `within`.
async fn until_every_directory(
    directories: &mut [DirectoryClient<Channel>],
    filter: &str,
    token: &str,
    within: Duration,
    what: &str,
    expected: impl Fn(&Result<Vec<String>, (Code, String)>) -> bool,
) {
    let since = Instant::now();
    for (i, directory) in directories.iter_mut().enumerate() {
        loop {
            let answer = list(directory, filter, Some(token)).await;
            if expected(&answer) {
                break;
            }
            assert!(
                since.elapsed() < within,
                "directory-{i}: {what}: still {answer:?} after {:?}",
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_directory_verifies_its_callers_and_calls_resource_service_as_itself() {
    let stack = Stack::start_with(
        "directory",
        [2, 2, 0],
        &[(
            "AUTH_SERVICE_TOKEN_TTL",
            format!("{}s", TOKEN_TTL.as_secs()),
        )],
        &[],
    )
    .await;
    let auth_urls: Vec<String> = stack.auth.iter().map(|r| r.url.clone()).collect();
    let resource_urls: Vec<String> = stack.resource.iter().map(|r| r.url.clone()).collect();
    let mut auth = stack.auth[0].client().await;

    // The directory's identity: a plain (user) service account, created by the admin over gRPC.
    let admin = sign_in(&mut auth, &stack.deployment.admin).await;
    let account = ServiceAccount::create(&mut auth, &admin, "directory", &[]).await;

    // Two persons, created by the admin, under a name no other test uses.
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

    // Two directory replicas: one reads its secret from a mounted file (with the newline a
    // file has), the other from its environment.
    let secret_file = std::env::temp_dir().join(e2e::unique("directory-client-secret-"));
    std::fs::write(&secret_file, format!("{}\n", account.client_secret)).unwrap();
    let from_file = [
        ("DIRECTORY_CLIENT_ID", account.client_id.clone()),
        (
            "DIRECTORY_CLIENT_SECRET_FILE",
            secret_file.display().to_string(),
        ),
    ];
    let from_env = [
        ("DIRECTORY_CLIENT_ID", account.client_id.clone()),
        ("DIRECTORY_CLIENT_SECRET", account.client_secret.clone()),
    ];
    let (dir_a, dir_b) = tokio::join!(
        DirectoryReplica::start_with(&auth_urls, &resource_urls, "directory-0", &from_file),
        DirectoryReplica::start_with(&auth_urls, &resource_urls, "directory-1", &from_env),
    );
    std::fs::remove_file(&secret_file).unwrap();
    let mut directories = vec![dir_a.client().await, dir_b.client().await];

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
    let names = Ok(vec![format!("Ada {family}"), format!("Grace {family}")]);

    // No token, or a forged one: refused by the directory itself.
    for directory in &mut directories {
        assert_eq!(
            list(directory, &family, None).await,
            Err((Code::Unauthenticated, "missing access token".into()))
        );
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", "A".repeat(86));
        let (code, message) = list(directory, &family, Some(&forged)).await.unwrap_err();
        assert_eq!(code, Code::Unauthenticated);
        assert!(message.starts_with("invalid access token"), "{message}");
        // A signed-in user: the directory answers, from resource-service called as itself.
        assert_eq!(list(directory, &family, Some(&token)).await, names);
    }

    // The directory's own token is what resource-service sees: with its account disabled,
    // the directory answers UNAVAILABLE for a caller whose token is fine; enabled again, it
    // fetches a new token and answers (well before its old token would have been renewed).
    auth.set_service_account_disabled(authorized(
        SetServiceAccountDisabledRequest {
            client_id: account.client_id.clone(),
            disabled: true,
        },
        &admin,
    ))
    .await
    .unwrap();
    let disabled = Instant::now();
    let token = sign_in(&mut auth, &reader).await;
    until_every_directory(
        &mut directories,
        &family,
        &token,
        Duration::from_secs(5),
        "with its account disabled",
        |answer| matches!(answer, Err((Code::Unavailable, m)) if m.contains("own credentials were refused")),
    )
    .await;
    // Revocations count in whole seconds: the account's next token must come from a later one.
    tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(disabled.elapsed())).await;
    auth.set_service_account_disabled(authorized(
        SetServiceAccountDisabledRequest {
            client_id: account.client_id.clone(),
            disabled: false,
        },
        &admin,
    ))
    .await
    .unwrap();
    until_every_directory(
        &mut directories,
        &family,
        &token,
        Duration::from_secs(5),
        "with its account enabled again",
        |answer| *answer == names,
    )
    .await;

    // For longer than its token lives (and the verifiers' leeway after), every call succeeds:
    // the directory renews its own token before it expires.
    let started = Instant::now();
    while started.elapsed() < TOKEN_TTL + LEEWAY + Duration::from_secs(3) {
        for (i, directory) in directories.iter_mut().enumerate() {
            assert_eq!(
                list(directory, &family, Some(&token)).await,
                names,
                "directory-{i} {:?} into the run",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Once the caller's session ends, each directory's own revocation view refuses the token
    // (not resource-service's, whose refusal would carry its name). A generous bound.
    auth.sign_out(authorized(SignOutRequest::default(), &token))
        .await
        .unwrap();
    until_every_directory(
        &mut directories,
        &family,
        &token,
        Duration::from_secs(10),
        "for a signed-out caller",
        |answer| matches!(answer, Err((Code::Unauthenticated, m)) if m == "token revoked"),
    )
    .await;

    // The secret never reaches a log.
    for process in [&dir_a.process, &dir_b.process]
        .into_iter()
        .chain(stack.auth.iter().map(|r| &r.process))
        .chain(stack.resource.iter().map(|r| &r.process))
    {
        assert!(
            !process.logs().contains(&account.client_secret),
            "{} logged the directory's client secret",
            process.label()
        );
    }
}
