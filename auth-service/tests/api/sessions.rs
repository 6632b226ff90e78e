//! Sessions over the API: refresh rotation and its grace window, and every way access ends.

use std::time::Duration;

use auth_service::Config;
use proto::auth::v1 as pb;
use token::{Audience, Hs256Secret, Issuer, SigningKey, unix_now};
use tonic::{Code, Request, Status};

use crate::helpers::{
    KEK, PASSWORD, TestApp, authed, spawn_app_with_admin, spawn_with, with_admin,
};

pub async fn refresh(app: &TestApp, token: &str) -> Result<pb::RefreshResponse, Status> {
    app.client
        .clone()
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Whether auth-service says `token` is active, asked by a signed-in `caller`.
pub async fn active(app: &TestApp, caller: &str, token: &str) -> bool {
    app.client
        .clone()
        .validate_token(authed(
            pb::ValidateTokenRequest {
                token: token.into(),
            },
            caller,
        ))
        .await
        .unwrap()
        .into_inner()
        .active
}

async fn sign_out(app: &TestApp, request: Request<pb::SignOutRequest>) -> Result<(), Status> {
    app.client.clone().sign_out(request).await.map(drop)
}

async fn sessions(app: &TestApp, token: &str, user_id: &str) -> Result<Vec<pb::Session>, Status> {
    app.client
        .clone()
        .list_sessions(authed(
            pb::ListSessionsRequest {
                user_id: user_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().sessions)
}

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn with_grace(mut config: Config, grace: Duration) -> Config {
    config.refresh_grace = grace;
    config
}

/// A user of `app` signed in: (user id, sign-in answer).
async fn signed_in(app: &TestApp, username: &str) -> (String, pb::SignInResponse) {
    let user = app
        .sign_up(username, &format!("{username}@example.com"))
        .await
        .unwrap();
    (user.id, app.sign_in(username, PASSWORD).await.unwrap())
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_keeps_the_session() {
    let app = spawn_app_with_admin().await;
    let (_, first) = signed_in(&app, "alice").await;
    assert_eq!(first.refresh_token.len(), 43, "256 bits in base64url");
    assert!(first.refresh_expires_at.unwrap().seconds > unix_now() + 86_400);
    let sid = claims(&first.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    let second = refresh(&app, &first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.token_type, "Bearer");
    assert_eq!(claims(&second.access_token)["sid"], sid.as_str());
    assert!(active(&app, &first.access_token, &second.access_token).await);

    // The new one works in turn; nonsense is refused with the same message as a spent token.
    refresh(&app, &second.refresh_token).await.unwrap();
    let unknown = refresh(&app, "no-such-token").await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(unknown.message(), "refresh token is invalid or expired");
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_new_token() {
    let app = spawn_app_with_admin().await;
    let (_, first) = signed_in(&app, "alice").await;
    let a = refresh(&app, &first.refresh_token).await.unwrap();
    let b = refresh(&app, &first.refresh_token).await.unwrap();
    assert_eq!(a.refresh_token, b.refresh_token);
    assert_eq!(
        claims(&a.access_token)["sid"],
        claims(&b.access_token)["sid"]
    );
    assert!(active(&app, &first.access_token, &b.access_token).await);
    // The child is the one and only next token: spending it works once.
    refresh(&app, &b.refresh_token).await.unwrap();
}

// Several worker threads, so the calls really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_one_token_all_get_the_same_new_token() {
    let app = spawn_app_with_admin().await;
    let (_, first) = signed_in(&app, "alice").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, token) = (app.client.clone(), first.refresh_token.clone());
            tokio::spawn(async move {
                let mut client = client;
                client
                    .refresh(pb::RefreshRequest {
                        refresh_token: token,
                    })
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    let child = &answers[0].refresh_token;
    assert!(answers.iter().all(|a| &a.refresh_token == child));
    let next = refresh(&app, child).await.unwrap();
    assert_ne!(&next.refresh_token, child);
}

#[tokio::test]
async fn a_reuse_after_the_grace_window_ends_the_session() {
    let app = spawn_with(with_grace(
        with_admin(Config::for_tests()),
        Duration::from_secs(1),
    ))
    .await;
    let (_, first) = signed_in(&app, "alice").await;
    let admin = app.admin_token().await;
    let child = refresh(&app, &first.refresh_token).await.unwrap();
    // Whole seconds: more than one second after the rotation.
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let reuse = refresh(&app, &first.refresh_token).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert_eq!(reuse.message(), "refresh token is invalid or expired");
    // The session is revoked: its tokens are inactive and its current refresh token is dead.
    assert!(!active(&app, &admin, &child.access_token).await);
    assert!(!active(&app, &admin, &first.access_token).await);
    assert_eq!(
        refresh(&app, &child.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn signing_out_ends_the_session_and_is_idempotent() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (_, one) = signed_in(&app, "alice").await;
    let two = app.sign_in("alice", PASSWORD).await.unwrap();

    sign_out(
        &app,
        authed(pb::SignOutRequest::default(), &one.access_token),
    )
    .await
    .unwrap();
    assert!(!active(&app, &admin, &one.access_token).await);
    assert!(refresh(&app, &one.refresh_token).await.is_err());
    // The other session lives on; signing out again changes nothing and is no error.
    assert!(active(&app, &admin, &two.access_token).await);
    sign_out(
        &app,
        authed(pb::SignOutRequest::default(), &one.access_token),
    )
    .await
    .unwrap();

    // By refresh token alone.
    sign_out(
        &app,
        Request::new(pb::SignOutRequest {
            refresh_token: Some(two.refresh_token.clone()),
            all: false,
        }),
    )
    .await
    .unwrap();
    assert!(!active(&app, &admin, &two.access_token).await);
    assert!(refresh(&app, &two.refresh_token).await.is_err());

    // Nothing at all, or a forged token, is refused.
    let none = sign_out(&app, Request::new(pb::SignOutRequest::default())).await;
    assert_eq!(none.unwrap_err().code(), Code::Unauthenticated);
    let forged = sign_out(&app, authed(pb::SignOutRequest::default(), "a.b.c")).await;
    assert_eq!(forged.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_user() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (_, one) = signed_in(&app, "alice").await;
    let two = app.sign_in("alice", PASSWORD).await.unwrap();
    let (_, bob) = signed_in(&app, "bob").await;
    sign_out(
        &app,
        authed(
            pb::SignOutRequest {
                refresh_token: None,
                all: true,
            },
            &one.access_token,
        ),
    )
    .await
    .unwrap();
    for s in [&one, &two] {
        assert!(!active(&app, &admin, &s.access_token).await);
        assert!(refresh(&app, &s.refresh_token).await.is_err());
    }
    assert!(active(&app, &admin, &bob.access_token).await);
    // A new sign-in (in a later second than the revocation) works again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = app.sign_in("alice", PASSWORD).await.unwrap();
    assert!(active(&app, &admin, &again.access_token).await);
}

#[tokio::test]
async fn an_expired_access_token_still_signs_out() {
    let secret = "an HS256 secret of at least 32 bytes!";
    let mut config = Config::for_tests();
    config.token_alg = token::Algorithm::HS256;
    config.hs256_secret = Some(secret.into());
    let app = spawn_with(config).await;
    let (_, one) = signed_in(&app, "alice").await;
    let key = || SigningKey::Hs256(Hs256Secret::new(secret.as_bytes()).unwrap());
    let verifier = token::Verifier::for_keys([&key()], &Audience::default());
    let mut expired = verifier.verify(&one.access_token).unwrap();
    expired.iat = unix_now() - 3600;
    expired.nbf = expired.iat;
    expired.exp = unix_now() - 600;
    let issuer = Issuer::new(key(), Audience::default(), Duration::from_secs(60)).unwrap();
    let expired = issuer.sign(&expired).unwrap();
    sign_out(&app, authed(pb::SignOutRequest::default(), &expired))
        .await
        .unwrap();
    assert!(refresh(&app, &one.refresh_token).await.is_err());
    let (_, other) = signed_in(&app, "bob").await;
    assert!(!active(&app, &other.access_token, &one.access_token).await);

    // A wrong signature is not let through by the relaxed check.
    let other = Issuer::new(
        SigningKey::Hs256(Hs256Secret::new(b"another secret of at least 32 bytes!!").unwrap()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();
    let forged = other
        .sign(&verifier.verify(&one.access_token).unwrap())
        .unwrap();
    let error = sign_out(&app, authed(pb::SignOutRequest::default(), &forged))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> Result<(), Status> {
    app.client
        .clone()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            },
            token,
        ))
        .await
        .map(drop)
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (_, here) = signed_in(&app, "alice").await;
    let elsewhere = app.sign_in("alice", PASSWORD).await.unwrap();
    let new = "a brand new passphrase";

    let wrong = change_password(&app, &here.access_token, "not it at all", new).await;
    assert_eq!(wrong.unwrap_err().code(), Code::PermissionDenied);
    let weak = change_password(&app, &here.access_token, PASSWORD, "short").await;
    assert_eq!(weak.unwrap_err().code(), Code::InvalidArgument);
    assert!(active(&app, &admin, &elsewhere.access_token).await);

    change_password(&app, &here.access_token, PASSWORD, new)
        .await
        .unwrap();
    assert!(!active(&app, &admin, &elsewhere.access_token).await);
    assert!(refresh(&app, &elsewhere.refresh_token).await.is_err());
    assert!(active(&app, &admin, &here.access_token).await);
    refresh(&app, &here.refresh_token).await.unwrap();
    assert!(app.sign_in("alice", PASSWORD).await.is_err());
    app.sign_in("alice", new).await.unwrap();
}

pub async fn set_roles(
    app: &TestApp,
    token: &str,
    user: &str,
    roles: &[&str],
) -> Result<(), Status> {
    app.client
        .clone()
        .set_user_roles(authed(
            pb::SetUserRolesRequest {
                user_id: user.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            },
            token,
        ))
        .await
        .map(drop)
}

async fn set_disabled(
    app: &TestApp,
    token: &str,
    user: &str,
    disabled: bool,
) -> Result<(), Status> {
    app.client
        .clone()
        .set_user_disabled(authed(
            pb::SetUserDisabledRequest {
                user_id: user.into(),
                disabled,
            },
            token,
        ))
        .await
        .map(drop)
}

#[tokio::test]
async fn removing_a_role_ends_the_users_sessions_and_a_refresh_reissues_current_roles() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (bob_id, _) = signed_in(&app, "bob").await;
    set_roles(&app, &admin, &bob_id, &["moderator"])
        .await
        .unwrap();
    let bob = app.sign_in("bob", PASSWORD).await.unwrap();
    assert_eq!(
        claims(&bob.access_token)["roles"],
        serde_json::json!(["user", "moderator"])
    );

    // Adding a role ends nothing; a refresh picks it up.
    set_roles(&app, &admin, &bob_id, &["moderator", "admin"])
        .await
        .unwrap();
    let refreshed = refresh(&app, &bob.refresh_token).await.unwrap();
    assert_eq!(
        claims(&refreshed.access_token)["roles"],
        serde_json::json!(["user", "moderator", "admin"])
    );

    // Removing one ends every session.
    set_roles(&app, &admin, &bob_id, &[]).await.unwrap();
    assert!(!active(&app, &admin, &refreshed.access_token).await);
    assert!(refresh(&app, &refreshed.refresh_token).await.is_err());
}

/// Two replicas on one database; the second hears of revocations only at its next poll (a
/// minute), as a replica whose feed lags behind the demotion would.
pub async fn two_replicas_one_lagging() -> (TestApp, TestApp) {
    let file = std::env::temp_dir().join(format!("auth-demote-{}.db", uuid::Uuid::new_v4()));
    let config = |poll: Duration| {
        let mut config = with_admin(Config::for_tests());
        config.database_url = Some(format!("sqlite://{}", file.display()).into());
        config.key_encryption_key = Some(crate::helpers::KEK.into());
        config.revocation_poll = Some(poll);
        config
    };
    let first = spawn_with(config(Duration::from_millis(250))).await;
    let lagging = spawn_with(config(Duration::from_secs(60))).await;
    (first, lagging)
}

#[tokio::test]
async fn a_demoted_admins_old_token_cannot_act() {
    let (app, lagging) = two_replicas_one_lagging().await;
    let root = app.admin_token().await;
    let (alice_id, _) = signed_in(&app, "alice").await;
    let (bob_id, _) = signed_in(&app, "bob").await;
    set_roles(&app, &root, &alice_id, &["admin"]).await.unwrap();
    let alice = app.sign_in("alice", PASSWORD).await.unwrap();
    set_roles(&app, &alice.access_token, &bob_id, &["moderator"])
        .await
        .unwrap();

    set_roles(&app, &root, &alice_id, &[]).await.unwrap();
    // The replica that demoted her refuses her token from its next call on: it puts the
    // revocation in its own view before it answers.
    let refused = set_disabled(&app, &alice.access_token, &bob_id, true)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "token revoked");
    // On the lagging one her token still says admin and still verifies in the layer; the
    // database says no.
    for error in [
        set_roles(&lagging, &alice.access_token, &alice_id, &["admin"]).await,
        set_disabled(&lagging, &alice.access_token, &bob_id, true).await,
        sessions(&lagging, &alice.access_token, &bob_id)
            .await
            .map(drop),
    ] {
        assert_eq!(error.unwrap_err().code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn an_admin_cannot_demote_or_disable_themselves() {
    let app = spawn_app_with_admin().await;
    let root = app.sign_in("root", PASSWORD).await.unwrap();
    let id = root.user.unwrap().id;
    for error in [
        set_roles(&app, &root.access_token, &id, &["user"]).await,
        set_disabled(&app, &root.access_token, &id, true).await,
    ] {
        let error = error.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert!(error.message().contains("their own"), "{}", error.message());
    }
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_or_refresh_until_enabled() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (id, alice) = signed_in(&app, "alice").await;
    set_disabled(&app, &admin, &id, true).await.unwrap();
    assert!(!active(&app, &admin, &alice.access_token).await);
    assert!(refresh(&app, &alice.refresh_token).await.is_err());
    let refused = app.sign_in("alice", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(refused.message(), "this account is disabled");
    // A wrong password learns nothing about the account.
    let wrong = app.sign_in("alice", "wrong password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    set_disabled(&app, &admin, &id, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let back = app.sign_in("alice", PASSWORD).await.unwrap();
    assert!(active(&app, &admin, &back.access_token).await);
}

#[tokio::test]
async fn signing_in_beyond_the_cap_ends_the_oldest_session() {
    let mut config = with_admin(Config::for_tests());
    config.max_sessions_per_user = 2;
    let app = spawn_with(config).await;
    let admin = app.admin_token().await;
    let (_, first) = signed_in(&app, "alice").await;
    // Later seconds, so "oldest" is unambiguous.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = app.sign_in("alice", PASSWORD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let third = app.sign_in("alice", PASSWORD).await.unwrap();
    assert!(!active(&app, &admin, &first.access_token).await);
    assert!(refresh(&app, &first.refresh_token).await.is_err());
    let listed = sessions(&app, &third.access_token, "").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(active(&app, &admin, &second.access_token).await);
}

#[tokio::test]
async fn with_a_forwarding_secret_only_a_peer_that_sends_it_names_the_client() {
    const SECRET: &str = "k7Qz0vW3mX9pL2sR8tY5uB1nC4dF6gH0";
    let mut config = Config::for_tests();
    // The test's own address is a trusted peer (Config::for_tests), as the gateway's pods are.
    config.forwarding_secret = Some(SECRET.into());
    let app = spawn_with(config).await;
    signed_in(&app, "alice").await;
    let wrong = SECRET.replace('k', "j");
    for (secret, client) in [
        (None, "127.0.0.1"),
        (Some(wrong.as_str()), "127.0.0.1"),
        (Some(SECRET), "203.0.113.9"),
    ] {
        let mut request = Request::new(pb::SignInRequest {
            login: "alice".into(),
            password: PASSWORD.into(),
        });
        let metadata = request.metadata_mut();
        metadata.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        if let Some(secret) = secret {
            metadata.insert("x-forwarding-secret", secret.parse().unwrap());
        }
        let signed_in = app.client.clone().sign_in(request).await.unwrap();
        let token = signed_in.into_inner().access_token;
        let listed = sessions(&app, &token, "").await.unwrap();
        let current: Vec<_> = listed.iter().filter(|s| s.current).collect();
        assert_eq!(current[0].client_address, client, "secret sent: {secret:?}");
    }
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_their_user_or_an_admin() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let (alice_id, _) = signed_in(&app, "alice").await;
    let mut request = Request::new(pb::SignInRequest {
        login: "alice".into(),
        password: PASSWORD.into(),
    });
    request
        .metadata_mut()
        .insert("x-client-user-agent", "Firefox/140".parse().unwrap());
    let firefox = app
        .client
        .clone()
        .sign_in(request)
        .await
        .unwrap()
        .into_inner();
    let sid = claims(&firefox.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    let own = sessions(&app, &firefox.access_token, "").await.unwrap();
    assert_eq!(own.len(), 2);
    let current: Vec<_> = own.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, sid);
    assert_eq!(current[0].user_agent, "Firefox/140");
    assert_eq!(current[0].client_address, "127.0.0.1");
    assert!(current[0].created_at.is_some() && current[0].last_used_at.is_some());

    // Another user's sessions are for admins only.
    let (_, bob) = signed_in(&app, "bob").await;
    let denied = sessions(&app, &bob.access_token, &alice_id)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(sessions(&app, &admin, &alice_id).await.unwrap().len(), 2);

    let end = |token: String, user: String, session: String| {
        let mut client = app.client.clone();
        async move {
            client
                .end_session(authed(
                    pb::EndSessionRequest {
                        user_id: user,
                        session_id: session,
                    },
                    &token,
                ))
                .await
                .map(drop)
        }
    };
    let error = end(bob.access_token.clone(), String::new(), sid.clone()).await;
    assert_eq!(
        error.unwrap_err().code(),
        Code::NotFound,
        "not bob's session"
    );
    end(admin.clone(), alice_id.clone(), sid.clone())
        .await
        .unwrap();
    assert!(!active(&app, &admin, &firefox.access_token).await);
    assert_eq!(sessions(&app, &admin, &alice_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn validate_token_reports_active_claims_or_only_inactive() {
    let app = spawn_app_with_admin().await;
    let (id, alice) = signed_in(&app, "alice").await;
    let answer = app
        .client
        .clone()
        .validate_token(authed(
            pb::ValidateTokenRequest {
                token: alice.access_token.clone(),
            },
            &alice.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.active);
    assert_eq!(answer.sub, id);
    assert_eq!(answer.username, "alice");
    assert_eq!(answer.roles, ["user"]);
    assert_eq!(
        answer.sid,
        claims(&alice.access_token)["sid"].as_str().unwrap()
    );
    assert_eq!(answer.token_type, "Bearer");

    let garbage = app
        .client
        .clone()
        .validate_token(authed(
            pb::ValidateTokenRequest {
                token: "not.a.token".into(),
            },
            &alice.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(garbage, pb::ValidateTokenResponse::default());

    // Only signed-in callers may ask.
    let anonymous = app
        .client
        .clone()
        .validate_token(pb::ValidateTokenRequest {
            token: alice.access_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_sign_out_stays_in_the_feed_until_tokens_issued_before_the_lifetime_was_shortened_expire()
{
    // Two replicas on one database: one still issuing hour-long tokens, one already restarted
    // with ten-second ones, as during a rolling change of AUTH_ACCESS_TOKEN_TTL.
    let file = std::env::temp_dir().join(format!("auth-ttl-{}.db", uuid::Uuid::new_v4()));
    let config = |ttl: u64| {
        let mut config = Config::for_tests();
        config.database_url = Some(format!("sqlite://{}", file.display()).into());
        config.key_encryption_key = Some(KEK.into());
        config.access_token_ttl = Duration::from_secs(ttl);
        config
    };
    let long = spawn_with(config(3600)).await;
    let short = spawn_with(config(10)).await;
    long.sign_up("alice", "alice@example.com").await.unwrap();
    let signed_in = long.sign_in("alice", PASSWORD).await.unwrap();
    let expires_at = signed_in.expires_at.unwrap().seconds;

    sign_out(
        &short,
        authed(
            pb::SignOutRequest {
                refresh_token: None,
                all: false,
            },
            &signed_in.access_token,
        ),
    )
    .await
    .unwrap();

    let mut feed = short
        .client
        .clone()
        .watch_revocations(pb::WatchRevocationsRequest { after: 0 })
        .await
        .unwrap()
        .into_inner();
    let snapshot = feed.message().await.unwrap().unwrap();
    let [revocation] = &snapshot.revocations[..] else {
        panic!("one revocation expected: {snapshot:?}");
    };
    // Verifiers accept a token up to the leeway past its expiry, and forget a revocation at its
    // own: it must not go first.
    assert!(
        revocation.expires_at >= expires_at + token::LEEWAY_SECS as i64,
        "the revocation lapses at {} while the token is valid until {expires_at}",
        revocation.expires_at
    );
}

#[tokio::test]
async fn a_sign_in_whose_password_check_outlasts_a_disable_gets_no_live_token() {
    // One hashing worker with a queue of sign-ins ahead: the victim's password is read, then
    // checked more than a second later, and the admin disables the account in between. Its
    // token, if any, would carry an `iat` in a later second than the disable's revocation.
    let mut config = with_admin(Config::for_tests());
    config.hash_workers = Some(1);
    config.hash_queue = 256;
    // Sign-ins in flight count as failures until their password matches.
    config.signin_account_max_failures = 1000;
    let app = spawn_with(config).await;
    let admin = app.admin_token().await;
    let (victim, _) = signed_in(&app, "mallory").await;
    app.sign_up("filler", "filler@example.com").await.unwrap();
    let started = std::time::Instant::now();
    app.sign_in("filler", PASSWORD).await.unwrap();
    let one_hash = started.elapsed().max(Duration::from_millis(1));
    let fillers = (Duration::from_millis(1500).as_millis() / one_hash.as_millis()).max(1) + 1;
    let queue: Vec<_> = (0..fillers)
        .map(|i| {
            let client = app.client.clone();
            // Each from a client of its own, under the per-client limits.
            let mut request = Request::new(pb::SignInRequest {
                login: "filler".into(),
                password: PASSWORD.into(),
            });
            let address = format!("10.9.{}.{}", i / 250, i % 250 + 1);
            request
                .metadata_mut()
                .insert("x-forwarded-for", address.parse().unwrap());
            tokio::spawn(async move { client.clone().sign_in(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sign_in = {
        let app_client = app.client.clone();
        tokio::spawn(async move {
            app_client
                .clone()
                .sign_in(pb::SignInRequest {
                    login: "mallory".into(),
                    password: PASSWORD.into(),
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    set_disabled(&app, &admin, &victim, true).await.unwrap();
    match sign_in.await.unwrap() {
        Ok(answer) => assert!(
            !active(&app, &admin, &answer.into_inner().access_token).await,
            "a disabled account's sign-in got a live token"
        ),
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
    }
    for filler in queue {
        filler.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_sign_in_right_after_signing_out_everywhere_gets_a_live_token() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    signed_in(&app, "carol").await;
    // Several rounds, so some sign-ins fall in the same second as the revocation before them.
    for round in 0..3 {
        let session = app.sign_in("carol", PASSWORD).await.unwrap();
        sign_out(
            &app,
            authed(
                pb::SignOutRequest {
                    refresh_token: None,
                    all: true,
                },
                &session.access_token,
            ),
        )
        .await
        .unwrap();
        let next = app.sign_in("carol", PASSWORD).await.unwrap();
        assert!(
            active(&app, &admin, &next.access_token).await,
            "round {round}: the new session's token is refused with the old ones"
        );
    }
}

#[tokio::test]
async fn only_a_credential_that_still_works_signs_out_everywhere() {
    let mut config = with_admin(Config::for_tests());
    config.refresh_grace = Duration::ZERO;
    let app = spawn_with(config).await;
    let admin = app.admin_token().await;
    let (_, ended) = signed_in(&app, "kate").await;
    let live = app.sign_in("kate", PASSWORD).await.unwrap();
    let everywhere = |refresh_token: Option<String>, access: Option<&str>| {
        let message = pb::SignOutRequest {
            refresh_token,
            all: true,
        };
        match access {
            Some(token) => authed(message, token),
            None => Request::new(message),
        }
    };
    // One session signed out: its access token no longer speaks for the user.
    sign_out(
        &app,
        authed(pb::SignOutRequest::default(), &ended.access_token),
    )
    .await
    .unwrap();
    let stale = sign_out(&app, everywhere(None, Some(&ended.access_token))).await;
    assert_eq!(stale.unwrap_err().code(), Code::Unauthenticated);
    // A refresh token spent past the grace window neither.
    let rotated = refresh(&app, &live.refresh_token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let spent = sign_out(&app, everywhere(Some(live.refresh_token.clone()), None)).await;
    assert_eq!(spent.unwrap_err().code(), Code::Unauthenticated);
    assert!(active(&app, &admin, &rotated.access_token).await);
    // The session's current refresh token does.
    let newest = refresh(&app, &rotated.refresh_token).await.unwrap();
    sign_out(&app, everywhere(Some(newest.refresh_token.clone()), None))
        .await
        .unwrap();
    assert!(!active(&app, &admin, &newest.access_token).await);
}
