//! A stock OAuth 2.0 client library against the real binaries: `tests/python/oauth_client.py`
//! (Authlib and PyJWT from the test venv, see scripts/test) discovers the gateway's endpoints
//! from its RFC 8414 metadata, gets tokens by the client-credentials grant with
//! client_secret_basic and client_secret_post, calls the API with them, introspects them, checks
//! them against the JWKS and the issuer, and sees a wrong secret refused as invalid_client. The
//! service account is created through the admin API.
//!
//! The issuer is the gateway's own URL, as in a deployment: auth-service's AUTH_TOKEN_ISSUER,
//! resource-service's RESOURCE_TOKEN_ISSUER and the gateway's GATEWAY_TOKEN_ISSUER all name it.

#![allow(clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{AuthDeployment, AuthReplica, Gateway, ResourceReplica};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Longest the Python client may take before it is killed and the test fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// The tokens' audience: auth-service's and resource-service's default.
const AUDIENCE: &str = "persons-api";

/// scripts/test's venv python (`TEST_PYTHON`, else `target/pyvenv/bin/python`).
fn python() -> PathBuf {
    let python = std::env::var_os("TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyvenv/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: the OAuth client test needs the Python test tools (Authlib, requests, \
         PyJWT); run scripts/test, which installs them into target/pyvenv and sets TEST_PYTHON",
        python.display()
    );
    python
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the client script to its end, bounded; fails the test with its output unless it exits 0.
async fn run_client(args: &[&str]) {
    let workdir = e2e::log_dir().join(e2e::unique("oauth-client-"));
    std::fs::create_dir_all(&workdir).unwrap();
    let (stdout_path, stderr_path) = (workdir.join("stdout"), workdir.join("stderr"));
    let mut child = Command::new(python())
        .arg(workspace().join("tests/python/oauth_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the test venv's python starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CLIENT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // The services are other processes; this only waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&workdir);
    println!("{stdout}{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("the OAuth client ran longer than {CLIENT_LIMIT:?}:\n{stdout}\n{stderr}")
    });
    assert!(
        status.success(),
        "the OAuth client failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("oauth client passed"), "{stdout}");
}

#[tokio::test]
async fn a_stock_oauth_client_gets_uses_and_introspects_a_service_token() {
    let python = python();
    assert!(python.is_file());
    let gateway_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, e2e::free_port()));
    let issuer = format!("http://{gateway_addr}");

    let (mut deployment, resource_database) =
        tokio::join!(AuthDeployment::create(), e2e::create_database("resource"));
    deployment.env = vec![("AUTH_TOKEN_ISSUER", issuer.clone())];
    let auth = AuthReplica::start(&deployment, "oauth-client-auth").await;
    let auth_urls = [auth.url.clone()];
    let mut resource = ResourceReplica::spawn_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, e2e::free_port())),
        &resource_database,
        &auth_urls,
        "oauth-client-resource",
        &[("RESOURCE_TOKEN_ISSUER", issuer.clone())],
    );
    resource.wait_until_serving().await;
    let mut gateway = Gateway::spawn_at(
        gateway_addr,
        &auth_urls,
        &[resource.url.clone()],
        "oauth-client-gateway",
        &[("GATEWAY_TOKEN_ISSUER", issuer.clone())],
    );
    gateway.wait_until_every_replica_is_up().await;

    let admin = gateway.sign_in(&deployment.admin).await.access_token;
    let created = gateway
        .post("/api/admin/service-accounts")
        .bearer_auth(&admin)
        .json(&json!({"name": e2e::unique("reporting-"), "roles": ["user"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let account: Value = created.json().await.unwrap();
    let client_id = account["clientId"].as_str().unwrap();
    let client_secret = account["clientSecret"].as_str().unwrap();

    run_client(&[&issuer, client_id, client_secret, AUDIENCE]).await;
}
