//! The admin's user list and role changes.

use serde_json::json;

use crate::stack::{ADMIN_USERNAME, PASSWORD, spawn_stack};

#[tokio::test]
async fn an_admin_lists_the_users() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let (username, _) = stack.user_with_roles(&["user"]).await;
    let response = stack
        .gateway
        .get("/api/admin/users?pageSize=100", Some(&admin))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let users = response.json()["users"].as_array().unwrap().clone();
    let admin_entry = users
        .iter()
        .find(|u| u["username"] == ADMIN_USERNAME)
        .expect("admin listed");
    assert!(
        admin_entry["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("ROLE_ADMIN"))
    );
    assert!(users.iter().any(|u| u["username"] == username.as_str()));
}

#[tokio::test]
async fn a_non_admin_may_not_list_users_or_change_roles() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let list = stack
        .gateway
        .get("/api/admin/users", Some(&moderator))
        .await;
    assert_eq!(list.status, 403);
    let change = stack
        .gateway
        .put(
            "/api/admin/users/00000000-0000-0000-0000-000000000000/roles",
            Some(&moderator),
            &json!({"roles": ["admin"]}),
        )
        .await;
    assert_eq!(change.status, 403);
    let anonymous = stack.gateway.get("/api/admin/users", None).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn an_admin_grants_a_role_that_the_next_sign_in_carries() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let (username, token) = stack.user_with_roles(&["user"]).await;
    let id = stack.gateway.get("/api/auth/me", Some(&token)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = stack
        .gateway
        .put(
            &format!("/api/admin/users/{id}/roles"),
            Some(&admin),
            &json!({"roles": ["user", "ROLE_MODERATOR"]}),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let roles = response.json()["roles"].clone();
    assert!(
        roles.as_array().unwrap().contains(&json!("ROLE_MODERATOR")),
        "{roles}"
    );

    let token = stack.sign_in(&username, PASSWORD).await;
    let board = stack.gateway.get("/api/test/mod", Some(&token)).await;
    assert_eq!(board.status, 200);
}

#[tokio::test]
async fn role_changes_for_unknown_users_or_roles_are_refused() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let unknown_role = stack
        .gateway
        .put(
            "/api/admin/users/whoever/roles",
            Some(&admin),
            &json!({"roles": ["superuser"]}),
        )
        .await;
    assert_eq!(unknown_role.status, 400);
    let unknown_user = stack
        .gateway
        .put(
            "/api/admin/users/00000000-0000-0000-0000-000000000000/roles",
            Some(&admin),
            &json!({"roles": ["user"]}),
        )
        .await;
    assert!(
        unknown_user.status == 404 || unknown_user.status == 400,
        "{}: {}",
        unknown_user.status,
        unknown_user.text()
    );
}

#[tokio::test]
async fn an_admin_rotates_the_signing_key_once_while_none_is_pending() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let moderator = stack.moderator_token().await;
    let path = "/api/admin/signing-keys/rotate";
    let refused = stack.gateway.post(path, Some(&moderator), &json!({})).await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    let rotated = stack.gateway.post(path, Some(&admin), &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let kid = rotated.json()["kid"].as_str().unwrap().to_owned();
    let activates_at = rotated.json()["activatesAt"].as_str().unwrap().to_owned();
    assert!(activates_at.ends_with('Z'), "{activates_at}");
    // Published at once, beside the key that still signs.
    let jwks = stack.gateway.get("/.well-known/jwks.json", None).await;
    let kids: Vec<String> = jwks.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&kid));

    let again = stack.gateway.post(path, Some(&admin), &json!({})).await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["code"], "already_exists");
}

#[tokio::test]
async fn user_ids_other_than_hyphenated_uuids_and_pages_over_100_are_a_400() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    for path in [
        "/api/admin/users/whoever/disable",
        "/api/admin/users/00000000000000000000000000000000/disable",
        "/api/admin/users/%7B00000000-0000-0000-0000-000000000000%7D/sessions",
        "/api/admin/users/00000000-0000-0000-0000-000000000000/sessions/not-a-session",
    ] {
        let response = stack.gateway.post(path, Some(&admin), &json!({})).await;
        let response = if response.status == 405 {
            stack.gateway.get(path, Some(&admin)).await
        } else {
            response
        };
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert_eq!(response.error_code(), "invalid_argument");
    }
    let too_many = stack
        .gateway
        .get("/api/admin/users?pageSize=101", Some(&admin))
        .await;
    assert_eq!(too_many.status, 400, "{}", too_many.text());
    assert!(too_many.text().contains("pageSize"), "{}", too_many.text());
}

#[tokio::test]
async fn an_admin_disabling_or_demoting_itself_is_a_conflict() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    let id = stack.gateway.get("/api/auth/me", Some(&admin)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let disable = stack
        .gateway
        .post(
            &format!("/api/admin/users/{id}/disable"),
            Some(&admin),
            &json!({}),
        )
        .await;
    let demote = stack
        .gateway
        .put(
            &format!("/api/admin/users/{id}/roles"),
            Some(&admin),
            &json!({"roles": ["user"]}),
        )
        .await;
    for response in [disable, demote] {
        assert_eq!(response.status, 409, "{}", response.text());
        assert_eq!(response.error_code(), "failed_precondition");
    }
}
