//! `/metrics` serves the series dashboards and alerts rely on, with the labels they expect.

use std::net::SocketAddr;

use auth_service::Config;
use proto::auth::v1 as pb;

use crate::helpers::{PASSWORD, authed, spawn_with};

/// The value of the sample `series` (name and labels exactly as exported), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_calls_by_code_sign_ins_by_outcome_and_token_checks() {
    let mut config = Config::for_tests();
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config).await;
    let addr = app
        .metrics
        .expect("metrics are served when an address is set");

    app.sign_up("metrics", "metrics@example.com").await.unwrap();
    app.sign_in("metrics", PASSWORD).await.unwrap();
    app.sign_in("metrics", "wrong password!").await.unwrap_err();
    app.sign_in("nobody-at-all", PASSWORD).await.unwrap_err();
    let mut client = app.client.clone();
    client.get_me(pb::GetMeRequest {}).await.unwrap_err();
    client
        .get_me(authed(pb::GetMeRequest {}, "not.a.token"))
        .await
        .unwrap_err();

    let body = scrape(addr).await;
    let at_least = |series: &str, n: f64| {
        let value = sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
        assert!(value >= n, "{series} is {value}, expected at least {n}");
    };
    let handled = |method: &str, code: &str| {
        format!(
            "grpc_server_handled_total{{grpc_service=\"auth.v1.AuthService\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
        )
    };
    at_least(&handled("SignIn", "OK"), 1.0);
    // The code of an error comes from the trailers-only answer's headers.
    at_least(&handled("SignIn", "Unauthenticated"), 2.0);
    at_least(&handled("GetMe", "Unauthenticated"), 2.0);
    at_least(
        "grpc_server_handling_seconds_count{grpc_service=\"auth.v1.AuthService\",grpc_method=\"SignIn\"}",
        3.0,
    );
    at_least("auth_sign_ins_total{outcome=\"success\"}", 1.0);
    // An unknown user and a wrong password are one outcome.
    at_least("auth_sign_ins_total{outcome=\"invalid_credentials\"}", 2.0);
    assert!(!body.contains("outcome=\"unknown_user\""));
    at_least("authn_verifications_total{outcome=\"missing\"}", 1.0);
    at_least("authn_verifications_total{outcome=\"malformed\"}", 1.0);
    at_least("auth_password_hash_wait_seconds_count", 4.0);
    at_least("auth_password_hash_queue_depth", 0.0);
    at_least("db_pool_connections{state=\"idle\"}", 0.0);
    at_least("db_pool_max_connections", 1.0);
}

#[tokio::test]
async fn without_an_address_no_metrics_port_is_opened() {
    let app = spawn_with(Config::for_tests()).await;
    assert_eq!(app.metrics, None);
}
