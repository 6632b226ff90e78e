use proto::auth::v1 as pb;
use tonic::Code;

use crate::helpers::{PASSWORD, authed, spawn_app, spawn_app_with_admin};

fn request(username: &str, email: &str, password: &str, roles: &[&str]) -> pb::SignUpRequest {
    pb::SignUpRequest {
        username: username.into(),
        email: email.into(),
        password: password.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

#[tokio::test]
async fn sign_up_creates_an_account_with_the_user_role() {
    let app = spawn_app().await;
    let user = app.sign_up("alice", "alice@example.com").await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.roles, vec!["user"]);
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    assert!(user.created_at.is_some());
}

#[tokio::test]
async fn a_taken_username_is_already_exists_whatever_its_case() {
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let error = app.sign_up("ALICE", "other@example.com").await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(error.message(), "username is already taken");
}

#[tokio::test]
async fn a_registered_email_is_already_exists_whatever_its_case() {
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let error = app
        .sign_up("alice2", "Alice@Example.COM")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(error.message(), "email is already registered");
}

#[tokio::test]
async fn concurrent_sign_ups_for_one_name_create_one_account() {
    let app = spawn_app().await;
    let attempts = (0..8).map(|i| {
        let app = &app;
        async move { app.sign_up("racer", &format!("racer{i}@example.com")).await }
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(r.as_ref().unwrap_err().code(), Code::AlreadyExists);
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_with_a_useful_message() {
    let app = spawn_app().await;
    let long = "x".repeat(129);
    let cases = [
        (
            request("ab", "a@example.com", PASSWORD, &[]),
            "username must be 3 to 32",
        ),
        (
            request(&"x".repeat(33), "a@example.com", PASSWORD, &[]),
            "username must be 3 to 32",
        ),
        (
            request("bad name", "a@example.com", PASSWORD, &[]),
            "username may only contain",
        ),
        (
            request("bob", "not-an-email", PASSWORD, &[]),
            "not a valid email",
        ),
        (request("bob", "", PASSWORD, &[]), "not a valid email"),
        (
            request("bob", "bob@example.com", "short", &[]),
            "at least 8",
        ),
        (request("bob", "bob@example.com", &long, &[]), "at most 128"),
        (
            request("bob", "bob@example.com", PASSWORD, &["root"]),
            "unknown role",
        ),
    ];
    for (req, expected) in cases {
        let error = app.sign_up_with(req).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{expected}");
        assert!(
            error.message().contains(expected),
            "{expected}: {}",
            error.message()
        );
    }
    // Nothing was half-written: the name is still free.
    app.sign_up("bob", "bob@example.com").await.unwrap();
}

#[tokio::test]
async fn common_passwords_and_control_characters_are_refused_saying_why() {
    let app = spawn_app().await;
    let cases = [
        ("password", "password is too common"),
        ("12345678", "password is too common"),
        ("qwertyuiop", "password is too common"),
        ("aaaaaaaa", "password is too common"),
        ("\0\0\0\0\0\0\0\0", "must not contain control characters"),
    ];
    for (password, expected) in cases {
        let error = app
            .sign_up_with(request("bob", "bob@example.com", password, &[]))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{password:?}");
        assert!(
            error.message().contains(expected),
            "{password:?}: {}",
            error.message()
        );
    }
}

#[tokio::test]
async fn an_email_with_markup_is_invalid_argument_and_not_echoed() {
    let app = spawn_app().await;
    let hostile = "<svg/onload=alert(1)>@ex.com";
    let error = app
        .sign_up_with(request("bob", hostile, PASSWORD, &[]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("not a valid email"),
        "{}",
        error.message()
    );
    assert!(!error.message().contains("svg"), "{}", error.message());
}

#[tokio::test]
async fn a_sign_up_with_a_huge_roles_list_is_invalid_argument() {
    let app = spawn_app().await;
    let mut req = request("bob", "bob@example.com", PASSWORD, &[]);
    req.roles = vec!["user".to_owned(); 100_000];
    let error = app.sign_up_with(req).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("at most 8 roles"),
        "{}",
        error.message()
    );
    // Nothing was written: the name is still free.
    app.sign_up("bob", "bob@example.com").await.unwrap();
}

#[tokio::test]
async fn the_password_never_appears_in_an_error() {
    let app = spawn_app().await;
    let secret = "s3cr3t-p@ss";
    let error = app
        .sign_up_with(request("bob", "invalid", secret, &[]))
        .await
        .unwrap_err();
    assert!(!error.message().contains(secret));
}

#[tokio::test]
async fn asking_for_more_than_user_without_an_admin_token_is_permission_denied() {
    let app = spawn_app_with_admin().await;
    let error = app
        .sign_up_with(request("mallory", "m@example.com", PASSWORD, &["admin"]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);

    let user_token = app.user_token("plain").await;
    let error = app
        .client
        .clone()
        .sign_up(authed(
            request("mallory", "m@example.com", PASSWORD, &["moderator"]),
            &user_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_admin_can_grant_roles_at_sign_up() {
    let app = spawn_app_with_admin().await;
    let token = app.admin_token().await;
    let user = app
        .client
        .clone()
        .sign_up(authed(
            request("mod1", "mod1@example.com", PASSWORD, &["ROLE_MODERATOR"]),
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.roles, vec!["user", "moderator"]);
}

#[tokio::test]
async fn an_invalid_token_at_sign_up_is_unauthenticated() {
    let app = spawn_app().await;
    let error = app
        .client
        .clone()
        .sign_up(authed(
            request("bob", "bob@example.com", PASSWORD, &[]),
            "not.a.token",
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
}
