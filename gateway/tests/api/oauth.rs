//! The OAuth 2.0 endpoints: what the gateway answers on its own (form parsing, client
//! authentication, every RFC 6749 §5.2 refusal it decides, the no-store headers, the metadata),
//! and against a real auth-service the client-credentials grant, introspection, the refusals
//! auth-service decides, and service tokens on the routes only users may call.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use base64::Engine;
use serde_json::{Value, json};

use crate::{
    helpers::{TestGateway, TestResponse, gateway_without_backends},
    stack::{Stack, spawn_stack, unique},
};

const FORM: &str = "application/x-www-form-urlencoded";

/// A POST of `body` to `path` with the given content type and `Authorization` value.
async fn post(
    gateway: &TestGateway,
    path: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: impl Into<Body>,
) -> TestResponse {
    let mut builder = Request::builder().method(Method::POST).uri(path);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    gateway
        .send(builder.body(body.into()).expect("request"))
        .await
}

async fn token(gateway: &TestGateway, authorization: Option<&str>, body: &str) -> TestResponse {
    post(
        gateway,
        "/oauth/token",
        Some(FORM),
        authorization,
        body.to_owned(),
    )
    .await
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 writes it: id and secret form-urlencoded first.
fn basic(id: &str, secret: &str) -> String {
    let encode =
        |text: &str| -> String { url::form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// An RFC 6749 §5.2 refusal: the status, the `error`, a description, and no-store.
fn refused(response: &TestResponse, status: u16, error: &str) {
    assert_eq!(response.status.as_u16(), status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    no_store(response);
}

fn no_store(response: &TestResponse) {
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));
}

#[tokio::test]
async fn only_form_bodies_are_read_and_every_refusal_is_rfc_6749_json_with_no_store() {
    let gateway = gateway_without_backends().await;
    for path in ["/oauth/token", "/oauth/introspect"] {
        let json_body = post(
            &gateway,
            path,
            Some("application/json"),
            None,
            r#"{"grant_type": "client_credentials"}"#,
        )
        .await;
        refused(&json_body, 415, "invalid_request");
        let untyped = post(&gateway, path, None, None, "grant_type=client_credentials").await;
        refused(&untyped, 415, "invalid_request");
        let too_large = post(&gateway, path, Some(FORM), None, "a=".repeat(64 * 1024)).await;
        refused(&too_large, 413, "invalid_request");
        let not_utf8 = post(&gateway, path, Some(FORM), None, "token=%FF&client_id=%FE").await;
        refused(&not_utf8, 400, "invalid_request");
    }
    // A charset parameter is fine.
    let with_charset = post(
        &gateway,
        "/oauth/token",
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        None,
        "grant_type=password",
    )
    .await;
    refused(&with_charset, 400, "unsupported_grant_type");
}

#[tokio::test]
async fn the_grant_type_is_required_and_only_client_credentials_is_supported() {
    let gateway = gateway_without_backends().await;
    let credentials = "client_id=svc&client_secret=s";
    let missing = token(&gateway, None, credentials).await;
    refused(&missing, 400, "invalid_request");
    assert!(missing.text().contains("grant_type"), "{}", missing.text());
    for grant in [
        "password",
        "authorization_code",
        "refresh_token",
        "CLIENT_CREDENTIALS",
    ] {
        let other = token(&gateway, None, &format!("grant_type={grant}&{credentials}")).await;
        refused(&other, 400, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn a_repeated_parameter_is_an_invalid_request() {
    let gateway = gateway_without_backends().await;
    for body in [
        "grant_type=client_credentials&grant_type=client_credentials&client_id=a&client_secret=b",
        "grant_type=client_credentials&client_id=a&client_id=a&client_secret=b",
        "grant_type=client_credentials&client_id=a&client_secret=b&client_secret=b",
        "grant_type=client_credentials&client_id=a&client_secret=b&scope=user&scope=user",
    ] {
        let response = token(&gateway, None, body).await;
        refused(&response, 400, "invalid_request");
        assert!(response.text().contains("more than once"), "{body}");
    }
    let introspect = post(
        &gateway,
        "/oauth/introspect",
        Some(FORM),
        None,
        "client_id=a&client_secret=b&token=t&token=u",
    )
    .await;
    refused(&introspect, 400, "invalid_request");
}

#[tokio::test]
async fn client_authentication_is_basic_or_form_fields_never_both() {
    let gateway = gateway_without_backends().await;
    let grant = "grant_type=client_credentials";
    // Neither: 401 without a Basic challenge.
    let none = token(&gateway, None, grant).await;
    refused(&none, 401, "invalid_client");
    assert_eq!(none.header("www-authenticate"), None);
    let no_secret = token(&gateway, None, &format!("{grant}&client_id=svc")).await;
    refused(&no_secret, 401, "invalid_client");
    // Both: 400.
    let both = token(
        &gateway,
        Some(&basic("svc", "s")),
        &format!("{grant}&client_secret=s"),
    )
    .await;
    refused(&both, 400, "invalid_request");
    let other_id = token(
        &gateway,
        Some(&basic("svc", "s")),
        &format!("{grant}&client_id=another"),
    )
    .await;
    refused(&other_id, 400, "invalid_request");
    // Malformed Basic credentials: 401 with the Basic challenge (RFC 6749 §5.2).
    for authorization in ["Basic not-base64!", "Basic c3Zj", "basic Onk="] {
        let malformed = token(&gateway, Some(authorization), grant).await;
        refused(&malformed, 401, "invalid_client");
        assert_eq!(
            malformed.header("www-authenticate"),
            Some("Basic realm=\"persons-api\""),
            "{authorization}"
        );
    }
    // Characters no client id has (RFC 6749 appendix A) are refused before any backend.
    let control = token(
        &gateway,
        None,
        &format!("{grant}&client_id=a%00&client_secret=b"),
    )
    .await;
    refused(&control, 401, "invalid_client");
}

#[tokio::test]
async fn a_scope_outside_rfc_6749_syntax_is_an_invalid_scope() {
    let gateway = gateway_without_backends().await;
    for scope in ["user++moderator", "%22user%22", "us%5Cer", "%C3%A9"] {
        let response = token(
            &gateway,
            None,
            &format!("grant_type=client_credentials&client_id=a&client_secret=b&scope={scope}"),
        )
        .await;
        refused(&response, 400, "invalid_scope");
    }
}

#[tokio::test]
async fn an_unreachable_auth_service_is_a_503_temporarily_unavailable() {
    let gateway = gateway_without_backends().await;
    let response = token(
        &gateway,
        Some(&basic("svc", "s")),
        "grant_type=client_credentials",
    )
    .await;
    refused(&response, 503, "temporarily_unavailable");
    assert!(response.header("retry-after").is_some());
    let introspect = post(
        &gateway,
        "/oauth/introspect",
        Some(FORM),
        None,
        "client_id=a&client_secret=b&token=t",
    )
    .await;
    refused(&introspect, 503, "temporarily_unavailable");
}

#[tokio::test]
async fn introspection_needs_client_authentication_and_a_token() {
    let gateway = gateway_without_backends().await;
    let anonymous = post(&gateway, "/oauth/introspect", Some(FORM), None, "token=t").await;
    refused(&anonymous, 401, "invalid_client");
    // A Bearer token is not client authentication.
    let bearer = post(
        &gateway,
        "/oauth/introspect",
        Some(FORM),
        Some("Bearer some-token"),
        "token=t",
    )
    .await;
    refused(&bearer, 401, "invalid_client");
    let no_token = post(
        &gateway,
        "/oauth/introspect",
        Some(FORM),
        Some(&basic("svc", "s")),
        "token_type_hint=access_token",
    )
    .await;
    refused(&no_token, 400, "invalid_request");
}

#[tokio::test]
async fn the_token_endpoint_takes_post_only() {
    let gateway = gateway_without_backends().await;
    let response = gateway.get("/oauth/token", None).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_metadata_names_the_endpoints_under_the_issuer() {
    let mut config = gateway::Config::for_tests(
        vec!["http://127.0.0.1:9".to_owned()],
        vec!["http://127.0.0.1:9".to_owned()],
    );
    config.token_issuer = "https://api.example/".to_owned();
    let gateway = TestGateway::from_config(config).await;
    let response = gateway
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=300")
    );
    let metadata = response.json();
    assert_eq!(
        metadata,
        json!({
            "issuer": "https://api.example/",
            "token_endpoint": "https://api.example/oauth/token",
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "jwks_uri": "https://api.example/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "scopes_supported": ["user", "moderator"],
            "introspection_endpoint": "https://api.example/oauth/introspect",
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post"],
        })
    );
    // Only endpoints that exist are advertised.
    assert!(metadata.get("revocation_endpoint").is_none());
    assert!(metadata.get("authorization_endpoint").is_none());
}

/// A service account created through the admin API: (client id, secret, the whole answer).
pub async fn service_account(stack: &Stack, roles: &[&str]) -> (String, String, Value) {
    let admin = stack.admin_token().await;
    let response = stack
        .gateway
        .post(
            "/api/admin/service-accounts",
            Some(&admin),
            &json!({"name": unique("svc-"), "roles": roles}),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let body = response.json();
    let id = body["clientId"].as_str().expect("clientId").to_owned();
    let secret = body["clientSecret"]
        .as_str()
        .expect("clientSecret")
        .to_owned();
    (id, secret, body)
}

#[tokio::test]
async fn a_service_account_gets_a_token_by_basic_or_by_form_fields_and_uses_it() {
    let stack = spawn_stack().await;
    let (id, secret, _) = service_account(&stack, &["user", "moderator"]).await;

    let by_basic = token(
        &stack.gateway,
        Some(&basic(&id, &secret)),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(by_basic.status, StatusCode::OK, "{}", by_basic.text());
    no_store(&by_basic);
    let issued = by_basic.json();
    assert_eq!(issued["token_type"], "Bearer");
    assert!(issued["expires_in"].as_i64().unwrap() > 0);
    let mut scope: Vec<&str> = issued["scope"].as_str().unwrap().split(' ').collect();
    scope.sort_unstable();
    assert_eq!(scope, ["moderator", "user"]);
    let access_token = issued["access_token"].as_str().unwrap().to_owned();
    let persons = stack.gateway.get("/api/persons", Some(&access_token)).await;
    assert_eq!(persons.status, StatusCode::OK, "{}", persons.text());

    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &id)
        .append_pair("client_secret", &secret)
        .append_pair("scope", "user")
        .finish();
    let by_form = token(&stack.gateway, None, &form).await;
    assert_eq!(by_form.status, StatusCode::OK, "{}", by_form.text());
    assert_eq!(by_form.json()["scope"], "user");
    // A user-scoped token may read but not create persons.
    let narrowed = by_form.json()["access_token"].as_str().unwrap().to_owned();
    let create = stack
        .gateway
        .post(
            "/api/persons",
            Some(&narrowed),
            &json!({"name": "Svc", "email": format!("{}@example.com", unique("svc")), "age": 3}),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "{}", create.text());

    // RFC 7662, authenticated as the service account.
    let introspected = post(
        &stack.gateway,
        "/oauth/introspect",
        Some(FORM),
        Some(&basic(&id, &secret)),
        format!("token={access_token}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(
        introspected.status,
        StatusCode::OK,
        "{}",
        introspected.text()
    );
    no_store(&introspected);
    let claims = introspected.json();
    assert_eq!(claims["active"], true, "{claims}");
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["sub"], format!("sa:{id}"));
    assert_eq!(claims["token_type"], "Bearer");
    for claim in ["exp", "iat", "nbf"] {
        assert!(claims[claim].as_i64().is_some(), "{claim} in {claims}");
    }
    for claim in ["scope", "username", "aud", "iss", "jti"] {
        assert!(claims[claim].as_str().is_some(), "{claim} in {claims}");
    }
    let inactive = post(
        &stack.gateway,
        "/oauth/introspect",
        Some(FORM),
        Some(&basic(&id, &secret)),
        "token=not-a-token",
    )
    .await;
    assert_eq!(inactive.status, StatusCode::OK, "{}", inactive.text());
    assert_eq!(inactive.json(), json!({"active": false}));
}

#[tokio::test]
async fn auth_service_refusals_become_rfc_6749_errors() {
    let stack = spawn_stack().await;
    let (id, secret, _) = service_account(&stack, &["user"]).await;
    // A wrong secret by Basic: 401 with the challenge; by form fields: without.
    let wrong = token(
        &stack.gateway,
        Some(&basic(&id, "not-the-secret")),
        "grant_type=client_credentials",
    )
    .await;
    refused(&wrong, 401, "invalid_client");
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Basic realm=\"persons-api\"")
    );
    let unknown = token(
        &stack.gateway,
        None,
        "grant_type=client_credentials&client_id=nobody&client_secret=x",
    )
    .await;
    refused(&unknown, 401, "invalid_client");
    assert_eq!(unknown.header("www-authenticate"), None);
    // A role the account does not hold.
    let scope = token(
        &stack.gateway,
        Some(&basic(&id, &secret)),
        "grant_type=client_credentials&scope=moderator",
    )
    .await;
    refused(&scope, 400, "invalid_scope");
    // Introspection by a caller with a wrong secret.
    let introspect = post(
        &stack.gateway,
        "/oauth/introspect",
        Some(FORM),
        Some(&basic(&id, "not-the-secret")),
        "token=t",
    )
    .await;
    refused(&introspect, 401, "invalid_client");
}

#[tokio::test]
async fn repeated_wrong_secrets_are_throttled_with_retry_after() {
    let stack = spawn_stack().await;
    let (id, _, _) = service_account(&stack, &["user"]).await;
    let mut last = None;
    for _ in 0..30 {
        let response = token(
            &stack.gateway,
            Some(&basic(&id, "not-the-secret")),
            "grant_type=client_credentials",
        )
        .await;
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            last = Some(response);
            break;
        }
        refused(&response, 401, "invalid_client");
    }
    let throttled = last.expect("30 wrong secrets in a row were never throttled");
    refused(&throttled, 429, "temporarily_unavailable");
    let delay: u64 = throttled
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(delay >= 1);
}

/// Review finding (session 13): an admin had no way to lift the throttle guesses put on a
/// service account (the users' route said 404 for a client id); its own route does.
#[tokio::test]
async fn an_admin_lifts_a_service_accounts_throttle() {
    let stack = spawn_stack().await;
    let (id, secret, _) = service_account(&stack, &["user"]).await;
    let grant = |secret: String| {
        let stack = &stack;
        let id = &id;
        async move {
            token(
                &stack.gateway,
                Some(&basic(id, &secret)),
                "grant_type=client_credentials",
            )
            .await
        }
    };
    for _ in 0..10 {
        refused(&grant("not-the-secret".into()).await, 401, "invalid_client");
    }
    refused(&grant(secret.clone()).await, 429, "temporarily_unavailable");

    let path = format!("/api/admin/service-accounts/{id}/sign-in-throttle");
    let user = stack.user_token().await;
    assert_eq!(stack.gateway.delete(&path, Some(&user)).await.status, 403);
    let admin = stack.admin_token().await;
    let unknown = stack
        .gateway
        .delete(
            "/api/admin/service-accounts/00000000-0000-4000-8000-000000000000/sign-in-throttle",
            Some(&admin),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let malformed = stack
        .gateway
        .delete(
            "/api/admin/service-accounts/x/sign-in-throttle",
            Some(&admin),
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    let cleared = stack.gateway.delete(&path, Some(&admin)).await;
    assert_eq!(cleared.status, 204, "{}", cleared.text());
    let granted = grant(secret).await;
    assert_eq!(granted.status, 200, "{}", granted.text());
}

#[tokio::test]
async fn a_service_token_is_refused_by_the_routes_only_users_may_call() {
    let stack = spawn_stack().await;
    let (id, secret, _) = service_account(&stack, &["user"]).await;
    let issued = token(
        &stack.gateway,
        Some(&basic(&id, &secret)),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
    let access_token = issued.json()["access_token"].as_str().unwrap().to_owned();
    let me = stack.gateway.get("/api/auth/me", Some(&access_token)).await;
    let sessions = stack
        .gateway
        .get("/api/auth/sessions", Some(&access_token))
        .await;
    let password = stack
        .gateway
        .put(
            "/api/auth/password",
            Some(&access_token),
            &json!({"currentPassword": "whatever-it-is", "newPassword": "another-long-one"}),
        )
        .await;
    for (route, response) in [("me", me), ("sessions", sessions), ("password", password)] {
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{route}: {}",
            response.text()
        );
        assert_eq!(response.error_code(), "permission_denied", "{route}");
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("service account"), "{route}: {message}");
    }
}
