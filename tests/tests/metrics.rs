//! A real Prometheus scrapes the running stack and sees, through its HTTP API, every series the
//! dashboards and alerts in `deploy/monitoring/` rely on, moving with traffic; deploy's alerting
//! rules pass promtool's checks and unit tests.

#![allow(clippy::unwrap_used)]

use std::{process::Command, time::Duration};

use e2e::{
    Credentials, HeaderStyle, Stack,
    prometheus::{PROMTOOL, Prometheus, Target, deploy_dir, require},
};

/// Scrapes run every second; a sample reaches a query within a few of them.
const SEEN_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn prometheus_sees_every_contracted_series_move_with_traffic() {
    let stack = Stack::start("metrics", 1, 1, 1).await;
    let mut targets = vec![];
    targets.extend(stack.auth.iter().map(|r| Target {
        app: "auth-service",
        addr: r.metrics,
    }));
    targets.extend(stack.resource.iter().map(|r| Target {
        app: "resource-service",
        addr: r.metrics,
    }));
    targets.extend(stack.gateways.iter().map(|g| Target {
        app: "gateway",
        addr: g.metrics,
    }));
    let prometheus = Prometheus::start(&targets).await;
    prometheus
        .wait_for("sum(up)", SEEN_WITHIN, |v| v == Some(3.0))
        .await;

    // The counters as they were before the traffic (absent counts as 0).
    let counters = [
        r#"sum(http_server_requests_total{method="POST",route="/api/auth/signin",status="200"})"#,
        r#"sum(http_server_requests_total{method="GET",route="/api/persons",status="200"})"#,
        r#"sum(http_server_requests_total{method="GET",route="/api/persons",status="401"})"#,
        r#"sum(http_server_request_duration_seconds_count{route="/api/persons"})"#,
        r#"sum(grpc_server_handled_total{app="auth-service",grpc_service="auth.v1.AuthService",grpc_method="SignIn",grpc_code="OK"})"#,
        r#"sum(grpc_server_handled_total{app="auth-service",grpc_method="SignIn",grpc_code="Unauthenticated"})"#,
        r#"sum(grpc_server_handled_total{app="resource-service",grpc_service="person.v1.PersonService",grpc_method="ListPersons",grpc_code="OK"})"#,
        r#"sum(grpc_server_handled_total{app="resource-service",grpc_method="ListPersons",grpc_code="Unauthenticated"})"#,
        r#"sum(grpc_server_handling_seconds_count{app="resource-service",grpc_method="ListPersons"})"#,
        r#"sum(authn_verifications_total{app="resource-service",outcome="ok"})"#,
        r#"sum(authn_verifications_total{app="resource-service",outcome="bad_signature"})"#,
        r#"sum(auth_sign_ins_total{outcome="success"})"#,
        r#"sum(auth_sign_ins_total{outcome="invalid_credentials"})"#,
        r#"sum(auth_password_hash_wait_seconds_count)"#,
        // Every query waits for a pooled connection, if only for a moment.
        r#"sum(db_pool_acquire_wait_seconds_count{app="auth-service"})"#,
        r#"sum(db_pool_acquire_wait_seconds_count{app="resource-service"})"#,
    ];
    let mut before = Vec::new();
    for query in counters {
        before.push(prometheus.value(query).await.unwrap_or(0.0));
    }

    let gateway = &stack.gateways[0];
    let user = Credentials::random("metrics");
    gateway.sign_up(&user).await;
    let signed_in = gateway.sign_in(&user).await;
    let wrong = Credentials {
        username: user.username.clone(),
        password: "not the password at all".into(),
    };
    let refused = gateway
        .post("/api/auth/signin")
        .json(&serde_json::json!({"username": wrong.username, "password": wrong.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for _ in 0..3 {
        let read = gateway
            .get_with_token("/api/persons", &signed_in.access_token, HeaderStyle::Bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
    // The real header and claims with a signature of the right length that is not theirs.
    let (signed, _) = signed_in.access_token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(86));
    let read = gateway
        .get_with_token("/api/persons", &forged, HeaderStyle::Bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);
    let one = gateway
        .get_with_token(
            "/api/persons/4711",
            &signed_in.access_token,
            HeaderStyle::Bearer,
        )
        .send()
        .await
        .unwrap();
    assert!(one.status().is_client_error(), "{}", one.status());

    for (query, before) in counters.iter().zip(before) {
        prometheus
            .wait_for(query, SEEN_WITHIN, |v| v.is_some_and(|v| v > before))
            .await;
    }
    // Gauges: present, with sensible values.
    prometheus
        .wait_for(
            r#"sum(gateway_backend_replicas{state="up"})"#,
            SEEN_WITHIN,
            |v| v == Some(2.0),
        )
        .await;
    prometheus
        .wait_for(
            r#"max(authn_jwks_age_seconds{app="resource-service"})"#,
            SEEN_WITHIN,
            |v| v.is_some_and(|age| (0.0..120.0).contains(&age)),
        )
        .await;
    prometheus
        .wait_for("count(auth_password_hash_queue_depth)", SEEN_WITHIN, |v| {
            v == Some(1.0)
        })
        .await;
    for app in ["auth-service", "resource-service"] {
        prometheus
            .wait_for(
                &format!(r#"sum(db_pool_max_connections{{app="{app}"}})"#),
                SEEN_WITHIN,
                |v| v.is_some_and(|n| n >= 1.0),
            )
            .await;
        // Exported from the start, though nothing timed out.
        prometheus
            .wait_for(
                &format!(r#"sum(db_pool_acquire_timeouts_total{{app="{app}"}})"#),
                SEEN_WITHIN,
                |v| v == Some(0.0),
            )
            .await;
    }
    // The route is the template, never the raw path.
    prometheus
        .wait_for(
            r#"count(http_server_requests_total{route="/api/persons/{id}"})"#,
            SEEN_WITHIN,
            |v| v.is_some(),
        )
        .await;
    let raw = prometheus
        .value(r#"count(http_server_requests_total{route=~".*4711.*"})"#)
        .await;
    assert_eq!(raw, None);

    // Prometheus itself accepted deploy's alerting rules.
    let rules = prometheus.api("rules", &[]).await;
    let loaded: usize = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(loaded >= 8, "{rules}");

    // Every query of the dashboard is one Prometheus accepts.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let queries: Vec<&str> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(queries.len() >= 10);
    for query in queries {
        // Grafana fills in $__rate_interval; Prometheus answers "success" only to valid PromQL.
        let query = query.replace("$__rate_interval", "1m");
        prometheus.api("query", &[("query", &query)]).await;
    }
}

#[test]
fn deploy_alerting_rules_pass_promtool_checks_and_unit_tests() {
    require(PROMTOOL);
    let dir = deploy_dir().join("monitoring");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let output = Command::new(PROMTOOL)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("failed to run {PROMTOOL}: {e}"));
        assert!(
            output.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
