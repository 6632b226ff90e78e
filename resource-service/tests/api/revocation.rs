//! Revocations pushed by a real auth-service: refused on every call (cached tokens too), caught
//! up after auth-service comes back, and the stale view's health entry and fail-closed mode.
//! Revocations are written straight into auth-service's database, as its sign-out will.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use auth_service::store::{self, NewRevocation, RevocationKind, Store};
use resource_service::{Config, config::TEST_HS256_SECRET};
use token::{Algorithm, Claims, Role, unix_now};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    access::{Rpc, call},
    helpers::{TestApp, hs256_issuer, spawn_app_with},
};

/// Generous: asserts that a revocation arrives, not how fast.
const WITHIN: Duration = Duration::from_secs(5);
/// After an outage the follower may be between two reconnection attempts (at most 5 s apart).
const AFTER_OUTAGE: Duration = Duration::from_secs(12);

/// auth-service on a SQLite file that outlives it, so it can stop and start again at the same
/// address on the same database.
struct Auth {
    addr: SocketAddr,
    db_url: String,
    data_dir: PathBuf,
    hs256: bool,
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Auth {
    async fn start(hs256: bool) -> Self {
        let id = uuid::Uuid::new_v4();
        let data_dir = std::env::temp_dir().join(format!("auth-revocation-{id}"));
        let db_url = format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!("auth-revocation-{id}.db"))
                .display()
        );
        let mut auth = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: store::connect(&db_url, 2).await.unwrap(),
            db_url,
            data_dir,
            hs256,
            stop: None,
            task: None,
        };
        auth.run().await;
        auth
    }

    async fn run(&mut self) {
        telemetry::init_for_tests();
        let mut config = auth_service::Config::for_tests();
        config.grpc_addr = self.addr;
        config.database_url = Some(self.db_url.clone().into());
        config.data_dir = self.data_dir.clone();
        config.revocation_poll = Some(Duration::from_millis(50));
        config.revocation_heartbeat = Duration::from_millis(200);
        config.bootstrap_admin_username = Some("root".into());
        config.bootstrap_admin_password = Some("correct horse battery staple".into());
        if self.hs256 {
            config.token_alg = Algorithm::HS256;
            config.hs256_secret = Some(TEST_HS256_SECRET.into());
        }
        let settings = auth_service::Settings::try_from(config).unwrap();
        let app = auth_service::Application::build(settings).await.unwrap();
        self.addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    async fn revoke(&self, kind: RevocationKind, subject: &str, not_before: i64) {
        self.store
            .insert_revocations(&[NewRevocation {
                kind,
                subject: subject.into(),
                not_before,
                expires_at: unix_now() + 900,
            }])
            .await
            .unwrap();
    }

    /// A user's access token, signed up and signed in through auth-service.
    async fn sign_in_new_user(&self, username: &str) -> (String, String) {
        use proto::auth::v1::{SignUpRequest, auth_service_client::AuthServiceClient};
        let mut client = AuthServiceClient::connect(self.url()).await.unwrap();
        let user = client
            .sign_up(SignUpRequest {
                username: username.into(),
                email: format!("{username}@example.com"),
                password: "correct horse battery staple".into(),
                roles: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let token = self.sign_in(username).await;
        (user.id, token)
    }

    async fn sign_in(&self, username: &str) -> String {
        use proto::auth::v1::{SignInRequest, auth_service_client::AuthServiceClient};
        let mut client = AuthServiceClient::connect(self.url()).await.unwrap();
        client
            .sign_in(SignInRequest {
                login: username.into(),
                password: "correct horse battery staple".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// resource-service following `auth`'s feed, with its token cache on (a revoked token that was
/// used before is a cache hit).
async fn resource(auth: &Auth, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = if auth.hs256 {
        let mut config = Config::for_tests();
        config.auth_url = vec![auth.url()];
        config
    } else {
        Config::for_tests().with_jwks(vec![auth.url()])
    };
    config.token_cache_capacity = 1_000;
    configure(&mut config);
    spawn_app_with(config).await
}

/// An HS256 token of session `sid`, issued `age` seconds ago.
fn session_token(sid: &str, age: i64) -> String {
    let now = unix_now();
    hs256_issuer()
        .sign(&Claims {
            iss: token::Audience::default().issuer,
            aud: token::Audience::default().audience,
            sub: "0190c2a4-7e1c-7000-8000-0000000000aa".into(),
            iat: now - age,
            nbf: now - age,
            exp: now + 600,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: vec![Role::User],
            username: "alice".into(),
            sid: Some(sid.into()),
            client_id: None,
        })
        .unwrap()
}

/// Waits until `token` is refused as revoked; panics if it is still accepted after `within`.
async fn refused_within(app: &TestApp, token: &str, within: Duration) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match call(app, Rpc::List, token).await {
            Err(status) if status.code() == Code::Unauthenticated => return status,
            Err(status) => panic!("unexpected refusal {status:?}"),
            Ok(()) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(()) => panic!("still accepted after {within:?}"),
        }
    }
}

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown)
}

async fn health_becomes(app: &TestApp, service: &str, want: ServingStatus, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = health(app, service).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service:?} is {status:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_ended_session_is_refused_even_when_its_token_was_cached() {
    let auth = Auth::start(true).await;
    let app = resource(&auth, |_| {}).await;
    health_becomes(&app, "authn.revocation", ServingStatus::Serving, WITHIN).await;
    let ended = session_token("0190c2a4-7e1c-7000-8000-000000000001", 0);
    let other = session_token("0190c2a4-7e1c-7000-8000-000000000002", 0);
    // Used once, so the next call is a cache hit.
    call(&app, Rpc::List, &ended).await.unwrap();
    call(&app, Rpc::List, &other).await.unwrap();

    auth.revoke(
        RevocationKind::Session,
        "0190c2a4-7e1c-7000-8000-000000000001",
        unix_now(),
    )
    .await;
    let status = refused_within(&app, &ended, WITHIN).await;
    assert_eq!(status.message(), "token revoked");
    call(&app, Rpc::List, &other).await.unwrap();
}

#[tokio::test]
async fn a_revoked_user_is_refused_for_tokens_issued_up_to_the_same_second() {
    let auth = Auth::start(false).await;
    let app = resource(&auth, |_| {}).await;
    let (user_id, token) = auth.sign_in_new_user("alice").await;
    call(&app, Rpc::List, &token).await.unwrap();

    let claims = token_claims(&token);
    // Revoked "as of" the second the token was issued: that token is refused too.
    auth.revoke(RevocationKind::User, &user_id, claims.iat)
        .await;
    refused_within(&app, &token, WITHIN).await;

    // A token issued in a later second is not covered.
    while unix_now() <= claims.iat {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = auth.sign_in("alice").await;
    call(&app, Rpc::List, &fresh).await.unwrap();
}

/// The claims of a token, read without verifying (the test only needs its `iat`).
fn token_claims(token: &str) -> Claims {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_follower_catches_up_from_its_cursor_after_auth_service_comes_back() {
    let mut auth = Auth::start(true).await;
    let app = resource(&auth, |c| {
        c.revocation_max_staleness = Duration::from_secs(1);
    })
    .await;
    let revocations = app_revocations(&app);
    health_becomes(&app, "authn.revocation", ServingStatus::Serving, WITHIN).await;
    let before = session_token("0190c2a4-7e1c-7000-8000-0000000000b1", 0);
    let during = session_token("0190c2a4-7e1c-7000-8000-0000000000b2", 0);
    auth.revoke(
        RevocationKind::Session,
        "0190c2a4-7e1c-7000-8000-0000000000b1",
        unix_now(),
    )
    .await;
    refused_within(&app, &before, WITHIN).await;
    call(&app, Rpc::List, &during).await.unwrap();

    auth.stop().await;
    auth.revoke(
        RevocationKind::Session,
        "0190c2a4-7e1c-7000-8000-0000000000b2",
        unix_now(),
    )
    .await;
    // Stale: its own health entry says so, the service itself keeps serving, and (fail-open)
    // the token revoked meanwhile is still accepted, since nobody could say so.
    health_becomes(&app, "authn.revocation", ServingStatus::NotServing, WITHIN).await;
    assert!(revocations.staleness().unwrap() > Duration::from_secs(1));
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&app, "person.v1.PersonService").await,
        ServingStatus::Serving
    );
    call(&app, Rpc::List, &during).await.unwrap();
    refused_within(&app, &before, Duration::ZERO).await;

    auth.run().await;
    refused_within(&app, &during, AFTER_OUTAGE).await;
    health_becomes(&app, "authn.revocation", ServingStatus::Serving, WITHIN).await;
    assert!(revocations.staleness().unwrap() < Duration::from_secs(1));
}

#[tokio::test]
async fn failing_closed_refuses_tokens_issued_before_the_last_good_update_while_stale() {
    let mut auth = Auth::start(true).await;
    let app = resource(&auth, |c| {
        c.revocation_max_staleness = Duration::from_secs(1);
        c.revocation_fail_closed = true;
    })
    .await;
    health_becomes(&app, "authn.revocation", ServingStatus::Serving, WITHIN).await;
    let old = session_token("0190c2a4-7e1c-7000-8000-0000000000c1", 10);
    call(&app, Rpc::List, &old).await.unwrap();

    auth.stop().await;
    health_becomes(&app, "authn.revocation", ServingStatus::NotServing, WITHIN).await;
    let status = refused_within(&app, &old, Duration::ZERO).await;
    assert!(status.message().contains("sign in again"), "{status:?}");
    // Issued after the last good update (which is over a second old): accepted.
    let new = session_token("0190c2a4-7e1c-7000-8000-0000000000c2", 0);
    call(&app, Rpc::List, &new).await.unwrap();
    assert_eq!(health(&app, "").await, ServingStatus::Serving);

    auth.run().await;
    health_becomes(
        &app,
        "authn.revocation",
        ServingStatus::Serving,
        AFTER_OUTAGE,
    )
    .await;
    call(&app, Rpc::List, &old).await.unwrap();
}

fn app_revocations(app: &TestApp) -> authn::Revocations {
    app.revocations.clone()
}
