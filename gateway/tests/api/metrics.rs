//! `/metrics` labels requests by route template (never the raw path) and reports the balancer's
//! replicas.

use gateway::{Application, Config, Settings};

/// The value of the sample `series` (name and labels exactly as exported), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_replicas_by_state() {
    telemetry::init_for_tests();
    let mut config = Config::for_tests(
        vec!["http://127.0.0.1:9".to_owned()],
        vec!["http://127.0.0.1:9".to_owned()],
    );
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = Application::build(Settings::try_from(config).unwrap())
        .await
        .unwrap();
    let (http, metrics) = (app.local_addr(), app.metrics_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://{http}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let person = get("/api/persons/8f3e1d2c").await.unwrap().status();
    assert_eq!(get("/no/such/page-4711").await.unwrap().status(), 404);

    let body = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |method: &str, route: &str, status: u16| {
        format!(
            "http_server_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        )
    };
    assert!(
        sample(&body, &series("GET", "/healthz", 200)) >= Some(1.0),
        "{body}"
    );
    assert!(
        sample(&body, &series("GET", "/api/persons/{id}", person.as_u16())) >= Some(1.0),
        "{body}"
    );
    assert!(
        sample(&body, &series("GET", "unmatched", 404)) >= Some(1.0),
        "{body}"
    );
    assert!(
        !body.contains("8f3e1d2c") && !body.contains("page-4711"),
        "{body}"
    );
    assert!(
        sample(
            &body,
            "http_server_request_duration_seconds_count{method=\"GET\",route=\"/healthz\",status=\"200\"}"
        ) >= Some(1.0)
    );
    for backend in ["auth-service", "resource-service"] {
        let replicas: f64 = ["up", "down", "unknown"]
            .iter()
            .filter_map(|state| {
                sample(
                    &body,
                    &format!("gateway_backend_replicas{{backend=\"{backend}\",state=\"{state}\"}}"),
                )
            })
            .sum();
        assert_eq!(replicas, 1.0, "{body}");
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
