//! TLS between the services and to PostgreSQL, over the real binaries with certificates the test
//! makes: auth-service and resource-service serve only TLS (their plain-text health ports answer
//! the probes), resource-service and the gateway dial them over `https://` trusting the test's
//! CA, and both services reach PostgreSQL with `sslmode=verify-full`. A client or a database URL
//! trusting another CA is refused with an error that says why.

#![allow(clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{
    AuthDeployment, AuthReplica, Cluster, Credentials, Gateway, Process, ResourceReplica,
    ServingStatus, create_database_on, health_status, wait_until_serving,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::StatusCode;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A CA and one server certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn make(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |file: &str, pem: String| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server.key", key.serialize_pem()),
        }
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(e2e::unique("e2e-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn localhost() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, e2e::free_port()))
}

/// `url` with PostgreSQL's `sslmode=verify-full` against `ca`.
fn verify_full(url: &str, ca: &Path) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())
}

/// The overall health status of a TLS server, asked by a client that trusts `ca`.
async fn tls_health(addr: SocketAddr, ca: &Path) -> Result<ServingStatus, String> {
    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| telemetry::tls::error_chain(&e))?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    HealthClient::new(channel)
        .check(request)
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| telemetry::tls::error_chain(&s))
}

/// Waits for a process to exit and returns its code and its log.
async fn exit_of(mut process: Process) -> (Option<i32>, String) {
    let status = process.wait_for_exit(Duration::from_secs(60)).await;
    (status.code(), process.logs())
}

#[tokio::test]
async fn services_speak_tls_to_each_other_and_to_postgres() {
    let dir = temp_dir();
    let pki = Pki::make(&dir, "good");
    let other = Pki::make(&dir, "other");
    let postgres = Cluster::start_tls("tls", &pki.cert, &pki.key).await;

    let auth_db_url = create_database_on(&postgres.admin_url, "tls_auth").await;
    let mut deployment = AuthDeployment::on_database(verify_full(&auth_db_url, &pki.ca));
    let auth_health = localhost();
    deployment.env = vec![
        ("AUTH_TLS_CERT_FILE", pki.cert.display().to_string()),
        ("AUTH_TLS_KEY_FILE", pki.key.display().to_string()),
        ("AUTH_HEALTH_ADDR", auth_health.to_string()),
    ];
    let mut auth = AuthReplica::spawn(&deployment, "tls-auth");
    // The plain-text health port is how the probes (and this test) see it come up.
    wait_until_serving(&mut auth.process, &format!("http://{auth_health}")).await;
    let auth_url = format!("https://{}", auth.addr);

    let resource_db = create_database_on(&postgres.admin_url, "tls_resource").await;
    let resource_health = localhost();
    let mut resource = ResourceReplica::spawn_with(
        localhost(),
        &verify_full(&resource_db, &pki.ca),
        std::slice::from_ref(&auth_url),
        "tls-resource",
        &[
            ("RESOURCE_AUTH_TLS_CA_FILE", pki.ca.display().to_string()),
            ("RESOURCE_TLS_CERT_FILE", pki.cert.display().to_string()),
            ("RESOURCE_TLS_KEY_FILE", pki.key.display().to_string()),
            ("RESOURCE_HEALTH_ADDR", resource_health.to_string()),
        ],
    );
    // SERVING needs the token keys, fetched from auth-service over TLS.
    wait_until_serving(&mut resource.process, &format!("http://{resource_health}")).await;
    let resource_url = format!("https://{}", resource.addr);

    // The TLS ports answer a client that trusts the CA, and no plain-text client.
    assert_eq!(
        tls_health(auth.addr, &pki.ca).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        tls_health(resource.addr, &pki.ca).await,
        Ok(ServingStatus::Serving)
    );
    for addr in [auth.addr, resource.addr] {
        let plain = health_status(&format!("http://{addr}")).await;
        assert!(plain.is_err(), "plain text answered at {addr}: {plain:?}");
    }
    // A client trusting another CA is refused, and says why.
    let error = tls_health(auth.addr, &other.ca).await.unwrap_err();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );

    // Through the gateway: sign in, then read.
    let ca_setting = ("GATEWAY_TLS_CA_FILE", pki.ca.display().to_string());
    let mut gateway = Gateway::spawn_with(
        std::slice::from_ref(&auth_url),
        std::slice::from_ref(&resource_url),
        "tls-gateway",
        &[ca_setting],
    );
    gateway.wait_until_every_replica_is_up().await;
    let admin = Credentials {
        username: deployment.admin.username.clone(),
        password: deployment.admin.password.clone(),
    };
    let token = gateway.sign_in(&admin).await.access_token;
    let persons = gateway
        .get("/api/persons")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        persons.status(),
        StatusCode::OK,
        "{:?}",
        persons.text().await
    );

    // A gateway trusting another CA never counts a replica as up, and logs the handshake's
    // failure.
    let mut distrustful = Gateway::spawn_with(
        std::slice::from_ref(&auth_url),
        std::slice::from_ref(&resource_url),
        "tls-gateway-other-ca",
        &[("GATEWAY_TLS_CA_FILE", other.ca.display().to_string())],
    );
    let mut logged = false;
    for _ in 0..100 {
        distrustful.process.assert_running();
        logged = distrustful
            .process
            .logs()
            .contains("invalid peer certificate");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "{}", distrustful.process.describe());
    let (status, _) = distrustful.readyz().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // A service whose database URL trusts another CA does not start, and says why; the URL is
    // a secret: its query and password never reach the log.
    let mut wrong_ca = AuthDeployment::on_database(verify_full(&auth_db_url, &other.ca));
    wrong_ca.admin = deployment.admin.clone();
    wrong_ca.key_encryption_key = deployment.key_encryption_key.clone();
    let (code, log) = exit_of(AuthReplica::spawn(&wrong_ca, "tls-auth-other-ca").process).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("failed to connect to the database") && log.contains("UnknownIssuer"),
        "{log}"
    );
    assert!(!log.contains("sslrootcert"), "{log}");
    // The same from sqlx's environment defaults, which deploy/components/tls sets.
    let wrong_ca = ResourceReplica::spawn_with(
        localhost(),
        &resource_db,
        std::slice::from_ref(&auth_url),
        "tls-resource-other-ca",
        &[
            ("RESOURCE_AUTH_TLS_CA_FILE", pki.ca.display().to_string()),
            ("PGSSLMODE", "verify-full".to_owned()),
            ("PGSSLROOTCERT", other.ca.display().to_string()),
        ],
    );
    let (code, log) = exit_of(wrong_ca.process).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("failed to connect to PostgreSQL") && log.contains("UnknownIssuer"),
        "{log}"
    );
}

