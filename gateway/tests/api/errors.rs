//! What the gateway answers on its own: bad input, unknown routes, oversized bodies, unreachable
//! backends; always the JSON error model, never a 500 or plain text.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{gateway_without_backends, request};

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_message() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post_raw(
            "/api/auth/signin",
            Some("application/json"),
            "{\"username\": ",
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.error_code(), "invalid_argument");
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
}

#[tokio::test]
async fn a_missing_field_is_named_in_the_400() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post(
            "/api/auth/signup",
            None,
            &json!({"username": "ann", "password": "pw"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    let message = response.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("missing field `email`"), "{message}");
}

#[tokio::test]
async fn a_wrong_type_is_a_400() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post(
            "/api/persons",
            Some("t"),
            &json!({"name": "Ann", "email": "a@b.c", "age": "old"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid type")
    );
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post_raw("/api/auth/signin", Some("text/plain"), "{}")
        .await;
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.error_code(), "unsupported_media_type");
}

/// serde would read an array as a struct's fields in order; the API's bodies are objects.
#[tokio::test]
async fn an_array_body_is_a_400_with_or_without_a_required_body() {
    let gateway = gateway_without_backends().await;
    for (path, body) in [
        ("/api/auth/signin", r#"["ann", "a password"]"#),
        ("/api/auth/signin", " \n[]"),
        ("/api/auth/refresh", "[]"),
        ("/api/auth/signout", r#"["a refresh token"]"#),
    ] {
        let response = gateway.post_raw(path, Some("application/json"), body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(response.error_code(), "invalid_argument", "{path} {body}");
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("expected a JSON object"), "{message}");
    }
}

#[tokio::test]
async fn a_json_content_type_with_parameters_or_a_json_suffix_is_accepted() {
    let gateway = gateway_without_backends().await;
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let response = gateway
            .post_raw(
                "/api/auth/signin",
                Some(content_type),
                r#"{"username": "ann", "password": "a password"}"#,
            )
            .await;
        // Read and passed on: no backend answers here.
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{content_type}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let gateway = gateway_without_backends().await;
    let padding = "x".repeat(200 * 1024);
    let body = json!({"username": padding, "password": "pw"}).to_string();
    let response = gateway
        .post_raw("/api/auth/signin", Some("application/json"), body)
        .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.error_code(), "payload_too_large");
}

#[tokio::test]
async fn an_unknown_role_at_sign_up_is_a_400() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post(
            "/api/auth/signup",
            None,
            &json!({"username": "ann", "email": "a@b.c", "password": "pw", "roles": ["root"]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown role")
    );
}

#[tokio::test]
async fn a_non_numeric_person_id_is_a_400() {
    let gateway = gateway_without_backends().await;
    let response = gateway.get("/api/persons/abc", Some("t")).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.error_code(), "invalid_argument");
}

#[tokio::test]
async fn a_person_id_out_of_range_is_a_400_in_the_apis_words() {
    let gateway = gateway_without_backends().await;
    for id in ["99999999999999999999999", "0", "-1", "1.5"] {
        let response = gateway.get(&format!("/api/persons/{id}"), Some("t")).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(response.error_code(), "invalid_argument");
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert_eq!(
            message,
            "invalid path: a person id must be a whole number from 1 to 9223372036854775807",
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_bad_query_parameter_is_a_400() {
    let gateway = gateway_without_backends().await;
    let response = gateway.get("/api/persons?pageSize=many", Some("t")).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("pageSize")
    );
}

#[tokio::test]
async fn an_unusable_authorization_header_is_a_401_invalid_token() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .send(
            axum::http::Request::builder()
                .uri("/api/auth/me")
                .header("authorization", "Basic YTpi")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let challenge = response.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let gateway = gateway_without_backends().await;
    let response = gateway.get("/api/nothing-here", None).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.error_code(), "not_found");
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .send(request(Method::PATCH, "/api/persons", None, None))
        .await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.error_code(), "method_not_allowed");
}

#[tokio::test]
async fn unreachable_backends_are_a_503_without_internals() {
    let gateway = gateway_without_backends().await;
    let response = gateway
        .post(
            "/api/auth/signin",
            None,
            &json!({"username": "ann", "password": "pw"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.error_code(), "unavailable");
    let message = response.json()["message"].as_str().unwrap().to_owned();
    assert!(!message.contains("127.0.0.1"), "{message}");
    assert!(!message.to_lowercase().contains("transport"), "{message}");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn readiness_fails_while_no_backend_answers_and_liveness_does_not() {
    let gateway = gateway_without_backends().await;
    let live = gateway.get("/healthz", None).await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = gateway.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["status"], "not_ready");
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_echoed_when_sent() {
    let gateway = gateway_without_backends().await;
    let generated = gateway.get("/healthz", None).await;
    assert!(
        !generated
            .header("x-request-id")
            .unwrap_or_default()
            .is_empty()
    );
    let echoed = gateway
        .send(
            axum::http::Request::builder()
                .uri("/api/nothing")
                .header("x-request-id", "trace-me-42")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-me-42"));
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let gateway = gateway_without_backends().await;
    let page = gateway.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.text().contains("/app.js"));
    let script = gateway.get("/app.js", None).await;
    assert!(
        !script.text().contains("innerHTML"),
        "the page must not build DOM from strings"
    );
    assert!(
        !script.text().contains("document.cookie"),
        "the token must never go to a cookie"
    );
}
