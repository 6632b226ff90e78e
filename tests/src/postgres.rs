//! Fresh PostgreSQL databases, one per service per test, on the throwaway cluster named by
//! `DATABASE_URL`, or on a cluster of the test's own that it may stop and start again.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Creates an empty database for `service` and returns its URL; see [`testdb::create_database`].
pub async fn create_database(service: &str) -> String {
    testdb::create_database(&format!("e2e_{service}")).await
}

/// [`create_database`] on the cluster `admin_url` names.
pub async fn create_database_on(admin_url: &str, service: &str) -> String {
    testdb::create_database_on(admin_url, &format!("e2e_{service}")).await
}

/// A PostgreSQL cluster of one test's own, made by `scripts/pg-throwaway` on a free port under
/// the system's temporary directory: never the cluster `DATABASE_URL` names, so stopping it
/// disturbs no other test. Removed when dropped.
pub struct Cluster {
    dir: PathBuf,
    /// The superuser URL, for [`create_database_on`].
    pub admin_url: String,
}

impl Cluster {
    pub async fn start(label: &str) -> Self {
        Self::start_with(label, &[]).await
    }

    /// [`Cluster::start`] serving TLS with this PEM certificate and key too (`ssl=on`).
    pub async fn start_tls(label: &str, cert: &Path, key: &Path) -> Self {
        Self::start_with(
            label,
            &[
                ("PG_THROWAWAY_SSL_CERT", path(cert)),
                ("PG_THROWAWAY_SSL_KEY", path(key)),
            ],
        )
        .await
    }

    async fn start_with(label: &str, env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique(&format!("e2e-pg-{label}-")));
        // The port was free a moment ago; a service another test starts meanwhile may take it,
        // so a failed start is tried again on another port.
        let mut failure = String::new();
        for _ in 0..3 {
            let port = crate::free_port().to_string();
            match run_throwaway(&["start", path(&dir), &port], env).await {
                Ok(admin_url) => {
                    return Self {
                        dir,
                        admin_url: admin_url.trim().to_owned(),
                    };
                }
                Err(e) => failure = e,
            }
        }
        let _ = Command::new(script()).args(["stop", path(&dir)]).status();
        panic!("{failure}");
    }

    /// Stops the server, keeping its data: `pg_ctl stop -m fast`, which ends every session
    /// (each client sees its connection terminated) and writes out what was committed. Not
    /// `-m immediate`: the throwaway cluster runs with `synchronous_commit=off`, so a crash
    /// may lose commits the services were already told about, which no service can prevent.
    pub async fn stop(&self) {
        throwaway(&["pause", path(&self.dir), "fast"]).await;
    }

    /// Starts the stopped server again on the same port.
    pub async fn resume(&self) {
        throwaway(&["resume", path(&self.dir)]).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", path(&self.dir)])
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-throwaway")
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("the temporary directory is UTF-8")
}

/// Runs `scripts/pg-throwaway` with `args` and returns what it printed, failing the test if it
/// fails.
async fn throwaway(args: &[&str]) -> String {
    run_throwaway(args, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `scripts/pg-throwaway` with `args`: what it printed, or why it failed with the end of
/// the server's log.
async fn run_throwaway(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let script = script();
    let output = tokio::task::spawn_blocking({
        let args = args.clone();
        move || Command::new(&script).args(&args).envs(env).output()
    })
    .await
    .expect("the blocking task runs")
    .map_err(|e| format!("failed to run scripts/pg-throwaway: {e}"))?;
    if !output.status.success() {
        let log =
            std::fs::read_to_string(Path::new(&args[1]).join("server.log")).unwrap_or_default();
        return Err(format!(
            "scripts/pg-throwaway {args:?} failed with {}: {}\nserver log:\n{log}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
