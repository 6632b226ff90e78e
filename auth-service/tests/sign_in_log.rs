//! What a sign-in writes to the log. A test binary of its own: the log is captured with a
//! thread-local subscriber, and other tests registering the same log call sites on other
//! threads at the same moment can make tracing skip an event for it.

// A failed unwrap is a failed test; the lint guards service code.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "api/helpers.rs"]
mod helpers;

use helpers::{PASSWORD, spawn_app};

/// Collects what the service logs on this thread.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Collects what this thread logs until the guard is dropped.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

// One thread, so the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn sign_ins_are_logged_with_the_client_and_refusals_with_a_hash_of_the_login_only() {
    let (logs, _guard) = Logs::capture();
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    app.sign_in("Alice", "wrong password").await.unwrap_err();
    app.sign_in("alice", PASSWORD).await.unwrap();

    let refused = logs.lines_with("sign-in refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let line = &refused[0];
    assert!(line.contains("client=127.0.0.1"), "{line}");
    let hash = auth_service::accounts::login_hash("alice");
    assert!(line.contains(&format!("login_hash={hash}")), "{line}");
    assert!(!line.to_lowercase().contains("alice"), "{line}");
    assert!(!line.contains("wrong password"), "{line}");

    let signed_in = logs.lines_with("signed in");
    assert_eq!(signed_in.len(), 1, "{signed_in:?}");
    assert!(
        signed_in[0].contains("client=127.0.0.1"),
        "{}",
        signed_in[0]
    );

    // Guessing on until throttled: the refusal is a warning with the client, the login's hash,
    // the limit and the delay, and still no login or password.
    for _ in 0..11 {
        app.sign_in("ALICE", "wrong password").await.unwrap_err();
    }
    let throttled = logs.lines_with("sign-in throttled");
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    let line = &throttled[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains(&format!("login_hash={hash}")), "{line}");
    assert!(line.contains("limit=\"client\""), "{line}");
    assert!(line.contains("retry_after_secs="), "{line}");
    assert!(!line.to_lowercase().contains("alice"), "{line}");
    assert!(!line.contains("wrong password"), "{line}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_refresh_token_reuse_is_a_security_event_and_no_token_is_logged() {
    let (logs, _guard) = Logs::capture();
    let mut config = auth_service::Config::for_tests();
    config.refresh_grace = std::time::Duration::ZERO;
    let app = helpers::spawn_with(config).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let first = app.sign_in("alice", PASSWORD).await.unwrap();
    let refresh = |token: String| {
        let mut client = app.client.clone();
        async move {
            client
                .refresh(proto::auth::v1::RefreshRequest {
                    refresh_token: token,
                })
                .await
        }
    };
    let child = refresh(first.refresh_token.clone())
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    refresh(first.refresh_token.clone()).await.unwrap_err();

    let events = logs.lines_with("reused");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("WARN") && events[0].contains("security"),
        "{}",
        events[0]
    );
    let all = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for secret in [
        &first.refresh_token,
        &child.refresh_token,
        &first.access_token,
    ] {
        assert!(!all.contains(secret.as_str()), "a token reached the log");
    }
}

// One thread, so the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn no_client_secret_or_client_token_reaches_the_log() {
    use proto::auth::v1 as pb;

    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = helpers::spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let mut client = app.client.clone();
    let created = client
        .create_service_account(helpers::authed(
            pb::CreateServiceAccountRequest {
                name: "logged".into(),
                roles: vec![],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let client_id = created.service_account.unwrap().client_id;
    let rotated = client
        .rotate_service_account_secret(helpers::authed(
            pb::RotateServiceAccountSecretRequest {
                client_id: client_id.clone(),
                overlap_seconds: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    let grant = |secret: &str| pb::IssueClientTokenRequest {
        client_id: client_id.clone(),
        client_secret: secret.into(),
        scope: String::new(),
    };
    let wrong = "a-wrong-client-secret-that-is-long-enough";
    client.issue_client_token(grant(wrong)).await.unwrap_err();
    let token = client
        .issue_client_token(grant(&rotated))
        .await
        .unwrap()
        .into_inner()
        .access_token;

    let refused = logs.lines_with("client authentication refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains(&client_id), "{}", refused[0]);
    assert_eq!(logs.lines_with("client token issued").len(), 1);
    for secret in [&created.client_secret, &rotated, wrong, &token] {
        assert_eq!(logs.lines_with(secret), Vec::<String>::new());
    }
}

// One thread, so the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn only_a_token_claiming_admin_that_the_database_denies_is_a_security_event() {
    use token::{Audience, Hs256Secret, Issuer, Role, SigningKey};

    let (logs, _guard) = Logs::capture();
    let secret = "an HS256 secret of at least 32 bytes!";
    let mut config = auth_service::Config::for_tests();
    config.token_alg = token::Algorithm::HS256;
    config.hs256_secret = Some(secret.into());
    let app = helpers::spawn_with(config).await;
    let token = app.user_token("alice").await;
    let list_users = |token: String| {
        let mut client = app.client.clone();
        async move {
            client
                .list_users(helpers::authed(
                    proto::auth::v1::ListUsersRequest::default(),
                    &token,
                ))
                .await
        }
    };
    // A user asking for another user's sessions (which takes the admin role) is refused like
    // any call beyond their roles.
    let bob = app.sign_up("bob", "bob@example.com").await.unwrap();
    let refused = app
        .client
        .clone()
        .list_sessions(helpers::authed(
            proto::auth::v1::ListSessionsRequest { user_id: bob.id },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(logs.lines_with("security").len(), 0);

    // A token that claims the admin role the database does not grant is news.
    let key = || SigningKey::Hs256(Hs256Secret::new(secret.as_bytes()).unwrap());
    let verifier = token::Verifier::for_keys([&key()], &Audience::default());
    let mut claims = verifier.verify(&token).unwrap();
    claims.roles.push(Role::Admin);
    let issuer = Issuer::new(
        key(),
        Audience::default(),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let claimed = issuer.sign(&claims).unwrap();
    let refused = list_users(claimed).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let events = logs.lines_with("no longer grants");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("WARN") && events[0].contains("security"));
}
