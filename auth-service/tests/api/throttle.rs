//! Throttled guessing: failed sign-ins counted per account and client across replicas, sign-up's
//! "taken" answers per client, and each client's share of the password-hashing admission.
//!
//! Clients are told apart the way the gateway tells the service: `x-forwarded-for` metadata from
//! a trusted peer (the tests' 127.0.0.1).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use auth_service::Config;
use proto::auth::v1 as pb;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    PASSWORD, TestApp, authed, plain_collision, plain_fingerprint, postgres_config, spawn_with,
};

const WRONG: &str = "not the password";

/// A request as the gateway sends it for `client`, with the request id `request_id`.
fn from<T>(message: T, client: &str, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-forwarded-for", client.parse().unwrap());
    metadata.insert("x-request-id", request_id.parse().unwrap());
    request
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn sign_in(
    app: &TestApp,
    login: &str,
    password: &str,
    client: &str,
    request_id: &str,
) -> Result<pb::SignInResponse, Status> {
    let message = pb::SignInRequest {
        login: login.into(),
        password: password.into(),
    };
    Ok(app
        .client
        .clone()
        .sign_in(from(message, client, request_id))
        .await?
        .into_inner())
}

/// Asserts `status` is the throttle's refusal and returns its retry delay.
fn throttled(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

/// Two replicas on one fresh PostgreSQL database.
async fn two_replicas() -> (TestApp, TestApp) {
    let config = crate::helpers::with_admin(postgres_config().await);
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    (a, b)
}

#[tokio::test]
async fn ten_failures_from_one_client_across_replicas_throttle_the_eleventh_sign_in() {
    let (a, b) = two_replicas().await;
    let alice = a.sign_up("alice", "alice@example.com").await.unwrap();
    let attacker = "203.0.113.7";
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let error = sign_in(replica, "alice", WRONG, attacker, &fresh_id())
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Code::Unauthenticated,
            "attempt {i}: {error:?}"
        );
    }
    // Even the right password is refused now, at once, on either replica.
    for replica in [&a, &b] {
        let error = sign_in(
            replica,
            "ALICE@example.com",
            PASSWORD,
            attacker,
            &fresh_id(),
        )
        .await
        .unwrap_err();
        let delay = throttled(&error);
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(15 * 60),
            "{delay:?}"
        );
    }
    // The account's owner on another client is not locked out.
    sign_in(&b, "alice", PASSWORD, "198.51.100.20", &fresh_id())
        .await
        .unwrap();
    // Another address in the attacker's IPv6 /64 is the same client; another /64 is not.
    for i in 0..10 {
        let client = format!("2001:db8:1:2::{i:x}");
        sign_in(&a, "alice", WRONG, &client, &fresh_id())
            .await
            .unwrap_err();
    }
    let error = sign_in(&b, "alice", PASSWORD, "2001:db8:1:2::ffff", &fresh_id())
        .await
        .unwrap_err();
    throttled(&error);
    sign_in(&b, "alice", PASSWORD, "2001:db8:1:3::1", &fresh_id())
        .await
        .unwrap();

    // An admin lifts the throttle for every client; an unknown account is not found.
    let token = a.admin_token().await;
    let clear = |user_id: String| {
        let replica = &b;
        let token = &token;
        async move {
            replica
                .client
                .clone()
                .clear_sign_in_throttle(authed(
                    pb::ClearSignInThrottleRequest {
                        user_id,
                        ..Default::default()
                    },
                    token,
                ))
                .await
        }
    };
    clear(alice.id.clone()).await.unwrap();
    sign_in(&a, "alice", PASSWORD, attacker, &fresh_id())
        .await
        .unwrap();
    sign_in(&a, "alice", PASSWORD, "2001:db8:1:2::1", &fresh_id())
        .await
        .unwrap();
    let missing = clear(uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_client_that_signed_in_before_passes_the_per_account_limit_and_no_other_does() {
    let mut config = Config::for_tests();
    config.signin_account_max_failures = 20;
    let app = spawn_with(config).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let laptop = "198.51.100.30";
    sign_in(&app, "alice", PASSWORD, laptop, &fresh_id())
        .await
        .unwrap();
    // Guesses spread over clients, each under its own limit, lock the account...
    for i in 0..20 {
        let client = format!("203.0.113.{}", 100 + i / 10);
        sign_in(&app, "alice", WRONG, &client, &fresh_id())
            .await
            .unwrap_err();
    }
    for stranger in ["203.0.113.200", "198.51.100.31"] {
        throttled(
            &sign_in(&app, "alice", PASSWORD, stranger, &fresh_id())
                .await
                .unwrap_err(),
        );
    }
    // ...but not for the owner's device that signed in before, which still has its own limit.
    sign_in(&app, "alice", PASSWORD, laptop, &fresh_id())
        .await
        .unwrap();
    for _ in 0..10 {
        sign_in(&app, "alice", WRONG, laptop, &fresh_id())
            .await
            .unwrap_err();
    }
    throttled(
        &sign_in(&app, "alice", PASSWORD, laptop, &fresh_id())
            .await
            .unwrap_err(),
    );
}

/// A password change from `client`, as the gateway sends it for a signed-in caller.
async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    client: &str,
) -> Result<(), Status> {
    let mut request = from(
        pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: "a brand new passphrase".into(),
        },
        client,
        &fresh_id(),
    );
    let authorization = format!("Bearer {token}").parse().unwrap();
    request
        .metadata_mut()
        .insert("authorization", authorization);
    app.client.clone().change_password(request).await.map(drop)
}

