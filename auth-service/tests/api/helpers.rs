//! Starting auth-service for a test and talking to it.

use std::net::SocketAddr;

use auth_service::{Application, Config, Settings};
use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::Channel};

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: AuthServiceClient<Channel>,
    pub channel: Channel,
    /// Where `/metrics` is served, when the configuration asked for it.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub const PASSWORD: &str = "correct horse battery";

/// A key-encryption key for PostgreSQL, which refuses to start without one: base64 of 32 bytes.
pub const KEK: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

pub async fn spawn_app() -> TestApp {
    spawn_with(Config::for_tests()).await
}

/// The service with a bootstrap admin `root` whose password is [`PASSWORD`].
pub async fn spawn_app_with_admin() -> TestApp {
    spawn_with(with_admin(Config::for_tests())).await
}

pub fn with_admin(mut config: Config) -> Config {
    config.bootstrap_admin_username = Some("root".into());
    config.bootstrap_admin_password = Some(PASSWORD.into());
    config
}

/// The settings a test configuration stands for; test configurations are valid.
pub fn settings(config: Config) -> Settings {
    Settings::try_from(config).expect("a valid test configuration")
}

pub async fn spawn_with(config: Config) -> TestApp {
    telemetry::init_for_tests();
    let app = Application::build(settings(config))
        .await
        .expect("auth-service starts");
    let addr = app.local_addr();
    let metrics = app.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid url")
        .connect()
        .await
        .expect("connects");
    TestApp {
        addr,
        client: AuthServiceClient::new(channel.clone()),
        channel,
        metrics,
        stop: Some(stop),
        task,
    }
}

/// A config on a new, empty PostgreSQL database of the cluster named by `DATABASE_URL`.
pub async fn postgres_config() -> Config {
    let mut config = Config::for_tests();
    config.database_url = Some(fresh_postgres_database().await.into());
    config.key_encryption_key = Some(KEK.into());
    config
}

/// Creates an empty database and returns its URL. The PostgreSQL suite never skips: without
/// `DATABASE_URL` it fails, and the README's test command always provides one.
pub async fn fresh_postgres_database() -> String {
    testdb::create_database("auth_test").await
}

impl TestApp {
    pub async fn sign_up(&self, username: &str, email: &str) -> Result<pb::User, Status> {
        self.sign_up_with(pb::SignUpRequest {
            username: username.into(),
            email: email.into(),
            password: PASSWORD.into(),
            roles: vec![],
        })
        .await
    }

    pub async fn sign_up_with(&self, request: pb::SignUpRequest) -> Result<pb::User, Status> {
        Ok(self
            .client
            .clone()
            .sign_up(request)
            .await?
            .into_inner()
            .user
            .expect("user"))
    }

    pub async fn sign_in(&self, login: &str, password: &str) -> Result<pb::SignInResponse, Status> {
        Ok(self
            .client
            .clone()
            .sign_in(pb::SignInRequest {
                login: login.into(),
                password: password.into(),
            })
            .await?
            .into_inner())
    }

    /// Signs up `username` and returns its access token.
    pub async fn user_token(&self, username: &str) -> String {
        self.sign_up(username, &format!("{username}@example.com"))
            .await
            .expect("sign up");
        self.sign_in(username, PASSWORD)
            .await
            .expect("sign in")
            .access_token
    }

    pub async fn admin_token(&self) -> String {
        self.sign_in("root", PASSWORD)
            .await
            .expect("bootstrap admin signs in")
            .access_token
    }

    pub async fn jwks(&self) -> pb::GetJwksResponse {
        self.client
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Attaches `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// The fingerprint earlier releases recorded a failed attempt under, which anyone could compute:
/// the first 3 bytes of SHA-256 over the request id and each part after a zero byte.
pub fn plain_fingerprint(request_id: &str, parts: &[&str]) -> [u8; 3] {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(request_id.as_bytes());
    for part in parts {
        digest.update([0]);
        digest.update(part.as_bytes());
    }
    let hash = digest.finalize();
    [hash[0], hash[1], hash[2]]
}

/// The first `candidate(n)` (n = 0, 1, ...) whose plain fingerprint, as `parts` of it, matches
/// one of `recorded`: found offline the way the reviewer's repro did (a few million hashes, for
/// a guess that the old records took for a retry of one already counted).
pub fn plain_collision(
    request_id: &str,
    recorded: &[[u8; 3]],
    parts: impl Fn(&str) -> Vec<String>,
    candidate: impl Fn(u64) -> String,
) -> String {
    (0u64..)
        .map(candidate)
        .find(|c| {
            let parts = parts(c);
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            recorded.contains(&plain_fingerprint(request_id, &parts))
        })
        .expect("a collision within 2^64 candidates")
}
