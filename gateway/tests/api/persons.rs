//! `/api/persons`: paging, filtering, and create/update/delete by role.

use std::collections::HashSet;

use serde_json::json;

use crate::stack::{spawn_stack, unique};

#[tokio::test]
async fn any_signed_in_user_lists_the_persons() {
    let stack = spawn_stack().await;
    let user = stack.user_token().await;
    let response = stack.gateway.get("/api/persons", Some(&user)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let persons = response.json()["persons"].as_array().unwrap().clone();
    assert!(!persons.is_empty(), "sample data expected");
    for person in &persons {
        assert!(person["personId"].is_i64());
        assert!(person["name"].is_string());
        assert!(person["email"].is_string());
        assert!(person["age"].is_i64());
    }
}

#[tokio::test]
async fn listing_without_a_token_is_a_401() {
    let stack = spawn_stack().await;
    let response = stack.gateway.get("/api/persons", None).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "unauthenticated");
}

#[tokio::test]
async fn pages_follow_the_next_page_token_without_overlap() {
    let stack = spawn_stack().await;
    let user = stack.user_token().await;
    let mut seen = HashSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/api/persons?pageSize=2&pageToken={t}"),
            None => "/api/persons?pageSize=2".to_owned(),
        };
        let body = stack.gateway.get(&path, Some(&user)).await.json();
        let persons = body["persons"].as_array().unwrap();
        assert!(persons.len() <= 2);
        for p in persons {
            assert!(
                seen.insert(p["personId"].as_i64().unwrap()),
                "person listed twice"
            );
        }
        pages += 1;
        match body["nextPageToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert!(
        pages >= 2,
        "sample data should span more than one page of two"
    );
}

#[tokio::test]
async fn the_name_filter_narrows_the_list() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let name = unique("Zed");
    stack.create_person(&moderator, &name).await;
    let body = stack
        .gateway
        .get(
            &format!("/api/persons?name={}", name.to_lowercase()),
            Some(&moderator),
        )
        .await
        .json();
    let persons = body["persons"].as_array().unwrap();
    assert_eq!(persons.len(), 1, "{body}");
    assert_eq!(persons[0]["name"], name.as_str());
}

#[tokio::test]
async fn bad_paging_parameters_are_a_400() {
    let stack = spawn_stack().await;
    let user = stack.user_token().await;
    for path in [
        "/api/persons?pageSize=-1",
        "/api/persons?pageSize=101",
        "/api/persons?pageToken=%25%25not-a-token",
    ] {
        let response = stack.gateway.get(path, Some(&user)).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert_eq!(response.error_code(), "invalid_argument");
    }
}

#[tokio::test]
async fn a_moderator_creates_reads_and_updates_a_person() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let response = stack
        .gateway
        .post(
            "/api/persons",
            Some(&moderator),
            &json!({"name": "Ada Lovelace", "email": "ada@example.com", "age": 36}),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let created = response.json();
    let id = created["personId"].as_i64().unwrap();
    assert_eq!(
        response.header("location"),
        Some(format!("/api/persons/{id}").as_str())
    );

    let read = stack
        .gateway
        .get(&format!("/api/persons/{id}"), Some(&moderator))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), created);

    let updated = stack
        .gateway
        .put(
            &format!("/api/persons/{id}"),
            Some(&moderator),
            &json!({"name": "Ada King", "email": "ada@example.com", "age": 37}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["name"], "Ada King");
    assert_eq!(updated.json()["age"], 37);
}

#[tokio::test]
async fn a_user_may_not_create_update_or_delete() {
    let stack = spawn_stack().await;
    let user = stack.user_token().await;
    let body = json!({"name": "Nope", "email": "nope@example.com", "age": 20});
    let responses = [
        stack.gateway.post("/api/persons", Some(&user), &body).await,
        stack
            .gateway
            .put("/api/persons/1", Some(&user), &body)
            .await,
        stack.gateway.delete("/api/persons/1", Some(&user)).await,
    ];
    for response in responses {
        assert_eq!(response.status, 403, "{}", response.text());
        assert!(
            response
                .header("www-authenticate")
                .unwrap()
                .contains("insufficient_scope")
        );
    }
}

#[tokio::test]
async fn invalid_person_fields_are_a_400() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    for body in [
        json!({"name": "", "email": "x@example.com", "age": 20}),
        json!({"name": "Ok", "email": "not-an-email", "age": 20}),
        json!({"name": "Ok", "email": "x@example.com", "age": -3}),
    ] {
        let response = stack
            .gateway
            .post("/api/persons", Some(&moderator), &body)
            .await;
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert_eq!(response.error_code(), "invalid_argument");
    }
}

#[tokio::test]
async fn an_unknown_person_is_a_404() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let body = json!({"name": "Ghost", "email": "ghost@example.com", "age": 20});
    let read = stack
        .gateway
        .get("/api/persons/987654321", Some(&moderator))
        .await;
    assert_eq!(read.status, 404, "{}", read.text());
    assert_eq!(read.error_code(), "not_found");
    let update = stack
        .gateway
        .put("/api/persons/987654321", Some(&moderator), &body)
        .await;
    assert_eq!(update.status, 404, "{}", update.text());
}

#[tokio::test]
async fn only_an_admin_deletes_and_a_deleted_person_is_gone() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let admin = stack.admin_token().await;
    let id = stack.create_person(&moderator, "Temp Person").await["personId"]
        .as_i64()
        .unwrap();
    let path = format!("/api/persons/{id}");
    let by_moderator = stack.gateway.delete(&path, Some(&moderator)).await;
    assert_eq!(by_moderator.status, 403);
    let by_admin = stack.gateway.delete(&path, Some(&admin)).await;
    assert_eq!(by_admin.status, 204, "{}", by_admin.text());
    assert_eq!(stack.gateway.get(&path, Some(&admin)).await.status, 404);
    assert_eq!(stack.gateway.delete(&path, Some(&admin)).await.status, 404);
}

#[tokio::test]
async fn an_age_is_any_whole_number_even_written_with_a_fraction_of_zero() {
    let stack = spawn_stack().await;
    let moderator = stack.moderator_token().await;
    let created = stack
        .gateway
        .post(
            "/api/persons",
            Some(&moderator),
            &json!({"name": "Grace Hopper", "email": "grace@example.com", "age": 85.0}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["age"], 85);
    for age in [json!(85.5), json!(1e10), json!("85")] {
        let refused = stack
            .gateway
            .post(
                "/api/persons",
                Some(&moderator),
                &json!({"name": "Grace Hopper", "email": "grace2@example.com", "age": age}),
            )
            .await;
        assert_eq!(refused.status, 400, "{age}: {}", refused.text());
    }
}
