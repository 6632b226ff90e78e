//! Starting the gateway (and, for most tests, auth-service and resource-service) in-process, and
//! calling the gateway's router without a socket.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use gateway::{AppState, Config, Settings, app};

/// A gateway whose backends are nowhere: only for what the gateway answers on its own.
pub async fn gateway_without_backends() -> TestGateway {
    telemetry::init_for_tests();
    // Port 9 (discard) on loopback: nothing listens, so every connection is refused at once.
    let config = Config::for_tests(
        vec!["http://127.0.0.1:9".to_owned()],
        vec!["http://127.0.0.1:9".to_owned()],
    );
    TestGateway::from_config(config).await
}

pub struct TestGateway {
    pub router: Router,
    pub state: AppState,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The API's error body: `{"code", "message"}`, both non-empty.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let code = body["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {body}"));
        let message = body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {body}"));
        assert!(!message.is_empty(), "empty message in {body}");
        code.to_owned()
    }
}

impl TestGateway {
    pub async fn from_config(config: Config) -> Self {
        let settings = Settings::try_from(config).expect("valid test settings");
        let state = AppState::connect(settings).await.expect("gateway state");
        Self {
            router: app(state.clone()),
            state,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.send(request(Method::GET, path, token, None)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.send(request(Method::DELETE, path, token, None)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.send(request(Method::POST, path, token, Some(body.to_string())))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.send(request(Method::PUT, path, token, Some(body.to_string())))
            .await
    }

    /// A POST with a raw body, for malformed input.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(Method::POST).uri(path);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        self.send(builder.body(body.into()).expect("request")).await
    }
}

pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Body::from(json)
        }
        None => Body::empty(),
    };
    builder.body(body).expect("request")
}
