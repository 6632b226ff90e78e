//! One service binary running as a child process: started with exactly the environment a test
//! gives it, logging to its own file, stopped with SIGTERM, and killed if the test ends first.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};

pub struct Process {
    label: String,
    child: Child,
    /// stdout and stderr together, under `target/<profile>/e2e-logs/`; removed when the test
    /// passes unless `E2E_KEEP_LOGS` is set.
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `env` and nothing else from the test's environment, so a
    /// developer's `AUTH_*` or `RUST_LOG` cannot change what a test runs.
    pub fn spawn(binary: &str, label: &str, env: &[(&str, String)]) -> Self {
        let path = crate::binary(binary);
        let dir = crate::log_dir();
        let log = dir.join(format!("{}.log", crate::unique(&format!("{label}-"))));
        let stdout = File::create(&log)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", log.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("failed to share {}: {e}", log.display()));
        let child = Command::new(&path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Nothing should be written to the working directory; if something is, it lands
            // beside the logs rather than in the source tree.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", path.display()));
        eprintln!(
            "started {label} (pid {}), logging to {}",
            child.id(),
            log.display()
        );
        Self {
            label: label.to_owned(),
            child,
            log,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id, e.g. to read `/proc/<id>/status`.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The label, the log file and its last lines, for failure messages.
    pub fn describe(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "{} (log {}), last lines:\n{tail}",
            self.label,
            self.log.display()
        )
    }

    /// Fails the test if the process has already exited: a service that dies while starting
    /// should say why at once, not after a readiness timeout.
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!(
                "{} exited early with {status}: {}",
                self.label,
                self.describe()
            ),
            Err(e) => panic!("failed to check {}: {e}", self.label),
        }
    }

    /// Sends SIGTERM, what Kubernetes sends a pod it stops.
    pub fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Sends SIGKILL: the process dies at once, its connections and calls in flight with it.
    pub fn kill(&self) {
        self.signal(Signal::KILL);
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .expect("a child's pid is a positive i32");
        kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("failed to send {signal:?} to {}: {e}", self.label));
    }

    /// Waits for the process to exit, failing the test if it takes longer than `within`.
    pub async fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => panic!(
                    "{} did not exit within {within:?} of being stopped: {}",
                    self.label,
                    self.describe()
                ),
                Err(e) => panic!("failed to wait for {}: {e}", self.label),
            }
        }
    }
}

impl Drop for Process {
    /// A test that fails halfway leaves no service running behind it. The log stays when the
    /// test is failing (or `E2E_KEEP_LOGS` is set) and goes otherwise, so runs do not pile up
    /// files under `target/`.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{} logged to {}", self.label, self.log.display());
        } else if std::env::var_os("E2E_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
