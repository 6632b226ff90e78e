//! The gateway keeps to its own OpenAPI document: schemathesis (the pinned venv's, see
//! scripts/test) reads `/openapi.json` from a real stack and sends what the document allows and
//! what it forbids, as an admin, with every check on. It fails on a 5xx, a dropped connection, an
//! answer the document does not describe (status, headers, content type, body), a valid request
//! refused or an invalid one accepted.
//!
//! schemathesis reuses what answers contain (the admin's own user id, its session ids) in later
//! requests, so with the admin's token it would end that very session and turn every later call
//! into a 401 that says nothing about the route called. So three runs, each with a session of
//! its own (about 60 s of budget in all):
//!
//! 1. every operation except the five that can end the run's own session, with the admin's
//!    first session; the test then checks that this token still works, so a run that lost its
//!    session cannot pass unnoticed;
//! 2. the three that end sessions by id (one's own, one or all of a user's) and the one that
//!    sets a user's roles (taking a role away from oneself, even while keeping admin, ends every
//!    session of one's own): alone, they learn no ids from answers, so they meet made-up ones
//!    (404) and malformed ones (400);
//! 3. sign-out alone, which ends its session at once; its later cases are answered 204 all the
//!    same (a token that names no live session leaves nothing to end).
//!
//! The other destructive admin routes run in the first: disabling oneself is refused (409),
//! rotating the signing key does not end any session, and made-up ids get 404.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use e2e::Stack;
use reqwest::StatusCode;

/// The operations that end sessions by id or by taking a role away, as `METHOD /path` for
/// schemathesis' `--include-name` / `--exclude-name`. Given the caller's own ids they end its
/// session: a replay of one CI run (`SCHEMATHESIS_SEED=109039474966278592149327316209071567014`)
/// gave the admin the moderator role and then took it back, which ended the admin's session.
const ENDING_SESSIONS: [&str; 4] = [
    "DELETE /api/auth/sessions/{id}",
    "DELETE /api/admin/users/{id}/sessions",
    "DELETE /api/admin/users/{id}/sessions/{sid}",
    "PUT /api/admin/users/{id}/roles",
];

/// Ends the caller's session (with `all`, every one of its sessions) whatever else it is sent.
const SIGN_OUT: &str = "POST /api/auth/signout";

/// Time budgets of the three runs (schemathesis repeats fuzzing until its budget is spent).
const MAIN_BUDGET_SECONDS: u64 = 55;
const ENDING_BUDGET_SECONDS: u64 = 12;
const SIGN_OUT_BUDGET_SECONDS: u64 = 15;

/// Past its budget plus this, a run is killed and the test fails: start-up, and the last
/// requests' timeouts.
const GRACE: Duration = Duration::from_secs(90);

/// Page tokens are opaque: only those a service issued are valid (others are a 400), which no
/// schema can state, so every case sends the empty token (the first page) instead of made-up
/// ones. pageSize and the other parameters are generated as usual.
const CONFIG: &str = r#"
[parameters]
"query.pageToken" = ""
"#;

/// The schemathesis CLI of the test venv: beside `TEST_PYTHON`, else in `target/pyvenv`.
fn schemathesis() -> PathBuf {
    let bin = match std::env::var_os("TEST_PYTHON") {
        Some(python) => PathBuf::from(python)
            .parent()
            .expect("TEST_PYTHON names a file in a directory")
            .to_path_buf(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin"),
    };
    let path = bin.join("schemathesis");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test, which creates the test venv (target/pyvenv) from \
         tests/python/requirements.txt",
        path.display()
    );
    path
}

