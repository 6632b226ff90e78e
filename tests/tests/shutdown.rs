//! Stopping a service the way Kubernetes does (SIGTERM): it reports NOT_SERVING, stops
//! accepting connections, lets the calls in flight finish, and exits 0 within the drain grace.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{
    AuthDeployment, AuthReplica, DRAIN_GRACE, Process, ResourceReplica, ServingStatus, Stack,
    next_health, wait_until_refusing, watch_health,
};

/// Watches a gRPC service's health across a SIGTERM. The open Watch call is an in-flight call:
/// the service must keep it running (and tell it NOT_SERVING) while refusing new connections,
/// and exit 0 once it ends.
async fn stop_grpc_service(process: &mut Process, url: &str, addr: std::net::SocketAddr) {
    let mut health = watch_health(url).await;
    assert_eq!(
        next_health(&mut health, Duration::from_secs(10)).await,
        ServingStatus::Serving
    );

    process.terminate();
    assert_eq!(
        next_health(&mut health, Duration::from_secs(10)).await,
        ServingStatus::NotServing,
        "{} did not report NOT_SERVING after SIGTERM",
        process.label()
    );
    wait_until_refusing(addr, 200, process.label()).await;
    process.assert_running();

    drop(health);
    let status = process.wait_for_exit(DRAIN_GRACE).await;
    assert!(
        status.success(),
        "{} exited with {status}: {}",
        process.label(),
        process.describe()
    );
}

#[tokio::test]
async fn auth_service_reports_not_serving_drains_and_exits_zero_on_sigterm() {
    let deployment = AuthDeployment::create().await;
    let mut auth = AuthReplica::start(&deployment, "stop-auth").await;
    let (url, addr) = (auth.url.clone(), auth.addr);
    stop_grpc_service(&mut auth.process, &url, addr).await;
}

#[tokio::test]
async fn resource_service_reports_not_serving_drains_and_exits_zero_on_sigterm() {
    let deployment = AuthDeployment::create().await;
    let auth = AuthReplica::start(&deployment, "stop-resource-auth").await;
    let database_url = e2e::create_database("resource").await;
    let mut resource = ResourceReplica::start(
        &database_url,
        std::slice::from_ref(&auth.url),
        "stop-resource",
    )
    .await;
    let (url, addr) = (resource.url.clone(), resource.addr);
    stop_grpc_service(&mut resource.process, &url, addr).await;
}

#[tokio::test]
async fn the_gateway_stops_accepting_and_exits_zero_on_sigterm() {
    let mut stack = Stack::start("stop-gateway", 1, 1, 1).await;
    let gateway = &mut stack.gateways[0];
    gateway.process.terminate();
    let status = gateway.process.wait_for_exit(DRAIN_GRACE).await;
    assert!(
        status.success(),
        "the gateway exited with {status}: {}",
        gateway.process.describe()
    );
    wait_until_refusing(gateway.addr, 1, "the stopped gateway").await;
}
