//! Sessions through the gateway: the refresh token in the body and as a cookie (its flags, the
//! Origin check, rotation), sign-out, password changes, the session lists, an admin disabling a
//! user, and introspection. Against the real auth-service.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request},
};
use serde_json::{Value, json};

use crate::{
    helpers::TestResponse,
    stack::{PASSWORD, Stack, spawn_stack, spawn_stack_configured, spawn_stack_with, unique},
};

/// The gateway's own origin as the tests' requests name it.
const HOST: &str = "gw.test";
const ORIGIN: &str = "http://gw.test";

/// A request with any headers, a JSON body when given (sent without a content type when
/// `content_type` is false).
fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).expect("request")
}

async fn send(stack: &Stack, request: Request<Body>) -> TestResponse {
    stack.gateway.send(request).await
}

/// A new user: (username, id).
async fn new_user(stack: &Stack) -> (String, String) {
    let (username, token) = stack.user_with_roles(&["user"]).await;
    let me = stack.gateway.get("/api/auth/me", Some(&token)).await;
    (username, me.json()["id"].as_str().expect("id").to_owned())
}

async fn sign_in_as(stack: &Stack, username: &str, password: &str, agent: &str) -> TestResponse {
    let body = json!({"username": username, "password": password});
    send(
        stack,
        request(
            Method::POST,
            "/api/auth/signin",
            &[("user-agent", agent)],
            Some(&body),
        ),
    )
    .await
}

/// (access token, refresh token) of a fresh sign-in.
async fn tokens(stack: &Stack, username: &str) -> (String, String) {
    let response = sign_in_as(stack, username, PASSWORD, "tests").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    (
        body["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned(),
        body["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_owned(),
    )
}

/// The `Set-Cookie` of the refresh cookie, if any.
fn set_cookie(response: &TestResponse) -> Option<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("refresh_token="))
        .map(str::to_owned)
}

/// The token a `Set-Cookie` carries.
fn cookie_token(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    pair.trim_start_matches("refresh_token=").to_owned()
}

async fn refresh_by_body(stack: &Stack, refresh_token: &str) -> TestResponse {
    let body = json!({"refreshToken": refresh_token});
    send(
        stack,
        request(Method::POST, "/api/auth/refresh", &[], Some(&body)),
    )
    .await
}

async fn refresh_by_cookie(
    stack: &Stack,
    refresh_token: &str,
    origin: Option<&str>,
) -> TestResponse {
    let cookie = format!("theme=dark; refresh_token={refresh_token}");
    let mut headers = vec![("cookie", cookie.as_str()), ("host", HOST)];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    send(
        stack,
        request(Method::POST, "/api/auth/refresh", &headers, None),
    )
    .await
}

async fn me_status(stack: &Stack, access_token: &str) -> u16 {
    stack
        .gateway
        .get("/api/auth/me", Some(access_token))
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn sign_in_sets_the_refresh_cookie_with_its_flags_and_no_store() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let response = sign_in_as(&stack, &username, PASSWORD, "tests").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let refresh_token = response.json()["refreshToken"]
        .as_str()
        .expect("refreshToken in the body")
        .to_owned();
    let cookie = set_cookie(&response).expect("a refresh cookie");
    assert_eq!(cookie_token(&cookie), refresh_token);
    for flag in [
        "; HttpOnly",
        "; SameSite=Strict",
        "; Path=/api/auth",
        "; Max-Age=",
    ] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    // Plain HTTP, and no trusted proxy says otherwise.
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn a_page_that_may_spend_the_cookie_gets_the_refresh_token_in_the_cookie_only() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let body = json!({"username": username, "password": PASSWORD});
    let response = send(
        &stack,
        request(
            Method::POST,
            "/api/auth/signin",
            &[("host", HOST), ("origin", ORIGIN)],
            Some(&body),
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert!(answer.get("refreshToken").is_none(), "{answer}");
    assert!(answer["accessToken"].is_string());
    let cookie = set_cookie(&response).expect("a refresh cookie");
    // The cookie works from that page.
    let refreshed = refresh_by_cookie(&stack, &cookie_token(&cookie), Some(ORIGIN)).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
}

#[tokio::test]
async fn the_cookie_is_secure_only_when_a_trusted_proxy_says_https() {
    let stack = spawn_stack_with(1, |config| {
        config.trusted_proxies = vec!["127.0.0.1".to_owned()];
    })
    .await;
    let (username, _) = new_user(&stack).await;
    let sign_in = |peer: [u8; 4], proto: &'static str| {
        let body = json!({"username": username, "password": PASSWORD});
        let mut request = request(
            Method::POST,
            "/api/auth/signin",
            &[("x-forwarded-proto", proto)],
            Some(&body),
        );
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        request
    };
    let proxied = send(&stack, sign_in([127, 0, 0, 1], "https")).await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let cookie = set_cookie(&proxied).expect("cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");

    let plain = send(&stack, sign_in([127, 0, 0, 1], "http")).await;
    assert!(!set_cookie(&plain).expect("cookie").contains("Secure"));
    // Anyone else claiming https is not believed.
    let claimed = send(&stack, sign_in([192, 0, 2, 1], "https")).await;
    assert!(!set_cookie(&claimed).expect("cookie").contains("Secure"));
}

#[tokio::test]
async fn a_refresh_in_the_body_answers_in_the_body_only() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    let response = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(set_cookie(&response), None);
    let body = response.json();
    assert_eq!(body["tokenType"], "Bearer");
    assert!(body["expiresIn"].as_i64().unwrap_or_default() > 0);
    let next = body["refreshToken"]
        .as_str()
        .expect("refreshToken")
        .to_owned();
    assert_ne!(next, refresh_token);
    let access_token = body["accessToken"].as_str().expect("accessToken");
    assert_eq!(me_status(&stack, access_token).await, 200);
    // The successor is spendable in turn.
    let again = refresh_by_body(&stack, &next).await;
    assert_eq!(again.status, 200, "{}", again.text());
}

