//! The person RPCs end to end: validation, not found, duplicates.

use proto::person::v1::{
    CreatePersonRequest, DeletePersonRequest, GetPersonRequest, UpdatePersonRequest,
};
use token::Role;
use tonic::Code;

use crate::helpers::{hs256_token, spawn_app, with_token};

fn create(name: &str, email: &str, age: i32) -> CreatePersonRequest {
    CreatePersonRequest {
        name: name.into(),
        email: email.into(),
        age,
    }
}

#[tokio::test]
async fn a_person_goes_through_create_read_update_delete() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let admin = hs256_token(&[Role::Admin]);

    let created = client
        .create_person(with_token(
            create(" Ann Smith ", "ann@example.com", 34),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.person_id > 0);
    assert_eq!(created.name, "Ann Smith");

    let id = created.person_id;
    let read = client
        .get_person(with_token(GetPersonRequest { person_id: id }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, created);

    let updated = client
        .update_person(with_token(
            UpdatePersonRequest {
                person_id: id,
                name: "Ann Jones".into(),
                email: "ann.jones@example.com".into(),
                age: 35,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.person_id, updated.name.as_str(), updated.age),
        (id, "Ann Jones", 35)
    );

    client
        .delete_person(with_token(DeletePersonRequest { person_id: id }, &admin))
        .await
        .unwrap();
    let gone = client
        .get_person(with_token(GetPersonRequest { person_id: id }, &admin))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_input_is_invalid_argument_and_stores_nothing() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let admin = hs256_token(&[Role::Admin]);
    for bad in [
        create("", "ann@example.com", 30),
        create(&"x".repeat(101), "ann@example.com", 30),
        create("Ann", "not-an-email", 30),
        create("Ann", "ann@example.com", -1),
        create("Ann", "ann@example.com", 151),
    ] {
        let status = client
            .create_person(with_token(bad.clone(), &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    let p = app.create("Ann", "ann@example.com", 30).await;
    let status = client
        .update_person(with_token(
            UpdatePersonRequest {
                person_id: p.person_id,
                name: "Ann".into(),
                email: "ann@".into(),
                age: 30,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for id in [0, -1] {
        let status = client
            .get_person(with_token(GetPersonRequest { person_id: id }, &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let all = app.store.list(&Default::default()).await.unwrap();
    assert_eq!(all.persons.len(), 1);
    assert_eq!(all.persons[0].fields.email.as_ref(), "ann@example.com");
}

#[tokio::test]
async fn unknown_persons_are_not_found_for_every_rpc() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let admin = hs256_token(&[Role::Admin]);
    let id = 424_242;
    let get = client
        .get_person(with_token(GetPersonRequest { person_id: id }, &admin))
        .await;
    let update = client
        .update_person(with_token(
            UpdatePersonRequest {
                person_id: id,
                name: "X".into(),
                email: "x@example.com".into(),
                age: 1,
            },
            &admin,
        ))
        .await;
    let delete = client
        .delete_person(with_token(DeletePersonRequest { person_id: id }, &admin))
        .await;
    assert_eq!(get.unwrap_err().code(), Code::NotFound);
    assert_eq!(update.unwrap_err().code(), Code::NotFound);
    assert_eq!(delete.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_taken_email_in_any_case_is_already_exists() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let admin = hs256_token(&[Role::Admin]);
    app.create("Ann", "ann@example.com", 30).await;
    let bob = app.create("Bob", "bob@example.com", 40).await;
    let status = client
        .create_person(with_token(create("Ann 2", "ANN@EXAMPLE.COM", 30), &admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = client
        .update_person(with_token(
            UpdatePersonRequest {
                person_id: bob.person_id,
                name: "Bob".into(),
                email: "Ann@example.com".into(),
                age: 40,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
}
