//! `/openapi.json` describes exactly the router: every route is documented, every documented
//! operation is routed, and the document is what the gateway serves.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{gateway_without_backends, request};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let gateway = gateway_without_backends().await;
    let response = gateway.get("/openapi.json", None).await;
    assert_eq!(response.status, StatusCode::OK);
    let doc = response.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let routed: BTreeSet<(String, String)> = gateway::routes::table()
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path.to_owned()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json operations with no route: {unrouted:?}"
    );
}

#[tokio::test]
async fn the_router_serves_every_documented_operation() {
    let gateway = gateway_without_backends().await;
    let doc = gateway.get("/openapi.json", None).await.json();
    for (method, path) in documented(&doc) {
        let concrete = path
            .replace("{id}", "1")
            .replace("{sid}", "1")
            .replace("{clientId}", "1");
        let method: Method = method.parse().unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| "{}".to_owned());
        let response = gateway
            .send(request(method.clone(), &concrete, None, body))
            .await;
        let fell_through = response.status == StatusCode::METHOD_NOT_ALLOWED
            || (response.status == StatusCode::NOT_FOUND
                && response.text().contains("no route for"));
        assert!(
            !fell_through,
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_lists_its_responses() {
    let gateway = gateway_without_backends().await;
    let doc = gateway.get("/openapi.json", None).await.json();
    for (method, path) in documented(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {path} documents no success response"
        );
        assert!(
            operation["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
    }
}
