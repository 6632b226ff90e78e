//! The real binary as its own process: configured through `RESOURCE_*` variables, accepting a
//! token from a separate auth-service, and stopping cleanly on SIGTERM.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use proto::person::v1::{ListPersonsRequest, person_service_client::PersonServiceClient};
use resource_service::domain::sample_persons;
use tonic::transport::Channel;

use crate::{auth_service::spawn_auth, helpers::with_token};

fn resource_service() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resource-service"));
    // Only what the test sets: a developer's own RESOURCE_* variables must not leak in.
    command.env_clear().stdin(Stdio::null());
    if std::env::var_os("TEST_LOG").is_none() {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child if the test fails before stopping it.
struct Process(Option<Child>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect(url: &str) -> Channel {
    for _ in 0..200 {
        if let Ok(channel) = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("resource-service did not start listening at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_accepts_auth_service_tokens_and_stops_on_sigterm() {
    let auth = spawn_auth().await;
    let port = free_port();
    let db = std::env::temp_dir().join(format!("resource-bin-{}.db", uuid::Uuid::new_v4()));
    let child = resource_service()
        .env("RESOURCE_GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "RESOURCE_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        )
        .env("RESOURCE_AUTH_URL", &auth.url)
        .env("RESOURCE_SAMPLE_DATA", "true")
        .spawn()
        .unwrap();
    let mut process = Process(Some(child));

    let channel = connect(&format!("http://127.0.0.1:{port}")).await;
    let token = auth.sign_in("root").await;
    let persons = PersonServiceClient::new(channel)
        .list_persons(with_token(ListPersonsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .persons;
    assert_eq!(persons.len(), sample_persons().len());

    let mut child = process.0.take().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exited with {status}");
}

#[test]
fn the_binary_refuses_a_short_hs256_secret_with_a_usage_error() {
    let status = resource_service()
        .env("RESOURCE_TOKEN_ALG", "HS256")
        .env("RESOURCE_HS256_SECRET", "short")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
}