/// One bounded schemathesis run with every check, authenticated with `token`; `filter` selects
/// the operations. Fails the test unless schemathesis exits 0, printing its report either way.
async fn run(
    schemathesis: &Path,
    openapi_url: &str,
    token: &str,
    budget_seconds: u64,
    filter: &[&str],
) {
    let workdir = e2e::log_dir().join(e2e::unique("schemathesis-"));
    std::fs::create_dir_all(&workdir).unwrap();
    // Output to files, not pipes: nothing to drain while waiting, and nothing lost on a kill.
    let stdout_path = workdir.join("stdout");
    let stderr_path = workdir.join("stderr");
    let config = workdir.join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().expect("the log directory's path is text");
    let budget = budget_seconds.to_string();
    let authorization = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "--config-file",
        config,
        "run",
        openapi_url,
        "--checks",
        "all",
        // The stateful phase chains answers into requests just as the others reuse them; it
        // would add nothing the split above does not already keep safe, and costs the budget.
        "--phases",
        "examples,coverage,fuzzing",
        "--max-time",
        &budget,
        "--max-examples",
        "50",
        // One worker: schemathesis' generation is not always thread-safe on CPython 3.11 (two
        // workers once failed inside Python's `ast` module with "AST constructor recursion depth
        // mismatch", a fault of the tool and not of the API).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        // The email rule is three patterns (shape, length, local part), and values drawn from
        // the first are filtered by the others; now and then Hypothesis judges that it filters
        // too much. That says how hard values are to draw, not how the API answers.
        "--suppress-health-check",
        "filter_too_much",
        "--no-color",
        "--header",
        &authorization,
    ];
    args.extend_from_slice(filter);
    // A run's report names its seed; SCHEMATHESIS_SEED replays it (same cases, as far as the
    // answers and the time budget allow).
    let seed = std::env::var("SCHEMATHESIS_SEED").ok();
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    let started = Instant::now();
    let mut child = std::process::Command::new(schemathesis)
        .current_dir(&workdir)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("schemathesis starts");
    let hard_limit = Duration::from_secs(budget_seconds) + GRACE;
    let status: Option<ExitStatus> = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > hard_limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&workdir);
    // The summary (cases run, failures found) is worth seeing on success too.
    println!("schemathesis {filter:?} took {took:.1?}\n{stdout}\n{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("schemathesis ran longer than {hard_limit:?} and was killed:\n{stdout}\n{stderr}")
    });
    assert!(
        status.success(),
        "schemathesis {filter:?} found problems ({status}):\n{stdout}\n{stderr}"
    );
    // An empty run (its budget spent before the first case) also exits 0.
    let generated = stdout
        .split_once("Test cases:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        generated.is_some_and(|n| n > 0),
        "schemathesis {filter:?} ran no test case:\n{stdout}"
    );
}

/// What schemathesis found on PostgreSQL, kept as a check of its own: a NUL in a sign-in's login
/// or in a name filter reached the database, which refuses one in text, and the gateway answered
/// 500. A login no account can have is a refused sign-in; a filter no name can match, a 400.
async fn control_characters_are_refused(gateway: &e2e::Gateway, token: &str) {
    let sign_in = gateway
        .post("/api/auth/signin")
        .json(&serde_json::json!({"username": "ann\u{0}", "password": "not-her-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), StatusCode::UNAUTHORIZED);
    let filter = gateway
        .get("/api/persons?name=ann%00")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(filter.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_gateway_answers_as_its_openapi_document_says() {
    let schemathesis = schemathesis();
    let stack = Stack::start("schemathesis", 1, 1, 1).await;
    let gateway = &stack.gateways[0];
    let openapi = gateway.url("/openapi.json");
    // The deployment's own admin, created for this stack alone (AUTH_BOOTSTRAP_ADMIN_*).
    let admin = &stack.deployment.admin;

    let signed_in = gateway.sign_in(admin).await;
    let token = signed_in.access_token;
    control_characters_are_refused(gateway, &token).await;
    let mut excluded = Vec::new();
    for name in ENDING_SESSIONS.iter().chain([&SIGN_OUT]) {
        excluded.extend(["--exclude-name", name]);
    }
    run(
        &schemathesis,
        &openapi,
        &token,
        MAIN_BUDGET_SECONDS,
        &excluded,
    )
    .await;
    let me = gateway
        .get("/api/auth/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "the run lost the admin's session, so most of its answers were 401s: {}",
        me.text().await.unwrap_or_default()
    );

    // schemathesis signs in with the names it saw (the admin's among them) and wrong
    // passwords, so the admin's sign-ins from here are throttled by now: lift that, as an admin
    // would, for the two sign-ins below (the runs after this one do not sign in).
    let cleared = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(gateway.url(&format!(
            "/api/admin/users/{}/sign-in-throttle",
            signed_in.id
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);

    // Each with a session of its own that the run may end.
    let mut included = Vec::new();
    for name in ENDING_SESSIONS {
        included.extend(["--include-name", name]);
    }
    let token = gateway.sign_in(admin).await.access_token;
    run(
        &schemathesis,
        &openapi,
        &token,
        ENDING_BUDGET_SECONDS,
        &included,
    )
    .await;
    let token = gateway.sign_in(admin).await.access_token;
    let sign_out = ["--include-name", SIGN_OUT];
    run(
        &schemathesis,
        &openapi,
        &token,
        SIGN_OUT_BUDGET_SECONDS,
        &sign_out,
    )
    .await;
}
