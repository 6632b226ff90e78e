//! Several replicas on one PostgreSQL database, as in production.

use auth_service::{Application, Config, Settings};
use base64::Engine;
use proto::auth::v1 as pb;

use crate::helpers::{
    KEK, PASSWORD, authed, fresh_postgres_database, settings, spawn_with, with_admin,
};

fn config_on(url: &str) -> Config {
    let mut config = with_admin(Config::for_tests());
    config.database_url = Some(url.to_owned().into());
    config.key_encryption_key = Some(KEK.into());
    config
}

#[tokio::test]
async fn replicas_starting_together_share_one_key_and_one_admin() {
    let url = fresh_postgres_database().await;
    let builds = (0..3).map(|_| Application::build(settings(config_on(&url))));
    let apps: Vec<Application> = futures::future::try_join_all(builds).await.unwrap();
    drop(apps);

    let a = spawn_with(config_on(&url)).await;
    let b = spawn_with(config_on(&url)).await;
    let (ja, jb) = (a.jwks().await, b.jwks().await);
    assert_eq!(ja.keys.len(), 1);
    assert_eq!(ja.keys, jb.keys);

    // A token from one replica is good on the other.
    let token = a.admin_token().await;
    let me = b
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.username, "root");

    let users = b
        .client
        .clone()
        .list_users(authed(pb::ListUsersRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.iter().filter(|u| u.username == "root").count(), 1);
}

#[tokio::test]
async fn a_sealed_signing_key_needs_its_key_encryption_key() {
    let url = fresh_postgres_database().await;
    let kek = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let mut config = config_on(&url);
    config.key_encryption_key = Some(kek.clone().into());
    let first = spawn_with(config.clone()).await;
    let kid = first.jwks().await.keys[0].kid.clone();
    first.stop().await;

    // The same KEK opens it again.
    let again = spawn_with(config.clone()).await;
    assert_eq!(again.jwks().await.keys[0].kid, kid);
    again.sign_in("root", PASSWORD).await.unwrap();
    again.stop().await;

    // A wrong KEK, or none, refuses to start, and says why without printing key material.
    let mut wrong = config.clone();
    wrong.key_encryption_key = Some(
        base64::engine::general_purpose::STANDARD
            .encode([7u8; 32])
            .into(),
    );
    let error = format!(
        "{:#}",
        Application::build(settings(wrong)).await.err().unwrap()
    );
    assert!(error.contains("AUTH_KEY_ENCRYPTION_KEY"), "{error}");
    assert!(!error.contains(&kek));
    let mut none = config;
    none.key_encryption_key = None;
    let error = Settings::try_from(none).err().unwrap();
    assert_eq!(error.setting, "AUTH_KEY_ENCRYPTION_KEY");
}

#[tokio::test]
async fn the_key_encryption_key_is_rotated_by_one_start_with_the_previous_one() {
    let url = fresh_postgres_database().await;
    let old = config_on(&url);
    let first = spawn_with(old.clone()).await;
    let kid = first.jwks().await.keys[0].kid.clone();
    first.stop().await;

    let new_kek = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let mut rotating = old.clone();
    rotating.key_encryption_key = Some(new_kek.clone().into());
    rotating.previous_key_encryption_key = old.key_encryption_key.clone();
    let app = spawn_with(rotating.clone()).await;
    assert_eq!(app.jwks().await.keys[0].kid, kid);
    app.stop().await;

    // Every key is now sealed under the new KEK alone; the old one no longer opens it.
    let mut rotated = rotating;
    rotated.previous_key_encryption_key = None;
    let app = spawn_with(rotated).await;
    assert_eq!(app.jwks().await.keys[0].kid, kid);
    app.sign_in("root", PASSWORD).await.unwrap();
    app.stop().await;
    assert!(Application::build(settings(old)).await.is_err());
}

#[tokio::test]
async fn the_whole_service_works_on_postgres() {
    let app = spawn_with(crate::helpers::postgres_config().await).await;
    let user = app.sign_up("alice", "alice@example.com").await.unwrap();
    assert_eq!(
        app.sign_up("ALICE", "x@example.com")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::AlreadyExists
    );
    let signed_in = app.sign_in("Alice@Example.com", PASSWORD).await.unwrap();
    assert_eq!(signed_in.user.unwrap().id, user.id);
}

// Several worker threads, so the calls really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refreshes_through_two_replicas_rotate_once_and_all_get_the_same_token() {
    let url = fresh_postgres_database().await;
    let a = spawn_with(config_on(&url)).await;
    let b = spawn_with(config_on(&url)).await;
    a.sign_up("alice", "alice@example.com").await.unwrap();
    let first = a.sign_in("alice", PASSWORD).await.unwrap();

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let replica = if i % 2 == 0 { &a } else { &b };
            let (mut client, token) = (replica.client.clone(), first.refresh_token.clone());
            tokio::spawn(async move {
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
    let child = answers[0].refresh_token.clone();
    assert!(answers.iter().all(|r| r.refresh_token == child));

    // Exactly one new pair exists: one session, whose current token is that child.
    let store = auth_service::store::connect(&url, 2).await.unwrap();
    let hash = auth_service::refresh_token::RefreshToken::from_client(child.clone()).hash();
    let (sid, user) = store.find_session_by_token(&hash).await.unwrap().unwrap();
    let live = store.list_sessions(user, token::unix_now()).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, sid);
    // Spending the child on the other replica rotates again.
    let next = crate::sessions::refresh(&b, &child).await.unwrap();
    assert_ne!(next.refresh_token, child);
}

#[tokio::test]
async fn a_reuse_on_one_replica_after_the_grace_window_revokes_the_session_for_both() {
    let url = fresh_postgres_database().await;
    let mut config = config_on(&url);
    config.refresh_grace = std::time::Duration::from_secs(1);
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    a.sign_up("alice", "alice@example.com").await.unwrap();
    let first = a.sign_in("alice", PASSWORD).await.unwrap();
    let child = crate::sessions::refresh(&a, &first.refresh_token)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert!(
        crate::sessions::refresh(&b, &first.refresh_token)
            .await
            .is_err()
    );

    let store = auth_service::store::connect(&url, 2).await.unwrap();
    let revocations = store.revocations_after(0, 0, 10).await.unwrap();
    let sid = child_sid(&child.access_token);
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0].subject, sid);
    assert!(
        crate::sessions::refresh(&a, &child.refresh_token)
            .await
            .is_err()
    );
    let admin = a.admin_token().await;
    assert!(!crate::sessions::active(&b, &admin, &child.access_token).await);
}

fn child_sid(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}
