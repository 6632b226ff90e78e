//! auth-service and resource-service replicas started in-process on port 0, and a gateway in
//! front of them, with a bootstrap admin and sample persons.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

use gateway::{Config, backend::ReplicaState};

use crate::helpers::TestGateway;

pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "a-long-enough-password";

/// One running service; dropping it stops the service.
pub struct Running {
    pub url: String,
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn spawn<F>(port: u16, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            stop: Some(stop),
            handle: Some(tokio::spawn(run(stopped))),
        }
    }

    /// Asks the service to stop (it drains in-flight calls) and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("service task")
                .expect("service stopped cleanly");
        }
    }

    /// Begins stopping without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

/// An auth-service with the bootstrap admin and whatever `adjust` changes.
pub async fn spawn_auth_with(adjust: impl FnOnce(&mut auth_service::Config)) -> Running {
    let mut config = auth_service::Config::for_tests();
    adjust(&mut config);
    config.bootstrap_admin_username = Some(ADMIN_USERNAME.to_owned());
    config.bootstrap_admin_password = Some(ADMIN_PASSWORD.into());
    config.bootstrap_admin_email = Some("admin@example.com".to_owned());
    let settings = auth_service::Settings::try_from(config).expect("valid settings");
    let app = auth_service::Application::build(settings)
        .await
        .expect("auth-service builds");
    let port = app.local_addr().port();
    Running::spawn(port, |stop| async move {
        app.run_until_stopped(async {
            let _ = stop.await;
        })
        .await
    })
}

/// A resource-service replica with its own database, on `port` (0 for any).
pub async fn spawn_resource(auth_url: &str, port: u16) -> Running {
    let mut config = resource_service::Config::for_tests().with_jwks(vec![auth_url.to_owned()]);
    config.sample_data = true;
    config.grpc_addr.set_port(port);
    let settings = resource_service::Settings::try_from(config).expect("valid settings");
    let app = resource_service::Application::build(settings)
        .await
        .expect("resource-service builds");
    let port = app.local_addr().port();
    Running::spawn(port, |stop| async move {
        app.run_until_stopped(async {
            let _ = stop.await;
        })
        .await
    })
}

pub struct Stack {
    pub gateway: TestGateway,
    pub auth: Running,
    pub resources: Vec<Running>,
}

/// One auth-service, one resource-service, a gateway; returns once every replica is serving.
pub async fn spawn_stack() -> Stack {
    spawn_stack_with(1, |_| {}).await
}

pub async fn spawn_stack_with(resource_replicas: usize, adjust: impl FnOnce(&mut Config)) -> Stack {
    spawn_stack_configured(resource_replicas, |_| {}, adjust).await
}

/// Like [`spawn_stack_with`], with auth-service's configuration adjusted too.
pub async fn spawn_stack_configured(
    resource_replicas: usize,
    adjust_auth: impl FnOnce(&mut auth_service::Config),
    adjust: impl FnOnce(&mut Config),
) -> Stack {
    telemetry::init_for_tests();
    let auth = spawn_auth_with(adjust_auth).await;
    let mut resources = Vec::new();
    for _ in 0..resource_replicas {
        resources.push(spawn_resource(&auth.url, 0).await);
    }
    let mut config = Config::for_tests(
        vec![auth.url.clone()],
        resources.iter().map(|r| r.url.clone()).collect(),
    );
    adjust(&mut config);
    let stack = Stack {
        gateway: TestGateway::from_config(config).await,
        auth,
        resources,
    };
    stack.wait_until_all_up().await;
    stack
}

impl Stack {
    /// Waits (bounded) until the gateway's health checks see every replica serving.
    pub async fn wait_until_all_up(&self) {
        self.wait_for_states(|state| state == ReplicaState::Up, "every replica up")
            .await;
    }

    /// Waits (bounded) until `accept` holds for every resource replica's state as the gateway
    /// sees it, and auth-service is up.
    pub async fn wait_for_states(&self, accept: impl Fn(ReplicaState) -> bool, what: &str) {
        for _ in 0..200 {
            let auth_up = self.gateway.state.auth.is_ready();
            let replicas = self.gateway.state.resource.replicas();
            if auth_up && replicas.iter().all(|r| accept(r.state())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gave up waiting for {what}");
    }

    /// Waits (bounded) until the gateway sees the resource replica at `index` in `state`.
    pub async fn wait_for_states_of(&self, index: usize, state: ReplicaState) {
        let url = self.resources[index].url.clone();
        for _ in 0..200 {
            let replicas = self.gateway.state.resource.replicas();
            if replicas.iter().any(|r| r.uri == url && r.state() == state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gave up waiting for {url} to be {state:?}");
    }

    pub async fn admin_token(&self) -> String {
        self.sign_in(ADMIN_USERNAME, ADMIN_PASSWORD).await
    }

    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let response = self
            .gateway
            .post(
                "/api/auth/signin",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(response.status, 200, "sign-in failed: {}", response.text());
        response.json()["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned()
    }

    /// A new account with these roles (created by the admin when beyond user); its token.
    pub async fn user_with_roles(&self, roles: &[&str]) -> (String, String) {
        let username = unique("user");
        let admin = if roles.iter().any(|r| *r != "user") {
            Some(self.admin_token().await)
        } else {
            None
        };
        let response = self
            .gateway
            .post(
                "/api/auth/signup",
                admin.as_deref(),
                &json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                    "roles": roles,
                }),
            )
            .await;
        assert_eq!(response.status, 200, "sign-up failed: {}", response.text());
        let token = self.sign_in(&username, PASSWORD).await;
        (username, token)
    }

    pub async fn user_token(&self) -> String {
        self.user_with_roles(&["user"]).await.1
    }

    pub async fn moderator_token(&self) -> String {
        self.user_with_roles(&["user", "moderator"]).await.1
    }

    pub async fn create_person(&self, token: &str, name: &str) -> Value {
        let response = self
            .gateway
            .post(
                "/api/persons",
                Some(token),
                &json!({"name": name, "email": format!("{}@example.com", unique("p")), "age": 30}),
            )
            .await;
        assert_eq!(response.status, 201, "create failed: {}", response.text());
        response.json()
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}{n}x{nanos:x}")
}
