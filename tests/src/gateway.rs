//! gateway replicas and the HTTP calls the scenarios make through them.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{process::Process, services::Credentials};

pub struct Gateway {
    pub process: Process,
    pub addr: SocketAddr,
    /// Where it serves `/metrics` (`GATEWAY_METRICS_ADDR`).
    pub metrics: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    auth_replicas: usize,
    resource_replicas: usize,
    http: Client,
}

/// The answer to `POST /api/auth/signin`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    pub id: String,
    pub username: String,
    pub email: String,
    pub roles: Vec<String>,
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

/// The two ways the tutorials' clients send a token.
#[derive(Clone, Copy, Debug)]
pub enum HeaderStyle {
    Bearer,
    XAccessToken,
}

impl Gateway {
    /// Starts a gateway in front of these replicas without waiting for it.
    pub fn spawn(auth_urls: &[String], resource_urls: &[String], label: &str) -> Self {
        Self::spawn_with(auth_urls, resource_urls, label, &[])
    }

    /// [`Gateway::spawn`] with more settings, e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn spawn_with(
        auth_urls: &[String],
        resource_urls: &[String],
        label: &str,
        extra: &[(&'static str, String)],
    ) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        Self::spawn_at(addr, auth_urls, resource_urls, label, extra)
    }

    /// [`Gateway::spawn_with`] on a given address, for settings that name the gateway's own
    /// URL (`GATEWAY_TOKEN_ISSUER`).
    pub fn spawn_at(
        addr: SocketAddr,
        auth_urls: &[String],
        resource_urls: &[String],
        label: &str,
        extra: &[(&'static str, String)],
    ) -> Self {
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let mut env = vec![
            ("GATEWAY_HTTP_ADDR", addr.to_string()),
            ("GATEWAY_METRICS_ADDR", metrics.to_string()),
            ("GATEWAY_AUTH_URL", auth_urls.join(",")),
            ("GATEWAY_RESOURCE_URL", resource_urls.join(",")),
            ("GATEWAY_FORWARDING_SECRET", crate::FORWARDING_SECRET.into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ];
        env.extend(extra.iter().cloned());
        let process = Process::spawn("gateway", label, &env);
        Self {
            process,
            addr,
            metrics,
            url: format!("http://{addr}"),
            auth_replicas: auth_urls.len(),
            resource_replicas: resource_urls.len(),
            // Plain HTTP to 127.0.0.1: never through a proxy from the environment.
            http: Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    pub async fn start(auth_urls: &[String], resource_urls: &[String], label: &str) -> Self {
        let mut gateway = Self::spawn(auth_urls, resource_urls, label);
        gateway.wait_until_every_replica_is_up().await;
        gateway
    }

    /// Polls `/readyz` until it answers 200 and counts every replica it was given as up, so a
    /// scenario starts with the whole rotation in place.
    pub async fn wait_until_every_replica_is_up(&mut self) {
        let deadline = Instant::now() + crate::READY_TIMEOUT;
        loop {
            self.process.assert_running();
            let Err(last) = self.sees_every_replica_up().await else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "{} never saw every replica up within {:?} (last /readyz: {last}): {}",
                self.process.label(),
                crate::READY_TIMEOUT,
                self.process.describe()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `/readyz` answers 200 and counts every replica it was given as up; if not, what
    /// it answered.
    pub async fn sees_every_replica_up(&self) -> Result<(), String> {
        let want = json!({
            "auth": { "replicas": self.auth_replicas, "up": self.auth_replicas },
            "resource": { "replicas": self.resource_replicas, "up": self.resource_replicas },
        });
        let (status, body) = self.readyz().await?;
        if status == StatusCode::OK && body["backends"] == want {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    }

    /// `/readyz`'s status and JSON body, or why there was no answer.
    pub async fn readyz(&self) -> Result<(StatusCode, Value), String> {
        let response = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(path))
    }

    /// A GET carrying `token` in the given header style.
    pub fn get_with_token(&self, path: &str, token: &str, style: HeaderStyle) -> RequestBuilder {
        let request = self.get(path);
        match style {
            HeaderStyle::Bearer => request.bearer_auth(token),
            HeaderStyle::XAccessToken => request.header("x-access-token", token),
        }
    }

    /// Signs up a new user (role `user`) and fails the test unless the gateway says 200.
    pub async fn sign_up(&self, credentials: &Credentials) {
        let response = self
            .post("/api/auth/signup")
            .json(&json!({
                "username": credentials.username,
                "email": format!("{}@example.com", credentials.username),
                "password": credentials.password,
            }))
            .send()
            .await
            .expect("sign-up request");
        expect_ok(response, "sign-up").await;
    }

    pub async fn sign_in(&self, credentials: &Credentials) -> SignedIn {
        let response = self
            .post("/api/auth/signin")
            .json(&json!({
                "username": credentials.username,
                "password": credentials.password,
            }))
            .send()
            .await
            .expect("sign-in request");
        expect_ok(response, "sign-in")
            .await
            .json()
            .await
            .expect("a sign-in answer")
    }
}

/// Fails the test with the status and body unless the response is 200.
pub async fn expect_ok(response: Response, what: &str) -> Response {
    if response.status() == StatusCode::OK {
        return response;
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    panic!("{what} answered {status}: {body}");
}
