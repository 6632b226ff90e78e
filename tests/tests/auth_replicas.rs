//! Two auth-service replicas on one PostgreSQL database act as one service: one signing key,
//! one published key set, one first admin, one rotation of a refresh token however they race,
//! one count of failed sign-ins.

#![allow(clippy::unwrap_used)]

use e2e::{AuthDeployment, AuthReplica, Credentials, authorized};
use proto::auth::v1::{
    ClearSignInThrottleRequest, GetJwksRequest, GetMeRequest, ListUsersRequest, RefreshRequest,
    SignInRequest, SignUpRequest, User,
};
use tonic_types::StatusExt;

/// Two replicas started at the same moment on a fresh database, so both race to create the
/// signing key and the bootstrap admin.
async fn two_replicas(name: &str) -> (AuthDeployment, AuthReplica, AuthReplica) {
    let deployment = AuthDeployment::create().await;
    let mut a = AuthReplica::spawn(&deployment, &format!("{name}-a"));
    let mut b = AuthReplica::spawn(&deployment, &format!("{name}-b"));
    tokio::join!(a.wait_until_serving(), b.wait_until_serving());
    (deployment, a, b)
}

async fn sign_in(replica: &AuthReplica, credentials: &Credentials) -> (String, User) {
    let response = replica
        .client()
        .await
        .sign_in(SignInRequest {
            login: credentials.username.clone(),
            password: credentials.password.clone(),
        })
        .await
        .unwrap_or_else(|s| panic!("sign-in on {} failed: {s}", replica.url))
        .into_inner();
    (response.access_token, response.user.unwrap())
}

async fn get_me(replica: &AuthReplica, token: &str) -> Result<User, tonic::Status> {
    let response = replica
        .client()
        .await
        .get_me(authorized(GetMeRequest {}, token))
        .await?;
    Ok(response.into_inner().user.unwrap())
}

#[tokio::test]
async fn a_token_signed_in_on_one_replica_is_accepted_by_the_other() {
    let (_deployment, a, b) = two_replicas("shared-key").await;
    let user = Credentials::random("alice");
    a.client()
        .await
        .sign_up(SignUpRequest {
            username: user.username.clone(),
            email: format!("{}@example.com", user.username),
            password: user.password.clone(),
            roles: Vec::new(),
        })
        .await
        .unwrap();

    for (issuer, verifier) in [(&a, &b), (&b, &a)] {
        let (token, signed_in) = sign_in(issuer, &user).await;
        let me = get_me(verifier, &token).await.unwrap_or_else(|s| {
            panic!(
                "a token from {} was refused by {}: {s}",
                issuer.url, verifier.url
            )
        });
        assert_eq!(me.id, signed_in.id);
        assert_eq!(me.username, user.username);
    }
}

#[tokio::test]
async fn both_replicas_publish_the_same_key_set() {
    let (_deployment, a, b) = two_replicas("shared-jwks").await;
    let jwks_a = a
        .client()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let jwks_b = b
        .client()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!jwks_a.keys.is_empty(), "replica a publishes no key");
    assert!(
        jwks_a
            .keys
            .iter()
            .all(|k| k.kty == "OKP" && k.crv == "Ed25519" && !k.kid.is_empty()),
        "{:?}",
        jwks_a.keys
    );
    assert_eq!(jwks_a.keys, jwks_b.keys);
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once() {
    let (deployment, a, b) = two_replicas("one-admin").await;
    let (token_a, admin_a) = sign_in(&a, &deployment.admin).await;
    let (_, admin_b) = sign_in(&b, &deployment.admin).await;
    assert_eq!(admin_a.id, admin_b.id, "each replica made its own admin");
    assert!(admin_a.roles.iter().any(|r| r == "admin"), "{admin_a:?}");

    let mut users = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100 {
        let page = a
            .client()
            .await
            .list_users(authorized(
                ListUsersRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                },
                &token_a,
            ))
            .await
            .unwrap()
            .into_inner();
        users.extend(page.users);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let admins: Vec<&User> = users
        .iter()
        .filter(|u| u.username == deployment.admin.username)
        .collect();
    assert_eq!(admins.len(), 1, "{users:?}");
    assert_eq!(
        users.len(),
        1,
        "a fresh database holds only the admin: {users:?}"
    );
}

#[tokio::test]
async fn racing_refreshes_through_both_replicas_rotate_once_and_agree() {
    let (deployment, a, b) = two_replicas("refresh-race").await;
    let response = a
        .client()
        .await
        .sign_in(SignInRequest {
            login: deployment.admin.username.clone(),
            password: deployment.admin.password.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let parent = response.refresh_token;
    assert!(!parent.is_empty());

    let (ca, cb) = (a.client().await, b.client().await);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let mut client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
            let token = parent.clone();
            tokio::spawn(async move {
                client
                    .refresh(RefreshRequest {
                        refresh_token: token,
                    })
                    .await
                    .map(|r| r.into_inner().refresh_token)
            })
        })
        .collect();
    let mut children = Vec::new();
    for task in tasks {
        children.push(task.await.unwrap().unwrap());
    }
    children.dedup();
    assert_eq!(children.len(), 1, "replicas handed out different tokens");

    // The one child works on either replica; the parent, retried, still gets that child.
    let retried = cb
        .clone()
        .refresh(RefreshRequest {
            refresh_token: parent,
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_token;
    assert_eq!(retried, children[0]);
    let next = ca
        .clone()
        .refresh(RefreshRequest {
            refresh_token: children[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_token;
    assert_ne!(next, children[0]);
}

/// A sign-in as the gateway sends it for `client`.
fn sign_in_from(
    credentials: &Credentials,
    password: &str,
    client: &str,
) -> tonic::Request<SignInRequest> {
    let mut request = tonic::Request::new(SignInRequest {
        login: credentials.username.clone(),
        password: password.to_owned(),
    });
    e2e::as_the_gateway_for(&mut request, client);
    request
}

#[tokio::test]
async fn failed_sign_ins_are_counted_across_replicas_and_an_admin_clears_them() {
    let (deployment, a, b) = two_replicas("throttle").await;
    let user = Credentials::random("victim");
    let created = a
        .client()
        .await
        .sign_up(SignUpRequest {
            username: user.username.clone(),
            email: format!("{}@example.com", user.username),
            password: user.password.clone(),
            roles: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let attacker = "203.0.113.50";
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let status = replica
            .client()
            .await
            .sign_in(sign_in_from(&user, "wrong password", attacker))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "attempt {i}");
    }
    for replica in [&a, &b] {
        let status = replica
            .client()
            .await
            .sign_in(sign_in_from(&user, &user.password, attacker))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
        assert!(delay.is_some_and(|d| d.as_secs() >= 1), "{status:?}");
    }
    // The owner, elsewhere, signs in as usual.
    b.client()
        .await
        .sign_in(sign_in_from(&user, &user.password, "198.51.100.50"))
        .await
        .unwrap();

    let (admin_token, _) = sign_in(&a, &deployment.admin).await;
    b.client()
        .await
        .clear_sign_in_throttle(authorized(
            ClearSignInThrottleRequest {
                user_id: created.id,
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .unwrap();
    a.client()
        .await
        .sign_in(sign_in_from(&user, &user.password, attacker))
        .await
        .unwrap();
}
