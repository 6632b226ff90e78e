//! The web page in a real browser: starts auth-service, resource-service and a gateway on real
//! ports, creates a moderator through the API, and runs (with the bootstrap admin's credentials) `tests/browser/flow.mjs` (playwright-core
//! driving Debian's headless Chromium). Needs `npm ci --prefix tests/browser` and the `chromium`
//! package; without them this test fails and says so rather than skipping.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/stack.rs"]
mod stack;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway::{Application, Config, Settings};

use stack::{ADMIN_PASSWORD, ADMIN_USERNAME, PASSWORD, spawn_stack_configured};

/// auth-service's shortest allowed lifetime.
const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(10);

/// Longest the browser flow may take before it is killed and the test fails.
const FLOW_LIMIT: Duration = Duration::from_secs(180);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("browser")
}

#[tokio::test]
async fn the_page_works_in_headless_chromium() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules").join("playwright-core").is_dir(),
        "{} has no node_modules/playwright-core: run `npm ci --prefix tests/browser` first",
        dir.display()
    );
    let chromium =
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's package (`apt-get install -y chromium`) or set CHROMIUM_PATH"
    );

    // Access tokens as short-lived as auth-service allows, so the page must renew them through
    // the cookie while the flow runs (and the flow checks that it did).
    let stack =
        spawn_stack_configured(1, |auth| auth.access_token_ttl = ACCESS_TOKEN_TTL, |_| {}).await;
    let (moderator, _) = stack.user_with_roles(&["user", "moderator"]).await;
    // A second gateway, on a real port for the browser; gateways share no state, so it serves
    // the same services as the in-process one the helpers use.
    let config = Config::for_tests(
        vec![stack.auth.url.clone()],
        stack.resources.iter().map(|r| r.url.clone()).collect(),
    );
    let settings = Settings::try_from(config).expect("valid test settings");
    let app = Application::build(settings).await.expect("gateway builds");
    let url = format!("http://{}/", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let mut child = Command::new("node")
        .arg(dir.join("flow.mjs"))
        .arg(&url)
        .arg(&moderator)
        .arg(PASSWORD)
        .arg(ADMIN_USERNAME)
        .arg(ADMIN_PASSWORD)
        .env("CHROMIUM_PATH", &chromium)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (is Node.js installed?)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > FLOW_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser flow took longer than {FLOW_LIMIT:?}");
        }
        // Yield so the in-process services keep answering the browser.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop.send(());
    server
        .await
        .expect("gateway task")
        .expect("gateway stopped cleanly");
    assert!(
        status.success(),
        "the browser flow failed ({status}); see its output above and tests/browser/artifacts/"
    );
}
