//! The retry policy of [`Backend::call`], with scripted outcomes instead of real replicas.

use std::sync::atomic::AtomicUsize;

use super::*;

/// Two replicas where nothing listens; the calls below never use their channels, they
/// script each attempt's outcome instead.
async fn backend() -> Backend {
    Backend::start(BackendConfig {
        name: "test",
        health_service: "test.v1.Test",
        targets: vec![
            Target::parse("http://127.0.0.1:9").unwrap(),
            Target::parse("http://127.0.0.2:9").unwrap(),
        ],
        health_interval: Duration::from_secs(3600),
        connect_timeout: Duration::from_millis(100),
        tls: None,
    })
    .await
    .unwrap()
}

fn not_reached() -> Status {
    Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)))
}

fn lost() -> Status {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    Status::from_error(Box::new(io))
}

/// Runs a call whose first attempt fails with `first`, later ones succeed; returns the
/// outcome and the number of attempts.
async fn call_failing_once(safety: Safety, first: fn() -> Status) -> (Result<(), Status>, usize) {
    let backend = backend().await;
    let attempts = AtomicUsize::new(0);
    let result = backend
        .call(safety, |_channel| {
            let n = attempts.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    Err(first())
                } else {
                    Ok(tonic::Response::new(()))
                }
            }
        })
        .await;
    (result, attempts.load(Ordering::Relaxed))
}

#[tokio::test]
async fn a_write_that_never_reached_its_replica_is_retried_on_another() {
    let (result, attempts) = call_failing_once(Safety::Once, not_reached).await;
    assert!(result.is_ok());
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_write_lost_in_flight_is_not_retried() {
    let (result, attempts) = call_failing_once(Safety::Once, lost).await;
    assert!(result.is_err());
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn a_read_lost_in_flight_is_retried_on_another_replica() {
    let (result, attempts) = call_failing_once(Safety::Idempotent, lost).await;
    assert!(result.is_ok());
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn an_answer_from_the_replica_is_never_retried() {
    let (result, attempts) =
        call_failing_once(Safety::Idempotent, || Status::unavailable("draining")).await;
    assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn retries_stop_when_every_replica_was_tried() {
    let backend = backend().await;
    let attempts = AtomicUsize::new(0);
    let result = backend
        .call(Safety::Idempotent, |_channel| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err::<tonic::Response<()>, _>(lost()) }
        })
        .await;
    assert!(result.is_err());
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        2,
        "two replicas, each tried once"
    );
}

fn go_away_enhance_your_calm() -> Status {
    // What tonic makes of a GOAWAY ENHANCE_YOUR_CALM: a status with the h2 error as its source.
    Status::from_error(Box::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM)))
}

#[tokio::test]
async fn a_request_refused_with_enhance_your_calm_leaves_the_replica_in_rotation() {
    let backend = backend().await;
    let (result, attempts) = call_failing_once(Safety::Idempotent, go_away_enhance_your_calm).await;
    assert!(result.is_err());
    assert_eq!(attempts, 1, "another replica would refuse it the same way");
    let _ = backend
        .call(Safety::Idempotent, |_channel| async {
            Err::<tonic::Response<()>, _>(go_away_enhance_your_calm())
        })
        .await;
    assert!(
        backend
            .replicas()
            .iter()
            .all(|r| r.state() != ReplicaState::Down)
    );
}

#[tokio::test]
async fn a_failed_replica_leaves_the_rotation() {
    let backend = backend().await;
    let _ = backend
        .call(Safety::Once, |_channel| async {
            Err::<tonic::Response<()>, _>(not_reached())
        })
        .await;
    let down = backend
        .replicas()
        .iter()
        .filter(|r| r.state() == ReplicaState::Down)
        .count();
    assert!(down >= 1);
}

#[tokio::test]
async fn a_call_to_a_replica_nothing_listens_on_never_reached_it() {
    let backend = backend().await;
    let replica = backend.replicas()[0].clone();
    let mut client = HealthClient::new(replica.conn.clone());
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(classify(&status), Failure::NotReached, "{status:?}");
}