#[tokio::test]
async fn a_refresh_by_cookie_rotates_the_cookie_and_keeps_the_token_out_of_the_body() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    // No body and no content type: what the page's fetch sends.
    let response = refresh_by_cookie(&stack, &refresh_token, Some(ORIGIN)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let body = response.json();
    assert!(body.get("refreshToken").is_none(), "{body}");
    assert_eq!(
        me_status(&stack, body["accessToken"].as_str().unwrap()).await,
        200
    );
    let cookie = set_cookie(&response).expect("a rotated cookie");
    assert!(cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"));
    let next = cookie_token(&cookie);
    assert_ne!(next, refresh_token);
    let again = refresh_by_cookie(&stack, &next, Some(ORIGIN)).await;
    assert_eq!(again.status, 200, "{}", again.text());
}

#[tokio::test]
async fn an_unknown_refresh_token_is_a_401_and_its_cookie_is_cleared() {
    let stack = spawn_stack().await;
    let by_body = refresh_by_body(&stack, "no-such-refresh-token").await;
    assert_eq!(by_body.status, 401, "{}", by_body.text());
    assert_eq!(by_body.error_code(), "unauthenticated");
    let by_cookie = refresh_by_cookie(&stack, "no-such-refresh-token", Some(ORIGIN)).await;
    assert_eq!(by_cookie.status, 401, "{}", by_cookie.text());
    let cleared = set_cookie(&by_cookie).expect("the dead cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let nothing = send(
        &stack,
        request(Method::POST, "/api/auth/refresh", &[], None),
    )
    .await;
    assert_eq!(nothing.status, 401, "{}", nothing.text());
}

#[tokio::test]
async fn a_cookie_is_spent_only_from_an_allowed_origin() {
    let stack = spawn_stack_with(1, |config| {
        config.cookie_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    for origin in [
        None,
        Some("https://evil.example"),
        Some("null"),
        Some("http://gw.test:8081"),
    ] {
        let response = refresh_by_cookie(&stack, &refresh_token, origin).await;
        assert_eq!(response.status, 403, "{origin:?}: {}", response.text());
        assert_eq!(response.error_code(), "origin_not_allowed");
    }
    // The refused attempts spent nothing: a listed origin may still use it.
    let listed = refresh_by_cookie(&stack, &refresh_token, Some("https://app.example")).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
}

#[tokio::test]
async fn a_body_token_wins_over_the_cookie_whatever_the_origin() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    let body = json!({"refreshToken": refresh_token});
    let headers = [
        ("cookie", "refresh_token=some-other-token"),
        ("origin", "https://elsewhere.example"),
    ];
    let response = send(
        &stack,
        request(Method::POST, "/api/auth/refresh", &headers, Some(&body)),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.json()["refreshToken"].is_string());
    assert_eq!(set_cookie(&response), None);
}

#[tokio::test]
async fn sign_out_is_a_204_every_time_clears_the_cookie_and_ends_the_refresh_token() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (access_token, refresh_token) = tokens(&stack, &username).await;
    let bearer = format!("Bearer {access_token}");
    for _ in 0..2 {
        // No body and no content type, from the gateway's own page.
        let headers = [
            ("authorization", bearer.as_str()),
            ("host", HOST),
            ("origin", ORIGIN),
        ];
        let response = send(
            &stack,
            request(Method::POST, "/api/auth/signout", &headers, None),
        )
        .await;
        assert_eq!(response.status, 204, "{}", response.text());
        let cleared = set_cookie(&response).expect("the cookie is cleared");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }
    let refresh = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(refresh.status, 401, "{}", refresh.text());
    let nothing = send(
        &stack,
        request(Method::POST, "/api/auth/signout", &[], None),
    )
    .await;
    assert_eq!(nothing.status, 204, "{}", nothing.text());
}

#[tokio::test]
async fn an_expired_access_token_still_signs_its_session_out() {
    // auth-service's shortest access-token lifetime; verifiers allow 5 s of clock skew beyond.
    let ttl = Duration::from_secs(10);
    let stack = spawn_stack_configured(1, |auth| auth.access_token_ttl = ttl, |_| {}).await;
    let (username, _) = new_user(&stack).await;
    let (access_token, refresh_token) = tokens(&stack, &username).await;
    tokio::time::sleep(ttl + Duration::from_secs(token::LEEWAY_SECS + 1)).await;
    assert_eq!(
        me_status(&stack, &access_token).await,
        401,
        "the token should have expired"
    );
    let bearer = format!("Bearer {access_token}");
    let response = send(
        &stack,
        request(
            Method::POST,
            "/api/auth/signout",
            &[("authorization", &bearer)],
            None,
        ),
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.text());
    let refresh = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(
        refresh.status,
        401,
        "the session outlived sign-out: {}",
        refresh.text()
    );
}

#[tokio::test]
async fn sign_out_by_the_cookie_alone_ends_that_session() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    let cookie = format!("refresh_token={refresh_token}");
    let headers = [
        ("cookie", cookie.as_str()),
        ("host", HOST),
        ("origin", ORIGIN),
    ];
    let response = send(
        &stack,
        request(Method::POST, "/api/auth/signout", &headers, None),
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.text());
    let refresh = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(refresh.status, 401, "{}", refresh.text());
}

