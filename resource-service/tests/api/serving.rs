//! Serving like every service of the project: health, reflection, request ids, sample data
//! only on request, and a clean stop.

use proto::person::v1::ListPersonsRequest;
use resource_service::{Config, Settings, domain::sample_persons};
use token::Role;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{hs256_token, spawn_app, spawn_app_with, with_token};

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_person_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "person.v1.PersonService"] {
        // Readiness is reported by a background task once the database and keys are checked.
        let mut status = ServingStatus::Unknown;
        for _ in 0..100 {
            status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            if status == ServingStatus::Serving {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn the_caller_request_id_is_echoed() {
    let app = spawn_app().await;
    let mut request = with_token(ListPersonsRequest::default(), &hs256_token(&[Role::User]));
    request
        .metadata_mut()
        .insert("x-request-id", "req-1234".parse().unwrap());
    let response = app.client().await.list_persons(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-1234");
}

#[tokio::test]
async fn sample_data_is_loaded_only_when_asked_and_only_once() {
    let config = Config::for_tests();
    let plain = spawn_app_with(config.clone()).await;
    assert!(
        plain
            .store
            .list(&Default::default())
            .await
            .unwrap()
            .persons
            .is_empty()
    );
    plain.stop().await.unwrap();

    let mut with_sample = config;
    with_sample.sample_data = true;
    let first = spawn_app_with(with_sample.clone()).await;
    let persons = first.store.list(&Default::default()).await.unwrap().persons;
    assert_eq!(persons.len(), sample_persons().len());
    first.stop().await.unwrap();

    // A restart over the same file finds rows and adds none.
    let again = spawn_app_with(with_sample).await;
    assert_eq!(
        again
            .store
            .list(&Default::default())
            .await
            .unwrap()
            .persons
            .len(),
        persons.len()
    );
}

#[tokio::test]
async fn a_stopped_server_returns_and_refuses_new_connections() {
    let app = spawn_app().await;
    let url = app.url();
    app.stop().await.unwrap();
    let connect = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await;
    assert!(connect.is_err());
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_before_binding() {
    let mut config = Config::for_tests();
    config.hs256_secret = Some("too-short".into());
    let error = Settings::try_from(config).expect_err("refused");
    assert_eq!(error.setting, "RESOURCE_HS256_SECRET");
}

#[tokio::test]
async fn reflection_lists_the_person_service_and_nothing_of_auth_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(app.channel().await)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"person.v1.PersonService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("auth.")), "{names:?}");
}

#[tokio::test]
async fn health_turns_not_serving_as_soon_as_shutdown_begins() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "person.v1.PersonService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut status = ServingStatus::Unknown;
    while status != ServingStatus::Serving {
        status = watch.message().await.unwrap().unwrap().status();
    }
    app.begin_stop();
    let next = watch.message().await.unwrap().unwrap().status();
    assert_eq!(next, ServingStatus::NotServing);
    // The open watch is an in-flight call; once it ends, the drain completes.
    drop(watch);
    drop(health);
    app.stop().await.unwrap();
}
