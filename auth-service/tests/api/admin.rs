use proto::auth::v1 as pb;
use tonic::Code;

use crate::helpers::{authed, spawn_app_with_admin};

async fn list(
    app: &crate::helpers::TestApp,
    token: &str,
    size: i32,
    page: &str,
) -> Result<pb::ListUsersResponse, tonic::Status> {
    app.client
        .clone()
        .list_users(authed(
            pb::ListUsersRequest {
                page_size: size,
                page_token: page.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_bootstrap_admin_exists_with_the_admin_role() {
    let app = spawn_app_with_admin().await;
    let signed_in = app.sign_in("root", crate::helpers::PASSWORD).await.unwrap();
    assert_eq!(signed_in.user.unwrap().roles, vec!["user", "admin"]);
}

#[tokio::test]
async fn listing_users_pages_through_everyone_exactly_once() {
    let app = spawn_app_with_admin().await;
    for i in 0..7 {
        app.sign_up(&format!("user{i}"), &format!("user{i}@example.com"))
            .await
            .unwrap();
    }
    let token = app.admin_token().await;
    let mut seen = Vec::new();
    let mut page = String::new();
    loop {
        let response = list(&app, &token, 3, &page).await.unwrap();
        assert!(response.users.len() <= 3);
        seen.extend(response.users.into_iter().map(|u| u.username));
        if response.next_page_token.is_empty() {
            break;
        }
        page = response.next_page_token;
    }
    let mut expected: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
    expected.insert(0, "root".into());
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_bad_page_token_or_size_is_invalid_argument() {
    let app = spawn_app_with_admin().await;
    let token = app.admin_token().await;
    assert_eq!(
        list(&app, &token, 3, "%%%").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        list(&app, &token, -1, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn only_admins_list_users_or_change_roles() {
    let app = spawn_app_with_admin().await;
    let token = app.user_token("plain").await;
    let error = list(&app, &token, 10, "").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert!(error.message().contains("admin"));
    let error = app
        .client
        .clone()
        .set_user_roles(authed(
            pb::SetUserRolesRequest {
                user_id: uuid::Uuid::nil().to_string(),
                roles: vec!["admin".into()],
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let error = app
        .client
        .clone()
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
}

pub(crate) async fn set_roles(
    app: &crate::helpers::TestApp,
    token: &str,
    id: &str,
    roles: &[&str],
) -> Result<pb::User, tonic::Status> {
    app.client
        .clone()
        .set_user_roles(authed(
            pb::SetUserRolesRequest {
                user_id: id.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn an_admin_sets_roles_and_the_next_token_carries_them() {
    let app = spawn_app_with_admin().await;
    let user = app.sign_up("bob", "bob@example.com").await.unwrap();
    let admin = app.admin_token().await;
    let updated = set_roles(&app, &admin, &user.id, &["moderator"])
        .await
        .unwrap();
    assert_eq!(updated.roles, vec!["user", "moderator"]);
    let signed_in = app.sign_in("bob", crate::helpers::PASSWORD).await.unwrap();
    assert_eq!(signed_in.user.unwrap().roles, vec!["user", "moderator"]);
}

#[tokio::test]
async fn role_changes_reject_bad_ids_unknown_users_and_unknown_roles() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("bob", "bob@example.com").await.unwrap();
    assert_eq!(
        set_roles(&app, &admin, "nope", &["user"])
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        set_roles(&app, &admin, &uuid::Uuid::now_v7().to_string(), &["user"])
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        set_roles(&app, &admin, &user.id, &["superuser"])
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn setting_more_than_a_handful_of_roles_is_invalid_argument() {
    let app = spawn_app_with_admin().await;
    let admin = app.admin_token().await;
    let user = app.sign_up("bob", "bob@example.com").await.unwrap();
    let many = vec!["moderator"; 9];
    let error = set_roles(&app, &admin, &user.id, &many).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("at most 8 roles"),
        "{}",
        error.message()
    );
}

#[tokio::test]
async fn an_admin_cannot_remove_their_own_admin_role() {
    let app = spawn_app_with_admin().await;
    let signed_in = app.sign_in("root", crate::helpers::PASSWORD).await.unwrap();
    let id = signed_in.user.unwrap().id;
    let error = set_roles(&app, &signed_in.access_token, &id, &["user"])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_bootstrap_admin_name_taken_by_a_plain_user_stops_start_up() {
    let config = auth_service::Config::for_tests();
    let app = crate::helpers::spawn_with(config.clone()).await;
    app.sign_up("root", "root@example.com").await.unwrap();
    app.stop().await;
    let error = auth_service::Application::build(crate::helpers::settings(
        crate::helpers::with_admin(config),
    ))
    .await
    .err()
    .expect("start-up refused");
    let message = format!("{error:#}");
    assert!(message.contains("exists but is not an admin"), "{message}");
}

#[tokio::test]
async fn a_bootstrap_admin_name_held_by_a_plain_user_only_warns_once_another_admin_exists() {
    let config = crate::helpers::with_admin(auth_service::Config::for_tests());
    let app = crate::helpers::spawn_with(config.clone()).await;
    let eve = app.sign_up("eve", "eve@example.com").await.unwrap();
    app.stop().await;

    // `root` is an admin; `eve`, now the configured name, is not.
    let mut renamed = config;
    renamed.bootstrap_admin_username = Some("eve".into());
    let app = crate::helpers::spawn_with(renamed).await;
    let admin = app.admin_token().await;
    let users = list(&app, &admin, 0, "").await.unwrap().users;
    let still_eve = users.iter().find(|u| u.id == eve.id).expect("eve");
    assert_eq!(still_eve.roles, vec!["user"]);
}