#[tokio::test]
async fn sign_out_from_a_foreign_or_unknown_page_neither_ends_the_cookies_session_nor_clears_it() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    let cookie = format!("refresh_token={refresh_token}");
    for origin in [Some("https://evil.example"), None] {
        let mut headers = vec![("cookie", cookie.as_str()), ("host", HOST)];
        headers.extend(origin.map(|origin| ("origin", origin)));
        let response = send(
            &stack,
            request(Method::POST, "/api/auth/signout", &headers, None),
        )
        .await;
        assert_eq!(response.status, 204, "{}", response.text());
        assert_eq!(set_cookie(&response), None, "cleared for {origin:?}");
    }
    let refresh = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(refresh.status, 200, "the session ended: {}", refresh.text());
}

#[tokio::test]
async fn two_refresh_cookies_are_refused_and_neither_is_spent_nor_ended() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (_, ours) = tokens(&stack, &username).await;
    let (other_user, _) = new_user(&stack).await;
    let (_, tossed) = tokens(&stack, &other_user).await;
    // A sibling subdomain's cookie for the parent domain comes first, as browsers order the
    // longer path first and then the older cookie.
    for cookie in [
        format!("refresh_token={tossed}; refresh_token={ours}"),
        format!("refresh_token={ours}; refresh_token={tossed}"),
    ] {
        let headers = [
            ("cookie", cookie.as_str()),
            ("host", HOST),
            ("origin", ORIGIN),
        ];
        let refresh = send(
            &stack,
            request(Method::POST, "/api/auth/refresh", &headers, None),
        )
        .await;
        assert_eq!(refresh.status, 400, "{}", refresh.text());
        assert_eq!(refresh.error_code(), "invalid_argument");
        assert!(
            refresh.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("more than one refresh_token cookie")),
            "{}",
            refresh.text()
        );
        assert_eq!(set_cookie(&refresh), None);
        let sign_out = send(
            &stack,
            request(Method::POST, "/api/auth/signout", &headers, None),
        )
        .await;
        assert_eq!(sign_out.status, 204, "{}", sign_out.text());
    }
    for token in [&ours, &tossed] {
        let refresh = refresh_by_body(&stack, token).await;
        assert_eq!(refresh.status, 200, "a session ended: {}", refresh.text());
    }
}

