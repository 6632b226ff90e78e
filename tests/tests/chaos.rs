//! Chaos over the real binaries, two replicas of each service on PostgreSQL: a rolling restart
//! and a `kill -9` under load lose no request, and a PostgreSQL outage turns every service
//! not-ready with 503s (never 500s) within 10 s, then heals by itself within 15 s of the
//! database's return, leaving nothing half-written.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use e2e::{
    AuthReplica, Cluster, Credentials, DRAIN_GRACE, Gateway, ResourceReplica, ServingStatus,
    SignedIn, Stack, authorized, health_status,
};
use proto::{auth::v1::SignInRequest, person::v1::ListPersonsRequest};
use reqwest::{RequestBuilder, StatusCode, header};
use serde_json::{Value, json};

/// Within this long of PostgreSQL stopping, every service says it is not ready.
const NOT_READY_WITHIN: Duration = Duration::from_secs(10);
/// Within this long of PostgreSQL coming back, every service is ready and serving again.
const HEALED_WITHIN: Duration = Duration::from_secs(15);
/// How long a rolling restart may take to bring one replica back into every gateway's rotation.
const BACK_IN_ROTATION_WITHIN: Duration = Duration::from_secs(30);

/// What one request through a gateway answered; `status` is `None` when no answer came.
#[derive(Debug)]
struct Outcome {
    what: &'static str,
    /// Which gateway answered; read in failure messages only.
    #[allow(dead_code)]
    gateway: usize,
    /// When the request was sent and when its answer (or failure) came.
    sent: Instant,
    at: Instant,
    status: Option<StatusCode>,
    retry_after: Option<String>,
    body: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK)
    }
}

/// The requests the load sends: reads with a reader's token and sign-ins of another user (so
/// the per-user session cap, which ends the oldest sessions, never revokes the reader's token).
#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    SignIn,
}

struct Load<'a> {
    gateways: &'a [Gateway],
    reader: &'a SignedIn,
    signer: &'a Credentials,
    stop: AtomicBool,
    outcomes: Mutex<Vec<Outcome>>,
    done: AtomicUsize,
}

impl<'a> Load<'a> {
    fn new(gateways: &'a [Gateway], reader: &'a SignedIn, signer: &'a Credentials) -> Self {
        Self {
            gateways,
            reader,
            signer,
            stop: AtomicBool::new(false),
            outcomes: Mutex::new(Vec::new()),
            done: AtomicUsize::new(0),
        }
    }

    /// One worker per op in `ops`, each sending its op in turn through every gateway, pausing
    /// `pause` between requests, until [`Load::stop`].
    async fn run(&self, ops: &[Op], pause: Duration) {
        let workers = ops.iter().enumerate().map(|(worker, &op)| async move {
            let mut n = worker;
            while !self.stop.load(Ordering::SeqCst) {
                let gateway = n % self.gateways.len();
                let outcome = self.send(op, gateway).await;
                self.outcomes.lock().unwrap().push(outcome);
                self.done.fetch_add(1, Ordering::SeqCst);
                n += 1;
                tokio::time::sleep(pause).await;
            }
        });
        futures::future::join_all(workers).await;
    }

    async fn send(&self, op: Op, gateway: usize) -> Outcome {
        let g = &self.gateways[gateway];
        let (what, request) = match op {
            Op::Read => (
                "read",
                g.get("/api/persons?pageSize=5")
                    .bearer_auth(&self.reader.access_token),
            ),
            Op::SignIn => (
                "sign-in",
                g.post("/api/auth/signin").json(&json!({
                    "username": self.signer.username,
                    "password": self.signer.password,
                })),
            ),
        };
        send(what, gateway, request).await
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until `more` requests have finished since this was called.
    async fn until_more_done(&self, more: usize) {
        let target = self.done.load(Ordering::SeqCst) + more;
        while self.done.load(Ordering::SeqCst) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn outcomes(self) -> Vec<Outcome> {
        self.outcomes.into_inner().unwrap()
    }
}

async fn send(what: &'static str, gateway: usize, request: RequestBuilder) -> Outcome {
    let sent = Instant::now();
    let (status, retry_after, body) = match request.send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (
                Some(status),
                retry_after,
                response.text().await.unwrap_or_default(),
            )
        }
        Err(e) => (None, None, format!("no answer: {e}")),
    };
    Outcome {
        what,
        gateway,
        sent,
        at: Instant::now(),
        status,
        retry_after,
        body,
    }
}

