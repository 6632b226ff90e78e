//! Listing through the API: page sizes, page tokens, the name filter, and a full walk while
//! other callers insert.

use std::collections::HashSet;

use proto::person::v1::{ListPersonsRequest, ListPersonsResponse};
use resource_service::{Config, domain::PersonId};
use token::Role;
use tonic::Code;

use crate::{
    helpers::{
        TestApp, fields, fresh_postgres_database, hs256_token, spawn_app, spawn_app_with,
        with_token,
    },
    store::assert_walk_complete,
};

async fn list(
    app: &TestApp,
    request: ListPersonsRequest,
) -> Result<ListPersonsResponse, tonic::Status> {
    app.client()
        .await
        .list_persons(with_token(request, &hs256_token(&[Role::User])))
        .await
        .map(|r| r.into_inner())
}

async fn seed(app: &TestApp, n: usize) -> HashSet<PersonId> {
    let mut ids = HashSet::new();
    for i in 0..n {
        let p = app
            .store
            .create(&fields(
                &format!("Person {i}"),
                &format!("p{i}@example.com"),
                30,
            ))
            .await
            .unwrap();
        ids.insert(p.id);
    }
    ids
}

#[tokio::test]
async fn page_size_defaults_to_20_and_is_capped_at_100() {
    let app = spawn_app().await;
    seed(&app, 130).await;
    let default = list(&app, ListPersonsRequest::default()).await.unwrap();
    assert_eq!(default.persons.len(), 20);
    assert!(!default.next_page_token.is_empty());
    let capped = list(
        &app,
        ListPersonsRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(capped.persons.len(), 100);
    let negative = list(
        &app,
        ListPersonsRequest {
            page_size: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(negative.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_page_token_that_was_not_issued_is_invalid_argument() {
    let app = spawn_app().await;
    for token in ["garbage", "djE6LTE", "%%%"] {
        let result = list(
            &app,
            ListPersonsRequest {
                page_token: token.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument, "{token}");
    }
}

#[tokio::test]
async fn the_name_filter_narrows_every_page() {
    let app = spawn_app().await;
    seed(&app, 30).await;
    // "Person 1", "Person 10".."Person 19": eleven names contain "on 1".
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &app,
            ListPersonsRequest {
                page_size: 4,
                page_token: token,
                name_filter: "ON 1".into(),
            },
        )
        .await
        .unwrap();
        names.extend(page.persons.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names.len(), 11, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("Person 1")));
}

/// Walks the table page by page through the API while another client inserts.
async fn walk_while_inserting(app: &TestApp) {
    let existing = seed(app, 90).await;
    let writer = {
        let store = app.store.clone();
        tokio::spawn(async move {
            for i in 0..90 {
                store
                    .create(&fields(
                        &format!("Late {i}"),
                        &format!("late{i}@example.com"),
                        30,
                    ))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            app,
            ListPersonsRequest {
                page_size: 9,
                page_token: token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        seen.extend(page.persons.iter().map(|p| PersonId(p.person_id)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    writer.await.unwrap();
    assert_walk_complete(&seen, &existing);
}

#[tokio::test]
async fn a_walk_returns_every_person_exactly_once_under_concurrent_inserts_on_sqlite() {
    walk_while_inserting(&spawn_app().await).await;
}

#[tokio::test]
async fn a_walk_returns_every_person_exactly_once_under_concurrent_inserts_on_postgres() {
    let mut config = Config::for_tests();
    config.database_url = Some(fresh_postgres_database().await.into());
    walk_while_inserting(&spawn_app_with(config).await).await;
}