#[tokio::test]
async fn sign_out_with_a_service_accounts_token_is_a_403_and_still_ends_the_cookies_session() {
    let stack = spawn_stack().await;
    let (id, secret, _) = crate::oauth::service_account(&stack, &["user"]).await;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &id)
        .append_pair("client_secret", &secret)
        .finish();
    let issued = stack
        .gateway
        .post_raw(
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let service_token = issued.json()["access_token"].as_str().unwrap().to_owned();
    let (username, _) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;
    let bearer = format!("Bearer {service_token}");
    let cookie = format!("refresh_token={refresh_token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
        ("host", HOST),
        ("origin", ORIGIN),
    ];
    let response = send(
        &stack,
        request(Method::POST, "/api/auth/signout", &headers, None),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.error_code(), "permission_denied");
    let cleared = set_cookie(&response).expect("the cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let refresh = refresh_by_body(&stack, &refresh_token).await;
    assert_eq!(
        refresh.status,
        401,
        "the cookie's session lives on: {}",
        refresh.text()
    );
    // The service account's token stays valid: the 403 says so.
    let introspected = stack
        .gateway
        .post(
            "/api/auth/introspect",
            Some(&service_token),
            &json!({"token": service_token}),
        )
        .await;
    assert_eq!(
        introspected.json()["active"],
        true,
        "{}",
        introspected.text()
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_of_the_user() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (access_token, _) = tokens(&stack, &username).await;
    let (_, other_refresh) = tokens(&stack, &username).await;
    let response = stack
        .gateway
        .post(
            "/api/auth/signout",
            Some(&access_token),
            &json!({"all": true}),
        )
        .await;
    assert_eq!(response.status, 204, "{}", response.text());
    let refresh = refresh_by_body(&stack, &other_refresh).await;
    assert_eq!(refresh.status, 401, "{}", refresh.text());
}

#[tokio::test]
async fn a_password_change_keeps_this_session_and_ends_the_others() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let (access_token, this_refresh) = tokens(&stack, &username).await;
    let (_, other_refresh) = tokens(&stack, &username).await;
    let new_password = "another-long-enough-password";

    let wrong = stack
        .gateway
        .put(
            "/api/auth/password",
            Some(&access_token),
            &json!({"currentPassword": "not-the-password", "newPassword": new_password}),
        )
        .await;
    // auth-service answers PERMISSION_DENIED: the caller is known, the proof is wrong.
    assert_eq!(wrong.status, 403, "{}", wrong.text());

    let changed = stack
        .gateway
        .put(
            "/api/auth/password",
            Some(&access_token),
            &json!({"currentPassword": PASSWORD, "newPassword": new_password}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text());
    assert_eq!(refresh_by_body(&stack, &other_refresh).await.status, 401);
    assert_eq!(refresh_by_body(&stack, &this_refresh).await.status, 200);
    let old = sign_in_as(&stack, &username, PASSWORD, "tests").await;
    assert_eq!(old.status, 401, "{}", old.text());
    let new = sign_in_as(&stack, &username, new_password, "tests").await;
    assert_eq!(new.status, 200, "{}", new.text());
}

#[tokio::test]
async fn the_caller_lists_their_sessions_and_ends_one() {
    let stack = spawn_stack().await;
    let (username, _) = new_user(&stack).await;
    let first = sign_in_as(&stack, &username, PASSWORD, "agent-one/1.0")
        .await
        .json();
    let second = sign_in_as(&stack, &username, PASSWORD, "agent-two/2.0")
        .await
        .json();
    let access_token = first["accessToken"].as_str().unwrap();

    let list = stack
        .gateway
        .get("/api/auth/sessions", Some(access_token))
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let sessions = list.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The user_with_roles sign-in is a session too.
    assert!(sessions.len() >= 2, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{sessions:?}");
    assert_eq!(current[0]["userAgent"], "agent-one/1.0");
    assert!(current[0]["createdAt"].is_string(), "{sessions:?}");
    let other = sessions
        .iter()
        .find(|s| s["userAgent"] == "agent-two/2.0")
        .expect("the second session listed");
    let other_id = other["id"].as_str().unwrap();

    let path = format!("/api/auth/sessions/{other_id}");
    let ended = stack.gateway.delete(&path, Some(access_token)).await;
    assert_eq!(ended.status, 204, "{}", ended.text());
    let refresh = refresh_by_body(&stack, second["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refresh.status, 401, "{}", refresh.text());
    let list = stack
        .gateway
        .get("/api/auth/sessions", Some(access_token))
        .await
        .json();
    let ids: Vec<&Value> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert!(!ids.contains(&&json!(other_id)), "{list}");
}

#[tokio::test]
async fn an_admin_ends_a_users_sessions_and_disables_and_enables_the_account() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let (username, id) = new_user(&stack).await;
    let (_, refresh_token) = tokens(&stack, &username).await;

    let path = format!("/api/admin/users/{id}/sessions");
    let list = stack.gateway.get(&path, Some(&admin)).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let sessions = list.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!sessions.is_empty());
    let one = sessions[0]["id"].as_str().unwrap();
    let shown = stack
        .gateway
        .get(&format!("{path}/{one}"), Some(&admin))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.json(), sessions[0]);
    let ended = stack
        .gateway
        .delete(&format!("{path}/{one}"), Some(&admin))
        .await;
    assert_eq!(ended.status, 204, "{}", ended.text());
    let all = stack.gateway.delete(&path, Some(&admin)).await;
    assert_eq!(all.status, 204, "{}", all.text());
    assert_eq!(refresh_by_body(&stack, &refresh_token).await.status, 401);
    let left = stack.gateway.get(&path, Some(&admin)).await.json();
    assert_eq!(left["sessions"], json!([]), "{left}");
    let gone = stack
        .gateway
        .get(&format!("{path}/{one}"), Some(&admin))
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());

    let disabled = stack
        .gateway
        .post(
            &format!("/api/admin/users/{id}/disable"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    let refused = sign_in_as(&stack, &username, PASSWORD, "tests").await;
    assert!(
        refused.status.is_client_error(),
        "{}: {}",
        refused.status,
        refused.text()
    );

    let enabled = stack
        .gateway
        .post(
            &format!("/api/admin/users/{id}/enable"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.text());
    assert_eq!(enabled.json()["disabled"], false);
    let back = sign_in_as(&stack, &username, PASSWORD, "tests").await;
    assert_eq!(back.status, 200, "{}", back.text());
}

#[tokio::test]
async fn only_admins_see_others_sessions_or_disable_accounts() {
    let stack = spawn_stack().await;
    let (_, id) = new_user(&stack).await;
    let user = stack.user_token().await;
    let sessions = format!("/api/admin/users/{id}/sessions");
    assert_eq!(stack.gateway.get(&sessions, Some(&user)).await.status, 403);
    assert_eq!(
        stack.gateway.delete(&sessions, Some(&user)).await.status,
        403
    );
    let disable = format!("/api/admin/users/{id}/disable");
    let refused = stack.gateway.post(&disable, Some(&user), &json!({})).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        stack.gateway.post(&disable, None, &json!({})).await.status,
        401
    );
}

#[tokio::test]
async fn introspection_shows_an_active_tokens_claims_and_nothing_else_for_an_inactive_one() {
    let stack = spawn_stack().await;
    let (username, id) = new_user(&stack).await;
    let (access_token, _) = tokens(&stack, &username).await;
    let caller = stack.user_token().await;

    let active = stack
        .gateway
        .post(
            "/api/auth/introspect",
            Some(&caller),
            &json!({"token": access_token}),
        )
        .await;
    assert_eq!(active.status, 200, "{}", active.text());
    assert_eq!(active.header("cache-control"), Some("no-store"));
    let claims = active.json();
    assert_eq!(claims["active"], true, "{claims}");
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["username"], username.as_str());
    assert!(claims["exp"].as_i64().unwrap_or_default() > 0, "{claims}");

    let garbage = stack
        .gateway
        .post(
            "/api/auth/introspect",
            Some(&caller),
            &json!({"token": unique("garbage")}),
        )
        .await;
    assert_eq!(garbage.status, 200, "{}", garbage.text());
    assert_eq!(garbage.json(), json!({"active": false}));

    let signed_out = stack
        .gateway
        .post("/api/auth/signout", Some(&access_token), &json!({}))
        .await;
    assert_eq!(signed_out.status, 204);
    let ended = stack
        .gateway
        .post(
            "/api/auth/introspect",
            Some(&caller),
            &json!({"token": access_token}),
        )
        .await;
    assert_eq!(ended.json(), json!({"active": false}));

    let anonymous = stack
        .gateway
        .post(
            "/api/auth/introspect",
            None,
            &json!({"token": access_token}),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn an_optional_body_is_empty_or_json_never_whitespace() {
    let stack = spawn_stack().await;
    let empty = stack
        .gateway
        .post_raw("/api/auth/signout", Some("application/json"), "")
        .await;
    assert_eq!(empty.status, 204, "{}", empty.text());
    for body in ["\n", "  ", "nope"] {
        let refused = stack
            .gateway
            .post_raw("/api/auth/signout", Some("application/json"), body)
            .await;
        assert_eq!(refused.status, 400, "{body:?}: {}", refused.text());
        assert_eq!(refused.error_code(), "invalid_argument");
    }
}