#[tokio::test]
async fn an_https_url_without_a_usable_ca_file_is_a_configuration_error() {
    let dir = temp_dir();
    let not_pem = dir.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cases: [(&[(&str, String)], &str); 3] = [
        (&[], "GATEWAY_TLS_CA_FILE"),
        (
            &[("GATEWAY_TLS_CA_FILE", "/nonexistent/ca.pem".to_owned())],
            "GATEWAY_TLS_CA_FILE: cannot read /nonexistent/ca.pem",
        ),
        (
            &[("GATEWAY_TLS_CA_FILE", not_pem.display().to_string())],
            "holds no PEM certificate",
        ),
    ];
    for (env, expected) in cases {
        let gateway = Gateway::spawn_with(
            &["https://127.0.0.1:1".to_owned()],
            &["https://127.0.0.1:2".to_owned()],
            "tls-config",
            env,
        );
        let (code, log) = exit_of(gateway.process).await;
        assert_eq!(code, Some(64), "{log}");
        assert!(log.contains(expected), "{expected:?} not in {log}");
    }

    let resource = ResourceReplica::spawn_with(
        localhost(),
        "sqlite::memory:",
        &["https://127.0.0.1:1".to_owned()],
        "tls-config-resource",
        &[],
    );
    let (code, log) = exit_of(resource.process).await;
    assert_eq!(code, Some(64), "{log}");
    assert!(log.contains("RESOURCE_AUTH_TLS_CA_FILE"), "{log}");

    let mut deployment = AuthDeployment::on_database("sqlite::memory:".to_owned());
    deployment.env = vec![("AUTH_TLS_CERT_FILE", not_pem.display().to_string())];
    let auth = AuthReplica::spawn(&deployment, "tls-config-auth");
    let (code, log) = exit_of(auth.process).await;
    assert_eq!(code, Some(64), "{log}");
    assert!(log.contains("AUTH_TLS_KEY_FILE"), "{log}");
}