#[tokio::test]
async fn wrong_current_passwords_in_password_changes_count_as_failed_sign_ins() {
    let app = spawn_with(Config::for_tests()).await;
    // The attacker holds a stolen access token and guesses the current password with it.
    let stolen = app.user_token("alice").await;
    let attacker = "203.0.113.9";
    for i in 0..10 {
        let error = change_password(&app, &stolen, WRONG, attacker)
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Code::PermissionDenied,
            "attempt {i}: {error:?}"
        );
    }
    // The eleventh guess is refused before any hashing, even the right one, and so is a
    // sign-in from the same client: one count for both ways of trying a password.
    throttled(
        &change_password(&app, &stolen, PASSWORD, attacker)
            .await
            .unwrap_err(),
    );
    throttled(
        &sign_in(&app, "alice", PASSWORD, attacker, &fresh_id())
            .await
            .unwrap_err(),
    );
    // The owner on another client is not held back, and the right password clears its count.
    let owner = "198.51.100.21";
    change_password(&app, &stolen, WRONG, owner)
        .await
        .unwrap_err();
    change_password(&app, &stolen, PASSWORD, owner)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_an_admin_may_clear_a_sign_in_throttle() {
    let app = spawn_with(Config::for_tests()).await;
    let token = app.user_token("alice").await;
    let me = app
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let error = app
        .client
        .clone()
        .clear_sign_in_throttle(authed(
            pb::ClearSignInThrottleRequest {
                user_id: me.id,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_unknown_account_is_throttled_with_the_same_answer() {
    let (a, b) = two_replicas().await;
    a.sign_up("alice", "alice@example.com").await.unwrap();
    let attacker = "203.0.113.8";
    for (i, login) in ["alice", "nobody"].into_iter().enumerate() {
        for j in 0..10 {
            let replica = if (i + j) % 2 == 0 { &a } else { &b };
            sign_in(replica, login, WRONG, attacker, &fresh_id())
                .await
                .unwrap_err();
        }
    }
    let known = sign_in(&a, "alice", WRONG, attacker, &fresh_id())
        .await
        .unwrap_err();
    let unknown = sign_in(&a, "nobody", WRONG, attacker, &fresh_id())
        .await
        .unwrap_err();
    throttled(&known);
    throttled(&unknown);
    assert_eq!(known.message(), unknown.message());
    assert!(!known.message().contains("alice"));
}

#[tokio::test]
async fn a_retried_request_counts_once() {
    let (a, b) = two_replicas().await;
    a.sign_up("alice", "alice@example.com").await.unwrap();
    let client = "203.0.113.9";
    // The gateway retrying one request on the other replica sends the same request id.
    let retried = fresh_id();
    for replica in [&a, &b, &a, &b, &a, &b, &a, &b, &a, &b, &a, &b] {
        let error = sign_in(replica, "alice", WRONG, client, &retried)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    }
    // A request id reused with another password is another request, so reusing ids gains an
    // attacker nothing.
    for i in 0..9 {
        let error = sign_in(&b, "alice", &format!("guess {i}"), client, &retried)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "guess {i}: {error:?}");
    }
    let error = sign_in(&a, "alice", "one more", client, &retried)
        .await
        .unwrap_err();
    throttled(&error);
}

/// Review finding (session 13): with the plain 24-bit SHA-256 fingerprint, an attacker keeping
/// one request id could pick wrong passwords whose fingerprint matched a recorded one, and they
/// were checked but never counted. The keyed fingerprint counts each of them.
#[tokio::test]
async fn wrong_passwords_chosen_to_collide_with_recorded_ones_are_counted() {
    colliding_wrong_passwords_are_counted(Config::for_tests()).await;
}

/// The fingerprint key comes from the HS256 secret when there is no key-encryption key.
#[tokio::test]
async fn wrong_passwords_chosen_to_collide_are_counted_with_hs256_too() {
    let mut config = Config::for_tests();
    config.token_alg = token::Algorithm::HS256;
    config.hs256_secret = Some("an HS256 secret of at least 32 bytes!".into());
    colliding_wrong_passwords_are_counted(config).await;
}

async fn colliding_wrong_passwords_are_counted(config: Config) {
    let app = spawn_with(config).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let client = "203.0.113.12";
    let kept = fresh_id();
    let mut recorded = Vec::new();
    for i in 0..9 {
        let guess = format!("wrong password {i}");
        recorded.push(plain_fingerprint(&kept, &[&guess]));
        let error = sign_in(&app, "alice", &guess, client, &kept)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "guess {i}: {error:?}");
    }
    let colliding = plain_collision(
        &kept,
        &recorded,
        |c| vec![c.to_owned()],
        |n| format!("guess {n}"),
    );
    let error = sign_in(&app, "alice", &colliding, client, &kept)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    // That was the tenth failure: the eleventh sign-in is refused, even with the password.
    let error = sign_in(&app, "alice", PASSWORD, client, &kept)
        .await
        .unwrap_err();
    throttled(&error);
}

/// The same for sign-up's "taken" answers: a probe chosen to collide is counted.
#[tokio::test]
async fn taken_answers_chosen_to_collide_with_recorded_ones_are_counted() {
    let app = spawn_with(Config::for_tests()).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let prober = "203.0.113.13";
    let kept = fresh_id();
    let probe = |email: String| {
        let app = &app;
        let kept = &kept;
        async move {
            let message = pb::SignUpRequest {
                username: "alice".into(),
                email,
                password: PASSWORD.into(),
                roles: vec![],
            };
            app.client
                .clone()
                .sign_up(from(message, prober, kept))
                .await
        }
    };
    let mut recorded = Vec::new();
    for i in 0..9 {
        let email = format!("probe{i}@example.com");
        recorded.push(plain_fingerprint(&kept, &["alice", &email]));
        let error = probe(email).await.unwrap_err();
        assert_eq!(error.code(), Code::AlreadyExists, "probe {i}: {error:?}");
    }
    let colliding = plain_collision(
        &kept,
        &recorded,
        |email| vec!["alice".to_owned(), email.to_owned()],
        |n| format!("c{n}@example.com"),
    );
    let error = probe(colliding).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
    let error = probe("free-name@example.com".into()).await.unwrap_err();
    throttled(&error);
}

#[tokio::test]
async fn sign_up_answers_about_taken_names_are_throttled_per_client() {
    let app = spawn_with(Config::for_tests()).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let prober = "203.0.113.10";
    let probe = |username: String, request_id: String| {
        let app = &app;
        async move {
            let message = pb::SignUpRequest {
                username,
                email: format!("{}@example.com", fresh_id()),
                password: PASSWORD.into(),
                roles: vec![],
            };
            app.client
                .clone()
                .sign_up(from(message, prober, &request_id))
                .await
        }
    };
    for i in 0..10 {
        let error = probe("alice".into(), fresh_id()).await.unwrap_err();
        assert_eq!(error.code(), Code::AlreadyExists, "probe {i}: {error:?}");
    }
    // Whether the next name is free or taken, the prober learns nothing more for a while.
    for name in ["alice", "free-name"] {
        let error = probe(name.into(), fresh_id()).await.unwrap_err();
        throttled(&error);
    }
    // Someone else signs up as usual.
    let message = pb::SignUpRequest {
        username: "bob".into(),
        email: "bob@example.com".into(),
        password: PASSWORD.into(),
        roles: vec![],
    };
    app.client
        .clone()
        .sign_up(from(message, "198.51.100.30", &fresh_id()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_burst_from_one_client_does_not_make_another_clients_sign_in_busy() {
    let mut config = Config::for_tests();
    config.hash_workers = Some(1);
    config.hash_queue = 7;
    let app = spawn_with(config).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();

    // One client keeps far more bad sign-ins in flight than the service admits, each for
    // another login so that no per-account limit stops it first.
    let stop = AtomicBool::new(false);
    let flooder = || async {
        let mut busy = 0;
        while !stop.load(Ordering::Relaxed) {
            let login = format!("nobody-{}", fresh_id());
            let result = sign_in(&app, &login, WRONG, "203.0.113.11", &fresh_id()).await;
            if result.unwrap_err().code() == Code::ResourceExhausted {
                busy += 1;
            }
        }
        busy
    };
    let flood = futures::future::join_all((0..32).map(|_| flooder()));
    let user = async {
        // Let the flood fill the queue first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(sign_in(&app, "alice", PASSWORD, "198.51.100.40", &fresh_id()).await);
        }
        stop.store(true, Ordering::Relaxed);
        results
    };
    let (busy, results) = tokio::join!(flood, user);
    let busy: usize = busy.into_iter().sum();
    assert!(busy > 0, "the flood never filled its share of the queue");
    for result in results {
        result.unwrap();
    }
}
