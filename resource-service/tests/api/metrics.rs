//! `/metrics` serves the gRPC, authn and pool series with the labels dashboards expect.

use std::net::SocketAddr;

use resource_service::Config;
use token::{Audience, Ed25519Key, Role};

use crate::{
    access::{Rpc, call, call_with},
    helpers::spawn_app_with,
    jwks::{KeyServer, ed25519_issuer},
};

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
async fn metrics_count_token_checks_by_outcome_and_calls_by_code() {
    let keys = KeyServer::default();
    let key = Ed25519Key::generate();
    keys.publish(key.public_jwk());
    let (url, _stop) = keys.serve().await;
    let mut config = Config::for_tests().with_jwks(vec![url]);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(config).await;
    let addr = app
        .metrics
        .expect("metrics are served when an address is set");

    let issuer = ed25519_issuer(&key, Audience::default());
    let user = issuer.issue("u", "alice", &[Role::User]).unwrap().token;
    call(&app, Rpc::List, &user).await.unwrap();
    call(&app, Rpc::Delete, &user).await.unwrap_err();
    call_with(&app, Rpc::List, None).await.unwrap_err();
    let (head, _) = user.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    call(&app, Rpc::Get, &forged).await.unwrap_err();
    let stranger = ed25519_issuer(&Ed25519Key::generate(), Audience::default())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    call(&app, Rpc::List, &stranger).await.unwrap_err();

    let body = scrape(addr).await;
    let at_least = |series: &str, n: f64| {
        let value = sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
        assert!(value >= n, "{series} is {value}, expected at least {n}");
    };
    for outcome in ["ok", "forbidden", "missing", "bad_signature", "unknown_key"] {
        at_least(
            &format!("authn_verifications_total{{outcome=\"{outcome}\"}}"),
            1.0,
        );
    }
    let handled = |method: &str, code: &str| {
        format!(
            "grpc_server_handled_total{{grpc_service=\"person.v1.PersonService\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
        )
    };
    at_least(&handled("ListPersons", "OK"), 1.0);
    at_least(&handled("DeletePerson", "PermissionDenied"), 1.0);
    at_least(&handled("ListPersons", "Unauthenticated"), 2.0);
    at_least(&handled("GetPerson", "Unauthenticated"), 1.0);
    let age = sample(&body, "authn_jwks_age_seconds").expect("a JWKS age");
    assert!((0.0..60.0).contains(&age), "{age}");
    at_least("db_pool_max_connections", 1.0);
}

#[tokio::test]
async fn the_postgres_pool_has_the_configured_size() {
    let mut config = Config::for_tests();
    config.database_url = Some(crate::helpers::fresh_postgres_database().await.into());
    config.db_max_connections = 3;
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(config).await;
    let body = scrape(app.metrics.expect("metrics are served")).await;
    assert_eq!(
        sample(&body, "db_pool_max_connections"),
        Some(3.0),
        "{body}"
    );
}
