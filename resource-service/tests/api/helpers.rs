//! Starting resource-service in-process on a random port, minting tokens for it, and fresh
//! databases for the store suite.

use std::{net::SocketAddr, time::Duration};

use proto::person::v1::{Person, person_service_client::PersonServiceClient};
use resource_service::{
    Application, Config, Settings, config::TEST_HS256_SECRET, domain::PersonFields, store::Store,
};
use token::{Audience, Hs256Secret, Issuer, Role, SigningKey};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, transport::Channel};

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    /// Where `/metrics` is served, when the configuration asked for it.
    pub metrics: Option<SocketAddr>,
    pub revocations: authn::Revocations,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// resource-service on SQLite with HS256 tokens from [`Config::for_tests`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Config::for_tests()).await
}

pub async fn spawn_app_with(config: Config) -> TestApp {
    telemetry::init_for_tests();
    let settings = Settings::try_from(config).expect("a valid test configuration");
    let app = Application::build(settings)
        .await
        .expect("build resource-service");
    let addr = app.local_addr();
    let store = app.store();
    let metrics = app.metrics_addr();
    let revocations = app.revocations();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        store,
        metrics,
        revocations,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect to resource-service")
    }

    pub async fn client(&self) -> PersonServiceClient<Channel> {
        PersonServiceClient::new(self.channel().await)
    }

    /// Tells the server to stop, as SIGTERM would, without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }

    /// Seeds a person straight into the store, whatever the token mode of the app.
    pub async fn create(&self, name: &str, email: &str, age: i32) -> Person {
        let p = self
            .store
            .create(&fields(name, email, age))
            .await
            .expect("create person");
        Person {
            person_id: p.id.0,
            name: p.fields.name.as_ref().to_owned(),
            email: p.fields.email.as_ref().to_owned(),
            age: p.fields.age.get(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Signs tokens the way an HS256 auth-service configured with the test secret would.
pub fn hs256_issuer() -> Issuer {
    let secret = Hs256Secret::new(TEST_HS256_SECRET.as_bytes()).expect("secret");
    Issuer::new(
        SigningKey::Hs256(secret),
        Audience::default(),
        Duration::from_secs(900),
    )
    .expect("issuer")
}

pub fn hs256_token(roles: &[Role]) -> String {
    hs256_issuer()
        .issue("user-1", "alice", roles)
        .expect("issue")
        .token
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

pub fn fields(name: &str, email: &str, age: i32) -> PersonFields {
    PersonFields::parse(name.into(), email.into(), age).expect("valid person")
}

/// A migrated store on a fresh SQLite file.
pub async fn sqlite_store() -> Store {
    let url = Config::for_tests()
        .database_url
        .expect("test config has a URL");
    let store = Store::connect(secrecy::ExposeSecret::expose_secret(&url))
        .await
        .expect("open SQLite");
    assert!(matches!(store, Store::Sqlite(_)));
    store
}

/// A migrated store on a fresh PostgreSQL database.
pub async fn postgres_store() -> Store {
    let store = Store::connect(&fresh_postgres_database().await)
        .await
        .expect("connect to the fresh PostgreSQL database");
    assert!(matches!(store, Store::Postgres(_)));
    store
}

/// The URL of a new, empty database in the cluster `DATABASE_URL` points at. Tests never skip
/// PostgreSQL: without `DATABASE_URL` they fail and say what to do.
pub async fn fresh_postgres_database() -> String {
    testdb::create_database("resource_test").await
}
