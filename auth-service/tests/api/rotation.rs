//! Signing-key rotation: a new key is published before it signs, every replica agrees on the
//! active key because the database decides, and tokens of the old key stay good until they
//! expire.

use std::time::Duration;

use auth_service::Config;
use proto::auth::v1 as pb;
use token::Algorithm;
use tonic::Code;

use crate::helpers::{KEK, TestApp, authed, fresh_postgres_database, spawn_with, with_admin};

const PUBLISH_AHEAD: Duration = Duration::from_secs(2);

fn rotating(mut config: Config) -> Config {
    config.key_publish_ahead = PUBLISH_AHEAD;
    config.key_rotation_period = Duration::ZERO;
    // `signing_with` signs in up to a hundred times: the per-user cap must not end the first
    // sessions, whose tokens the tests use afterwards.
    config.max_sessions_per_user = 1_000;
    config
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn jwks_kids(jwks: &pb::GetJwksResponse) -> Vec<String> {
    jwks.keys.iter().map(|k| k.kid.clone()).collect()
}

async fn rotate(app: &TestApp, admin: &str) -> Result<pb::RotateSigningKeyResponse, tonic::Status> {
    app.client
        .clone()
        .rotate_signing_key(authed(pb::RotateSigningKeyRequest {}, admin))
        .await
        .map(tonic::Response::into_inner)
}

async fn me(app: &TestApp, token: &str) -> Result<pb::User, tonic::Status> {
    Ok(app
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, token))
        .await?
        .into_inner()
        .user
        .unwrap())
}

/// Waits (bounded) until a fresh sign-in on `app` is signed with `kid`.
async fn signing_with(app: &TestApp, kid: &str) -> String {
    for _ in 0..100 {
        let token = app.admin_token().await;
        if kid_of(&token) == kid {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica never signed with {kid}");
}

#[tokio::test]
async fn a_rotated_key_is_published_at_once_and_signs_only_after_publish_ahead() {
    let app = spawn_with(rotating(with_admin(Config::for_tests()))).await;
    let admin = app.admin_token().await;
    let old = kid_of(&admin);
    let before = app.jwks().await;
    assert_eq!(jwks_kids(&before), std::slice::from_ref(&old));
    // The JWKS may be cached for half the publish-ahead time, not a fixed 300 s.
    assert_eq!(before.max_age_seconds, 1);

    let rotated = rotate(&app, &admin).await.unwrap();
    assert_ne!(rotated.kid, old);
    let now = token::unix_now();
    let activates_at = rotated.activates_at.unwrap().seconds;
    assert!(
        (now + 1..=now + 3).contains(&activates_at),
        "{activates_at} vs {now}"
    );
    // Published at once, newest first; still signing with the old key.
    assert_eq!(
        jwks_kids(&app.jwks().await),
        [rotated.kid.clone(), old.clone()]
    );
    assert_eq!(kid_of(&app.admin_token().await), old);

    // A second rotation while one is pending is refused (409 at the gateway).
    let again = rotate(&app, &admin).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(
        again.message().contains(&rotated.kid),
        "{}",
        again.message()
    );

    let new_admin = signing_with(&app, &rotated.kid).await;
    assert!(token::unix_now() >= activates_at);
    // The old key's tokens stay good, and it stays published, until they expire.
    assert_eq!(me(&app, &admin).await.unwrap().username, "root");
    assert_eq!(me(&app, &new_admin).await.unwrap().username, "root");
    assert_eq!(jwks_kids(&app.jwks().await), [rotated.kid.clone(), old]);
    // Once it signs, the next rotation may go ahead.
    let next = rotate(&app, &new_admin).await.unwrap();
    assert_ne!(next.kid, rotated.kid);
}

#[tokio::test]
async fn only_admins_rotate_and_hs256_never_does() {
    let app = spawn_with(rotating(with_admin(Config::for_tests()))).await;
    let user = app.user_token("alice").await;
    assert_eq!(
        rotate(&app, &user).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let mut config = rotating(with_admin(Config::for_tests()));
    config.token_alg = Algorithm::HS256;
    config.hs256_secret = Some("an-hs256-secret-of-32-bytes-or-more".into());
    let hs = spawn_with(config).await;
    let admin = hs.admin_token().await;
    let refused = rotate(&hs, &admin).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("HS256"), "{}", refused.message());
}

#[tokio::test]
async fn replicas_agree_on_the_active_key_and_a_restart_mid_rotation_changes_nothing() {
    let url = fresh_postgres_database().await;
    let config = || {
        let mut config = rotating(with_admin(Config::for_tests()));
        config.database_url = Some(url.clone().into());
        config.key_encryption_key = Some(KEK.into());
        config
    };
    let a = spawn_with(config()).await;
    let b = spawn_with(config()).await;
    let admin = a.admin_token().await;
    let old = kid_of(&admin);

    let rotated = rotate(&a, &admin).await.unwrap();
    // The other replica learns of the new key from the database within its refresh interval
    // (a quarter of the publish-ahead time), before the key signs.
    let mut published = false;
    for _ in 0..40 {
        if jwks_kids(&b.jwks().await).contains(&rotated.kid) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published, "replica b never published the new key");
    // The other replica refuses a second rotation too: the database holds the pending key.
    assert_eq!(
        rotate(&b, &admin).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // A replica restarted mid-rotation loads the same pending key, not one of its own.
    b.stop().await;
    let b = spawn_with(config()).await;
    assert_eq!(
        jwks_kids(&b.jwks().await),
        [rotated.kid.clone(), old.clone()]
    );
    // It signs with the old key until the new one activates, which a slow restart (the whole
    // suite on two cores) may already have passed: only a token got before then is checked.
    let activates_at = rotated.activates_at.unwrap().seconds;
    let token = b.admin_token().await;
    if token::unix_now() < activates_at {
        assert_eq!(kid_of(&token), old);
    }

    // Both sign with the new key once it activates; each accepts the other's tokens.
    let from_a = signing_with(&a, &rotated.kid).await;
    let from_b = signing_with(&b, &rotated.kid).await;
    assert_eq!(me(&b, &from_a).await.unwrap().username, "root");
    assert_eq!(me(&a, &from_b).await.unwrap().username, "root");
    assert_eq!(me(&b, &admin).await.unwrap().username, "root");
}

#[tokio::test]
async fn keys_rotate_on_schedule_without_anyone_asking() {
    let mut config = with_admin(Config::for_tests());
    config.key_publish_ahead = PUBLISH_AHEAD;
    config.key_rotation_period = Duration::from_secs(3);
    let app = spawn_with(config).await;
    let first = kid_of(&app.admin_token().await);
    // The first key started at start-up; its successor is stored at 1 s and signs from 3 s.
    let mut rotated = None;
    for _ in 0..100 {
        let kid = kid_of(&app.admin_token().await);
        if kid != first {
            rotated = Some(kid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rotated = rotated.expect("a scheduled rotation within 10 s");
    assert!(jwks_kids(&app.jwks().await).contains(&first));
    assert!(jwks_kids(&app.jwks().await).contains(&rotated));
}
