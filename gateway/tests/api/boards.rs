//! The tutorials' text boards: public, any signed-in user, moderators, admins.

use axum::{body::Body, http::Request};

use crate::stack::spawn_stack;

#[tokio::test]
async fn the_public_board_needs_no_token() {
    let stack = spawn_stack().await;
    let response = stack.gateway.get("/api/test/all", None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Public Content.");
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn the_user_board_needs_a_valid_token() {
    let stack = spawn_stack().await;
    let none = stack.gateway.get("/api/test/user", None).await;
    assert_eq!(none.status, 401);
    let bad = stack.gateway.get("/api/test/user", Some("x.y.z")).await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let user = stack.user_token().await;
    let ok = stack.gateway.get("/api/test/user", Some(&user)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "User Content.");
}

#[tokio::test]
async fn a_user_is_refused_the_moderator_and_admin_boards() {
    let stack = spawn_stack().await;
    let user = stack.user_token().await;
    for board in ["/api/test/mod", "/api/test/admin"] {
        let response = stack.gateway.get(board, Some(&user)).await;
        assert_eq!(response.status, 403, "{board}");
        assert_eq!(response.error_code(), "permission_denied");
        let challenge = response.header("www-authenticate").unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn a_moderator_sees_the_moderator_board_but_not_the_admin_board() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let board = stack.gateway.get("/api/test/mod", Some(&moderator)).await;
    assert_eq!(board.status, 200);
    assert_eq!(board.text(), "Moderator Content.");
    let admin_board = stack.gateway.get("/api/test/admin", Some(&moderator)).await;
    assert_eq!(admin_board.status, 403);
}

#[tokio::test]
async fn an_admin_sees_every_board_with_the_tutorials_header() {
    let stack = spawn_stack().await;
    let admin = stack.admin_token().await;
    for (board, text) in [
        ("/api/test/user", "User Content."),
        ("/api/test/mod", "Moderator Content."),
        ("/api/test/admin", "Admin Content."),
    ] {
        let response = stack
            .gateway
            .send(
                Request::builder()
                    .uri(board)
                    .header("x-access-token", &admin)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status, 200, "{board}: {}", response.text());
        assert_eq!(response.text(), text);
    }
}
