//! The admin's service-account routes against a real auth-service: create (the secret shown
//! once, never cached), list, disable and enable, rotate the secret, delete, and the statuses of
//! their refusals.

use axum::http::StatusCode;
use serde_json::json;

use crate::{
    oauth::service_account,
    stack::{spawn_stack, unique},
};

const BASE: &str = "/api/admin/service-accounts";

/// Whether the client credentials get a token.
async fn gets_token(stack: &crate::stack::Stack, id: &str, secret: &str) -> bool {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", id)
        .append_pair("client_secret", secret)
        .finish();
    let response = stack
        .gateway
        .post_raw(
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            body,
        )
        .await;
    match response.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}: {}", response.text()),
    }
}

#[tokio::test]
async fn an_admin_creates_a_service_account_whose_secret_is_shown_once() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let name = unique("reporting-");
    let created = stack
        .gateway
        .post(
            BASE,
            Some(&admin),
            &json!({"name": name, "roles": ["ROLE_MODERATOR"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let body = created.json();
    assert_eq!(body["name"], name.as_str());
    assert_eq!(body["roles"], json!(["user", "moderator"]));
    assert_eq!(body["disabled"], false);
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'), "{body}");
    let id = body["clientId"].as_str().unwrap().to_owned();
    let secret = body["clientSecret"].as_str().unwrap().to_owned();
    assert!(gets_token(&stack, &id, &secret).await);

    // Listed, without any secret.
    let list = stack
        .gateway
        .get(&format!("{BASE}?pageSize=100"), Some(&admin))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert!(!list.text().contains(&secret));
    let listed = list.json()["serviceAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["clientId"] == id.as_str())
        .cloned()
        .expect("the new account is listed");
    assert_eq!(listed["name"], name.as_str());
    assert!(listed.get("clientSecret").is_none());

    // The same name again is a conflict; names and roles outside the rules are a 400.
    let again = stack
        .gateway
        .post(BASE, Some(&admin), &json!({"name": name}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(again.error_code(), "already_exists");
    for bad in [
        json!({"name": "x"}),
        json!({"name": "Upper-Case"}),
        json!({"name": unique("svc-"), "roles": ["admin"]}),
        json!({"name": unique("svc-"), "roles": ["root"]}),
        json!({"name": unique("svc-"), "roles": vec!["user"; 9]}),
    ] {
        let response = stack.gateway.post(BASE, Some(&admin), &bad).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            response.text()
        );
    }
}

#[tokio::test]
async fn only_admins_manage_service_accounts() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let list = stack.gateway.get(BASE, Some(&moderator)).await;
    assert_eq!(list.status, StatusCode::FORBIDDEN, "{}", list.text());
    let create = stack
        .gateway
        .post(BASE, Some(&moderator), &json!({"name": unique("svc-")}))
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "{}", create.text());
    let anonymous = stack.gateway.get(BASE, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_disabled_account_gets_no_token_until_enabled_and_a_deleted_one_never() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let (id, secret, _) = service_account(&stack, &["user"]).await;

    let disabled = stack
        .gateway
        .post(&format!("{BASE}/{id}/disable"), Some(&admin), &json!({}))
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    assert!(!gets_token(&stack, &id, &secret).await);
    let enabled = stack
        .gateway
        .post(&format!("{BASE}/{id}/enable"), Some(&admin), &json!({}))
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.text());
    assert_eq!(enabled.json()["disabled"], false);
    assert!(gets_token(&stack, &id, &secret).await);

    let deleted = stack
        .gateway
        .delete(&format!("{BASE}/{id}"), Some(&admin))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert!(!gets_token(&stack, &id, &secret).await);
    let gone = stack
        .gateway
        .delete(&format!("{BASE}/{id}"), Some(&admin))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text());
    for action in ["disable", "enable", "secret"] {
        let response = stack
            .gateway
            .post(&format!("{BASE}/{id}/{action}"), Some(&admin), &json!({}))
            .await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{action}: {}",
            response.text()
        );
    }
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_old_one_after_the_overlap() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let (id, old, _) = service_account(&stack, &["user"]).await;
    let path = format!("{BASE}/{id}/secret");

    // With the default overlap both work.
    let rotated = stack
        .gateway
        .post_raw(&path, None, axum::body::Body::empty())
        .await;
    assert_eq!(
        rotated.status,
        StatusCode::UNAUTHORIZED,
        "no token, no rotation"
    );
    let rotated = stack.gateway.post(&path, Some(&admin), &json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let body = rotated.json();
    let new = body["clientSecret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(body["previousSecretExpiresAt"].is_string(), "{body}");
    assert!(gets_token(&stack, &id, &new).await);
    assert!(gets_token(&stack, &id, &old).await);

    // Without overlap the previous one stops at once.
    let rotated = stack
        .gateway
        .post(&path, Some(&admin), &json!({"overlapSeconds": 0.0}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let newest = rotated.json()["clientSecret"].as_str().unwrap().to_owned();
    assert!(gets_token(&stack, &id, &newest).await);
    assert!(!gets_token(&stack, &id, &new).await);

    for bad in [
        json!({"overlapSeconds": -1}),
        json!({"overlapSeconds": 2_592_001}),
        json!({"overlapSeconds": 1.5}),
        json!({"overlapSeconds": "1h"}),
    ] {
        let response = stack.gateway.post(&path, Some(&admin), &bad).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            response.text()
        );
    }
}

#[tokio::test]
async fn client_ids_other_than_hyphenated_uuids_are_a_400_and_unknown_ones_a_404() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    for id in [
        "whoever",
        "00000000000000000000000000000000",
        "%7B00000000-0000-0000-0000-000000000000%7D",
    ] {
        let response = stack
            .gateway
            .delete(&format!("{BASE}/{id}"), Some(&admin))
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{id}: {}",
            response.text()
        );
        assert_eq!(response.error_code(), "invalid_argument");
    }
    let unknown = stack
        .gateway
        .delete(
            &format!("{BASE}/00000000-0000-0000-0000-000000000000"),
            Some(&admin),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
}