/// A new user signed up and in through the first gateway.
async fn new_user(stack: &Stack, prefix: &str) -> (Credentials, SignedIn) {
    let user = Credentials::random(prefix);
    stack.gateways[0].sign_up(&user).await;
    let signed_in = stack.gateways[0].sign_in(&user).await;
    (user, signed_in)
}

fn sign_up(gateway: &Gateway, user: &Credentials) -> RequestBuilder {
    gateway.post("/api/auth/signup").json(&json!({
        "username": user.username,
        "email": format!("{}@example.com", user.username),
        "password": user.password,
    }))
}

fn sign_in(gateway: &Gateway, user: &Credentials) -> RequestBuilder {
    gateway.post("/api/auth/signin").json(&json!({
        "username": user.username,
        "password": user.password,
    }))
}

/// Fails the test unless every outcome is a 200, listing those that were not.
fn assert_all_ok(outcomes: &[Outcome], context: &str) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    assert!(
        failed.is_empty(),
        "{context}: {} of {} requests failed: {failed:#?}",
        failed.len(),
        outcomes.len()
    );
}

/// Polls until every gateway counts every replica up again.
async fn until_every_gateway_sees_every_replica(gateways: &[Gateway]) {
    let deadline = Instant::now() + BACK_IN_ROTATION_WITHIN;
    for gateway in gateways {
        loop {
            let Err(last) = gateway.sees_every_replica_up().await else {
                break;
            };
            assert!(
                Instant::now() < deadline,
                "{} did not see every replica up within {BACK_IN_ROTATION_WITHIN:?} (last \
                 /readyz: {last}): {}",
                gateway.process.label(),
                gateway.process.describe()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_of_every_replica_fails_no_read_and_no_sign_in() {
    let mut stack = Stack::start("rolling", 2, 2, 2).await;
    let (_, reader) = new_user(&stack, "reader").await;
    let (signer, _) = new_user(&stack, "signer").await;
    let auth_urls: Vec<String> = stack.auth.iter().map(|r| r.url.clone()).collect();

    let Stack {
        deployment,
        resource_database_url,
        auth,
        resource,
        gateways,
    } = &mut stack;
    let load = Load::new(gateways, &reader, &signer);
    // Each restart's window, from SIGTERM until every gateway has the new process back.
    let mut windows: Vec<(String, Instant, Instant)> = Vec::new();
    let restarts = async {
        load.until_more_done(10).await;
        for (i, replica) in auth.iter_mut().enumerate() {
            let from = Instant::now();
            replica.process.terminate();
            let status = replica.process.wait_for_exit(DRAIN_GRACE).await;
            assert!(status.success(), "auth-{i} exited with {status}");
            let mut again =
                AuthReplica::spawn_at(replica.addr, deployment, &format!("rolling-auth-{i}-again"));
            again.wait_until_serving().await;
            *replica = again;
            until_every_gateway_sees_every_replica(load.gateways).await;
            windows.push((format!("auth-{i}"), from, Instant::now()));
            load.until_more_done(10).await;
        }
        for (i, replica) in resource.iter_mut().enumerate() {
            let from = Instant::now();
            replica.process.terminate();
            let status = replica.process.wait_for_exit(DRAIN_GRACE).await;
            assert!(status.success(), "resource-{i} exited with {status}");
            let mut again = ResourceReplica::spawn_at(
                replica.addr,
                resource_database_url,
                &auth_urls,
                &format!("rolling-resource-{i}-again"),
            );
            again.wait_until_serving().await;
            *replica = again;
            until_every_gateway_sees_every_replica(load.gateways).await;
            windows.push((format!("resource-{i}"), from, Instant::now()));
            load.until_more_done(10).await;
        }
        load.stop();
    };
    tokio::join!(
        load.run(
            &[Op::Read, Op::Read, Op::SignIn, Op::SignIn],
            Duration::from_millis(10)
        ),
        restarts
    );
    let outcomes = load.outcomes();
    for (replica, from, to) in &windows {
        // Requests in flight at any moment of the window: a restart quicker than one sign-in
        // still has one that began before it and ended after.
        let during = |what| {
            outcomes
                .iter()
                .filter(|o| o.what == what && o.sent < *to && o.at > *from)
                .count()
        };
        let (reads, sign_ins) = (during("read"), during("sign-in"));
        eprintln!(
            "restarting {replica} took {:?}; meanwhile {reads} reads and {sign_ins} sign-ins \
             were in flight",
            *to - *from
        );
        assert!(
            reads > 0 && sign_ins > 0,
            "no load while {replica} restarted: {reads} reads, {sign_ins} sign-ins"
        );
    }
    eprintln!("{} requests in all", outcomes.len());
    assert_all_ok(&outcomes, "during the rolling restart");
}

#[tokio::test]
async fn a_killed_auth_replica_costs_no_sign_in() {
    let stack = Stack::start("kill", 2, 1, 2).await;
    let (_, reader) = new_user(&stack, "reader").await;
    let (signer, _) = new_user(&stack, "signer").await;

    let load = Load::new(&stack.gateways, &reader, &signer);
    let killed = &stack.auth[0];
    let chaos = async {
        load.until_more_done(20).await;
        killed.process.kill();
        eprintln!("killed {}", killed.process.label());
        load.until_more_done(40).await;
        load.stop();
    };
    tokio::join!(load.run(&[Op::SignIn; 4], Duration::from_millis(5)), chaos);
    let outcomes = load.outcomes();
    let retried: usize = stack
        .gateways
        .iter()
        .map(|g| {
            g.process
                .logs()
                .matches("retrying on another replica")
                .count()
        })
        .sum();
    eprintln!(
        "{} sign-ins; the gateways retried {retried} calls on another replica",
        outcomes.len()
    );
    assert_all_ok(&outcomes, "sign-ins around the kill -9 of auth-0");
    for gateway in &stack.gateways {
        let (status, body) = gateway.readyz().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// A 503 in the API's error model: a JSON body with a code and a message that names no
/// internals, and a `Retry-After`.
fn assert_clear_503(outcome: &Outcome) {
    assert_eq!(
        outcome.status,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "{outcome:?}"
    );
    let body: Value = serde_json::from_str(&outcome.body)
        .unwrap_or_else(|e| panic!("a 503 without a JSON body ({e}): {outcome:?}"));
    assert!(
        matches!(body["code"].as_str(), Some("unavailable" | "timeout")),
        "{outcome:?}"
    );
    assert_no_internals(body["message"].as_str().unwrap_or_default());
    assert!(
        outcome.retry_after.is_some(),
        "a 503 without Retry-After: {outcome:?}"
    );
}

fn assert_no_internals(message: &str) {
    let lower = message.to_lowercase();
    for internal in [
        "sqlx",
        "pool",
        "127.0.0.1",
        "postgres",
        "connection",
        "error returned",
    ] {
        assert!(
            !lower.contains(internal),
            "the message {message:?} gives away {internal:?}"
        );
    }
}

/// The services' and gateways' readiness at one moment: `true` for ready. A gateway counts as
/// ready, when `want`ing ready, only once it sees every replica up; when `want`ing not ready,
/// until its `/readyz` answers something other than 200.
async fn readiness(stack: &Stack, want: bool) -> Vec<(String, bool)> {
    let mut states = Vec::new();
    for (label, url) in stack
        .auth
        .iter()
        .map(|r| (r.process.label(), &r.url))
        .chain(stack.resource.iter().map(|r| (r.process.label(), &r.url)))
    {
        let serving = health_status(url).await == Ok(ServingStatus::Serving);
        states.push((label.to_owned(), serving));
    }
    for gateway in &stack.gateways {
        let ready = if want {
            gateway.sees_every_replica_up().await.is_ok()
        } else {
            !matches!(gateway.readyz().await, Ok((status, _)) if status != StatusCode::OK)
        };
        states.push((gateway.process.label().to_owned(), ready));
    }
    states
}

/// Polls [`readiness`] until every entry is `want`; returns how long that took after `since`,
/// failing the test once `within` has passed.
async fn until_every_service_is(
    stack: &Stack,
    want: bool,
    since: Instant,
    within: Duration,
) -> Duration {
    loop {
        let states = readiness(stack, want).await;
        if states.iter().all(|(_, ready)| *ready == want) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "not every service is {} within {within:?}: {states:?}",
            if want { "ready" } else { "not ready" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_postgresql_outage_is_a_clean_503_and_heals_by_itself() {
    // A cluster of the test's own: stopping it disturbs no other test.
    let cluster = Cluster::start("outage").await;
    let stack = Stack::start_on(&cluster, "outage", [2, 2, 2]).await;
    let (_, reader) = new_user(&stack, "reader").await;
    let (signer, _) = new_user(&stack, "signer").await;
    let gateways = &stack.gateways;

    // Sign-ups racing the stop, sent 100 ms apart: each must end up whole or not at all.
    let racing: Vec<Credentials> = (0..6).map(|_| Credentials::random("racer")).collect();
    let racers = futures::future::join_all(racing.iter().enumerate().map(|(n, user)| async move {
        tokio::time::sleep(Duration::from_millis(100) * n as u32).await;
        send("sign-up", n % 2, sign_up(&gateways[n % 2], user)).await
    }));

    // Reads and sign-ins all along, through both gateways.
    let load = Load::new(gateways, &reader, &signer);
    // A sign-up while the database is known to be down.
    let lost = Credentials::random("lost");
    let chaos = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.stop().await;
        let stopped_at = Instant::now();
        eprintln!("PostgreSQL stopped");
        let not_ready_after =
            until_every_service_is(&stack, false, stopped_at, NOT_READY_WITHIN).await;
        eprintln!("every service not ready {not_ready_after:?} after PostgreSQL stopped");

        // Through each gateway: 503, clearly; straight at each service: UNAVAILABLE.
        let mut during = Vec::new();
        for n in 0..gateways.len() {
            during.push(load.send(Op::Read, n).await);
            during.push(load.send(Op::SignIn, n).await);
        }
        during.push(send("sign-up", 0, sign_up(&gateways[0], &lost)).await);
        for outcome in &during {
            assert_clear_503(outcome);
        }
        for replica in &stack.auth {
            let status = replica
                .client()
                .await
                .sign_in(SignInRequest {
                    login: signer.username.clone(),
                    password: signer.password.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_no_internals(status.message());
        }
        for replica in &stack.resource {
            let status = replica
                .client()
                .await
                .list_persons(authorized(
                    ListPersonsRequest::default(),
                    &reader.access_token,
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_no_internals(status.message());
        }

        cluster.resume().await;
        let resumed_at = Instant::now();
        eprintln!("PostgreSQL started again");
        let ready_after = until_every_service_is(&stack, true, resumed_at, HEALED_WITHIN).await;
        // Ready means serving: a read and a sign-in through each gateway succeed.
        for n in 0..gateways.len() {
            for op in [Op::Read, Op::SignIn] {
                let outcome = load.send(op, n).await;
                assert!(outcome.ok(), "after the outage: {outcome:?}");
            }
        }
        let healed_after = resumed_at.elapsed();
        assert!(
            healed_after < HEALED_WITHIN,
            "healed only {healed_after:?} after PostgreSQL came back"
        );
        eprintln!(
            "every service ready {ready_after:?} and serving {healed_after:?} after \
             PostgreSQL came back"
        );
        load.stop();
        (not_ready_after, healed_after, during)
    };
    let (raced, (), (not_ready_after, healed_after, during)) = tokio::join!(
        racers,
        load.run(&[Op::Read, Op::SignIn], Duration::from_millis(100)),
        chaos
    );
    eprintln!(
        "not ready after {not_ready_after:?}, healed after {healed_after:?}; {} probes during \
         the outage",
        during.len()
    );

    // Throughout: answers are 200s or clear 503s, never a 500.
    let outcomes = load.outcomes();
    for outcome in outcomes.iter().chain(&raced).filter(|o| !o.ok()) {
        assert_clear_503(outcome);
    }

    // Nothing half-written: a sign-up cut off by the outage either made a whole account
    // (it signs in, with its role) or none (the name and email are free again).
    for (user, outcome) in racing
        .iter()
        .zip(&raced)
        .chain([(&lost, &during[during.len() - 1])])
    {
        let signed_in = send("sign-in", 0, sign_in(&gateways[0], user)).await;
        match signed_in.status {
            Some(StatusCode::OK) => {
                let body: Value = serde_json::from_str(&signed_in.body).unwrap();
                assert_eq!(
                    body["roles"],
                    json!(["ROLE_USER"]),
                    "{} is half made",
                    user.username
                );
                eprintln!(
                    "{} exists (its sign-up answered {:?})",
                    user.username, outcome.status
                );
            }
            Some(StatusCode::UNAUTHORIZED) => {
                assert_ne!(
                    outcome.status,
                    Some(StatusCode::OK),
                    "{} signed up but cannot sign in",
                    user.username
                );
                let again = send("sign-up", 1, sign_up(&gateways[1], user)).await;
                assert!(
                    again.ok(),
                    "{} was not made, yet signing up again fails: {again:?}",
                    user.username
                );
                let signed_in = send("sign-in", 0, sign_in(&gateways[0], user)).await;
                assert!(signed_in.ok(), "{signed_in:?}");
                eprintln!(
                    "{} was not made (its sign-up answered {:?})",
                    user.username, outcome.status
                );
            }
            _ => panic!(
                "signing in as {} after the outage: {signed_in:?}",
                user.username
            ),
        }
    }
}
