//! Per-request balancing over resource-service replicas, failover when one stops, and taking it
//! back when it returns.

use std::sync::Arc;

use proto::person::v1::{ListPersonsRequest, person_service_client::PersonServiceClient};

use gateway::backend::ReplicaState;

use crate::stack::{spawn_resource, spawn_stack_with};

/// How many persons a replica holds, asked directly over gRPC.
async fn count_on(url: &str, token: &str) -> usize {
    let mut client = PersonServiceClient::connect(url.to_owned())
        .await
        .expect("connect to the replica");
    let mut request = tonic::Request::new(ListPersonsRequest {
        page_size: 100,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    client
        .list_persons(request)
        .await
        .expect("list persons on the replica")
        .into_inner()
        .persons
        .len()
}

#[tokio::test]
async fn calls_are_spread_over_every_replica() {
    let stack = spawn_stack_with(2, |_| {}).await;
    let moderator = stack.moderator_token().await;
    // Each replica has its own database here, so a created person shows where its call went.
    let before_a = count_on(&stack.resources[0].url, &moderator).await;
    let before_b = count_on(&stack.resources[1].url, &moderator).await;
    for i in 0..6 {
        stack
            .create_person(&moderator, &format!("Spread {i}"))
            .await;
    }
    let added_a = count_on(&stack.resources[0].url, &moderator).await - before_a;
    let added_b = count_on(&stack.resources[1].url, &moderator).await - before_b;
    assert_eq!(added_a + added_b, 6);
    assert!(
        added_a > 0 && added_b > 0,
        "one replica got every call: {added_a} vs {added_b}"
    );
}

#[tokio::test]
async fn stopping_a_replica_under_a_stream_of_reads_loses_no_request() {
    let mut stack = spawn_stack_with(2, |_| {}).await;
    let user = Arc::new(stack.user_token().await);
    let router = stack.gateway.router.clone();
    let gateway = Arc::new(crate::helpers::TestGateway {
        router,
        state: stack.gateway.state.clone(),
    });
    // Four readers, each issuing reads back to back, while one replica is stopped mid-stream.
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for _ in 0..4 {
        let gateway = gateway.clone();
        let user = user.clone();
        let stopped = stopped_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut after_stop = 0;
            let mut total = 0;
            // Keep reading until well after the stop, however long the stop takes.
            while after_stop < 40 {
                let response = gateway.get("/api/persons?pageSize=5", Some(&user)).await;
                if response.status != 200 {
                    failures.push(format!("{}: {}", response.status, response.text()));
                }
                total += 1;
                if *stopped.borrow() {
                    after_stop += 1;
                }
            }
            (total, failures)
        }));
    }
    // Let the stream run on both replicas first.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stack.resources[0].stop().await;
    stopped_tx.send(true).unwrap();
    let mut total = 0;
    for reader in readers {
        let (count, failures) = reader.await.unwrap();
        assert!(failures.is_empty(), "lost requests: {failures:?}");
        total += count;
    }
    assert!(total >= 160, "{total}");
    // The stopped replica is out of the rotation.
    stack.wait_for_states(|_| true, "health state").await;
    let states: Vec<ReplicaState> = stack
        .gateway
        .state
        .resource
        .replicas()
        .iter()
        .map(|r| r.state())
        .collect();
    assert!(states.contains(&ReplicaState::Down), "{states:?}");
}

#[tokio::test]
async fn writes_succeed_while_a_replica_is_gone() {
    let mut stack = spawn_stack_with(2, |_| {}).await;
    let moderator = stack.moderator_token().await;
    stack.resources[1].stop().await;
    for i in 0..4 {
        stack
            .create_person(&moderator, &format!("Survivor {i}"))
            .await;
    }
}

#[tokio::test]
async fn a_stopped_replica_is_dropped_and_taken_back_when_it_returns() {
    let mut stack = spawn_stack_with(2, |_| {}).await;
    let port = stack.resources[0].port;
    stack.resources[0].stop().await;
    stack.wait_for_states_of(0, ReplicaState::Down).await;
    let readyz = stack.gateway.get("/readyz", None).await;
    assert_eq!(readyz.status, 200, "one replica is enough to be ready");
    assert_eq!(readyz.json()["backends"]["resource"]["up"], 1);

    stack.resources[0] = spawn_resource(&stack.auth.url, port).await;
    stack.wait_until_all_up().await;
    let readyz = stack.gateway.get("/readyz", None).await;
    assert_eq!(readyz.json()["backends"]["resource"]["up"], 2);
}

#[tokio::test]
async fn a_host_name_stands_for_every_address_it_resolves_to() {
    let stack = spawn_stack_with(1, |_| {}).await;
    let user = stack.user_token().await;
    // `localhost` may resolve to ::1 as well, where nothing listens: that address is one more
    // replica, refused at connect and so retried on the other, never a failed request.
    let config = gateway::Config::for_tests(
        vec![stack.auth.url.clone()],
        vec![format!("http://localhost:{}", stack.resources[0].port)],
    );
    let gateway = crate::helpers::TestGateway::from_config(config).await;
    assert!(!gateway.state.resource.replicas().is_empty());
    for _ in 0..6 {
        let response = gateway.get("/api/persons", Some(&user)).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}
