//! A real Prometheus (Debian's `/usr/bin/prometheus`, which scripts/test installs) scraping the
//! services every second, asked through its HTTP API as a dashboard would ask it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Where Debian's package puts the server and its rule checker.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Fails the test, saying how to install it, when a Prometheus binary is missing: these tests
/// are never skipped.
pub fn require(binary: &str) {
    assert!(
        Path::new(binary).is_file(),
        "{binary} is missing: the metrics tests run Debian's Prometheus; install it with \
         `apt-get install prometheus` (scripts/test does, as root)"
    );
}

/// `deploy/` in the source tree.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in the workspace")
        .join("deploy")
}

/// One scrape target: the `app` label it gets (as the pods' `app` label in the cluster) and
/// its `/metrics` address.
pub struct Target {
    pub app: &'static str,
    pub addr: SocketAddr,
}

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on a free port with a generated configuration: every target scraped
    /// each second, deploy's alerting rules loaded, storage in a temporary directory. Waits
    /// until it is ready.
    pub async fn start(targets: &[Target]) -> Self {
        require(PROMETHEUS);
        let dir = std::env::temp_dir().join(crate::unique("prometheus-"));
        std::fs::create_dir_all(&dir).expect("a temporary directory for Prometheus");
        let rules = deploy_dir().join("monitoring/alerts.yaml");
        let mut config = format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n"
        );
        for (i, target) in targets.iter().enumerate() {
            config.push_str(&format!(
                "  - job_name: {app}-{i}\n    static_configs: [{{ targets: [\"{addr}\"], labels: {{ app: {app} }} }}]\n",
                app = target.app,
                addr = target.addr,
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the Prometheus configuration");

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {PROMETHEUS}: {e}"));
        let prometheus = Self {
            child,
            dir,
            url: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
        };
        prometheus.wait_until_ready().await;
        prometheus
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus is not ready after 60 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Prometheus logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `query`, failing the test unless Prometheus answers success.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus did not answer /api/v1/{path}: {e}"));
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(
            body["status"], "success",
            "/api/v1/{path} {query:?}: {body}"
        );
        body["data"].clone()
    }

    /// The value of an instant query that yields at most one sample (wrap it in `sum(…)`);
    /// `None` when it yields none (no such series yet).
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let data = self.api("query", &[("query", promql)]).await;
        let result = data["result"].as_array().expect("a vector result");
        assert!(result.len() <= 1, "{promql} yields several series: {data}");
        let sample = result.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Polls `promql` until `accept` holds for its value, failing the test after `within`.
    pub async fn wait_for(
        &self,
        promql: &str,
        within: Duration,
        accept: impl Fn(Option<f64>) -> bool,
    ) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.value(promql).await;
            if accept(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is still {value:?} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("Prometheus kept its files in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
