//! The Kubernetes manifests as a cluster would take them: `kubectl kustomize` renders `deploy/`
//! (the production set), `deploy/overlays/laptop`, both with `deploy/components/tls`, and the
//! production set with the example service (`deploy/examples/directory`),
//! `kubernetes-validate --strict` checks each rendering (and the example Secrets) against the
//! API schemas of the oldest and newest
//! Kubernetes we support, and `tests/python/check_manifests.py` checks the rules schemas cannot
//! express: probes and a locked-down security context on every container, resources sized,
//! secrets only as mounted files, no PostgreSQL superuser, the NetworkPolicies evaluated
//! connection by connection, and the replica counts of each variant.
//!
//! PostgreSQL's init script (`deploy/base/postgres-init/`) runs against the throwaway cluster as
//! the image's entrypoint would run it, and both services start, migrate and serve as the roles
//! it creates, none of which is a superuser or can open the other's database.
//!
//! And `.dockerignore` keeps `./data`, `.git` and `target/` out of every image's build context.
//!
//! kubectl (with its built-in kustomize), the Python tools (scripts/test's venv), psql and
//! `DATABASE_URL` are required: a missing one fails the test with what to install.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use e2e::{AuthDeployment, AuthReplica, Credentials, ResourceReplica, prometheus::deploy_dir};
use reqwest::Url;

/// The Kubernetes versions whose schemas the renderings must pass: the first release in which
/// the `sleep` pre-stop hook is on by default, and the newest kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn workspace() -> PathBuf {
    deploy_dir()
        .parent()
        .expect("deploy/ lives in the workspace")
        .to_path_buf()
}

fn kubectl() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    let kubectl = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    assert!(
        kubectl.is_file(),
        "kubectl is missing (neither on PATH nor /usr/bin/kubectl): the manifests test renders \
         deploy/ with kubectl's built-in kustomize; install kubectl 1.27 or newer"
    );
    kubectl
}

/// scripts/test's venv python (`TEST_PYTHON`, else `target/pyvenv/bin/python`).
fn python() -> PathBuf {
    let python = std::env::var_os("TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyvenv/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: the manifests test needs the Python test tools (kubernetes-validate, \
         PyYAML); run scripts/test, which installs them into target/pyvenv and sets TEST_PYTHON",
        python.display()
    );
    python
}

fn kubernetes_validate() -> PathBuf {
    let tool = python().with_file_name("kubernetes-validate");
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/test, which installs tests/python/requirements.txt into its venv",
        tool.display()
    );
    tool
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Renders kustomizations into one file of their own, for the tools that read files.
fn render(kustomizations: &[PathBuf], file_name: &str) -> PathBuf {
    let mut rendering = Vec::new();
    for kustomization in kustomizations {
        let output = run(
            Command::new(kubectl()).arg("kustomize").arg(kustomization),
            &format!("kubectl kustomize {}", kustomization.display()),
        );
        rendering.extend_from_slice(b"---\n");
        rendering.extend_from_slice(&output.stdout);
    }
    let dir = std::env::temp_dir().join(e2e::unique("manifests-"));
    std::fs::create_dir_all(&dir).expect("a temporary directory for the renderings");
    let file = dir.join(file_name);
    std::fs::write(&file, rendering).expect("the rendering is written");
    file
}

fn validate(file: &Path) {
    for version in KUBERNETES_VERSIONS {
        run(
            Command::new(kubernetes_validate())
                .args(["--strict", "--quiet", "--kubernetes-version", version])
                .arg(file),
            &format!(
                "kubernetes-validate --strict -k {version} {}",
                file.display()
            ),
        );
    }
}

/// Renders `kustomizations` together, validates the rendering and the example Secrets, and
/// runs check_manifests.py's rules for `variant` over them.
fn check(variant: &str, kustomizations: &[PathBuf], secrets: &[PathBuf]) {
    let rendered = render(kustomizations, &format!("{variant}.yaml"));
    validate(&rendered);
    for secret in secrets {
        validate(secret);
    }
    let script = workspace().join("tests/python/check_manifests.py");
    let output = run(
        Command::new(python())
            .arg(script)
            .arg(variant)
            .arg(&rendered)
            .args(secrets),
        &format!("check_manifests.py on the {variant} rendering"),
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    std::fs::remove_dir_all(rendered.parent().expect("the rendering's directory"))
        .expect("the rendering is removed");
}

fn secret_example() -> PathBuf {
    deploy_dir().join("secret.example.yaml")
}

#[test]
fn the_production_set_is_valid_and_locked_down() {
    check("production", &[deploy_dir()], &[secret_example()]);
}

#[test]
fn the_laptop_overlay_is_valid_and_locked_down() {
    check(
        "laptop",
        &[deploy_dir().join("overlays/laptop")],
        &[secret_example()],
    );
}

/// The example internal service beside the production set: its pods follow the same rules,
/// read their service-account secret from a mounted file, reach both gRPC services and are
/// reached by labelled callers only.
#[test]
fn the_example_service_beside_the_production_set_is_valid_and_locked_down() {
    let example = deploy_dir().join("examples/directory");
    check(
        "example",
        &[deploy_dir(), example.clone()],
        &[secret_example(), example.join("secret.example.yaml")],
    );
}

/// deploy/components/tls on the laptop variant (deploy/overlays/tls) and on the production set.
/// The latter is rendered from a kustomization outside deploy/ (kustomize refuses an overlay
/// inside the directory it builds on), as deploy/README.md's "TLS" tells operators to write.
#[test]
fn the_tls_component_is_valid_on_both_variants() {
    check(
        "laptop-tls",
        &[deploy_dir().join("overlays/tls")],
        &[secret_example()],
    );
    let dir = workspace()
        .join("target")
        .join(e2e::unique("manifests-tls-"));
    std::fs::create_dir_all(&dir).expect("a directory for the production TLS kustomization");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources: [../../deploy]\n\
         components: [../../deploy/components/tls]\n",
    )
    .expect("the kustomization is written");
    check(
        "production-tls",
        std::slice::from_ref(&dir),
        &[secret_example()],
    );
    std::fs::remove_dir_all(&dir).expect("the kustomization is removed");
}

#[test]
fn the_image_build_context_leaves_out_local_data_history_and_build_output() {
    let path = workspace().join(".dockerignore");
    let ignore = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}): `docker build .` would send ./data (signing keys, the key-encryption key), .git and target/ into the image's build", path.display()));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(
        !patterns.iter().any(|p| p.starts_with('!')),
        "{} re-includes something: {patterns:?}",
        path.display()
    );
    for dir in ["data", ".git", "target"] {
        assert!(
            patterns
                .iter()
                .any(|p| p.trim_start_matches('/').trim_end_matches('/') == dir),
            "{} does not leave out {dir}/",
            path.display()
        );
    }
}

/// The superuser connection `DATABASE_URL` names, as the PG* variables psql reads.
fn pg_env(admin: &Url) -> [(&'static str, String); 4] {
    [
        (
            "PGHOST",
            admin
                .host_str()
                .expect("DATABASE_URL names a host")
                .to_owned(),
        ),
        ("PGPORT", admin.port().unwrap_or(5432).to_string()),
        ("PGUSER", admin.username().to_owned()),
        (
            "PGPASSWORD",
            admin.password().unwrap_or_default().to_owned(),
        ),
    ]
}

/// psql, which the init-script test runs as the postgres image does.
fn psql() -> Command {
    let psql = Path::new("/usr/bin/psql");
    assert!(
        psql.is_file(),
        "/usr/bin/psql is missing: the init-script test runs deploy's script with psql, as the \
         postgres image does; install postgresql-client"
    );
    let mut command = Command::new(psql);
    command.args(["--no-psqlrc", "--no-password", "-v", "ON_ERROR_STOP=1"]);
    command
}

/// `admin` as the login `role` with `password`, on the database of the same name.
fn role_url(admin: &Url, role: &str, password: &str) -> String {
    let mut url = admin.clone();
    url.set_username(role).expect("a user name");
    url.set_password(Some(password)).expect("a password");
    url.set_path(role);
    url.into()
}

#[tokio::test]
async fn the_init_script_gives_each_service_a_role_owning_only_its_database() {
    let admin: Url = std::env::var("DATABASE_URL")
        .expect(
            "DATABASE_URL is not set: this test needs a PostgreSQL superuser URL on a throwaway \
             cluster; scripts/test starts one and sets it",
        )
        .parse()
        .expect("DATABASE_URL is a URL");
    // The script as the image sources it, with role names of this run (roles are cluster-wide)
    // and the Secret's files in a directory of this run.
    let script =
        std::fs::read_to_string(deploy_dir().join("base/postgres-init/10-service-roles.sh"))
            .expect("deploy's init script");
    let (auth, resource) = (
        e2e::unique("e2e_role_auth_"),
        e2e::unique("e2e_role_resource_"),
    );
    let secrets = std::env::temp_dir().join(e2e::unique("postgres-secrets-"));
    std::fs::create_dir_all(&secrets).expect("a directory for the Secret's files");
    let mut passwords = Vec::new();
    for role in [&auth, &resource] {
        // A quote and a backslash: the script must pass the password to SQL quoted.
        let password = format!("pw'\\{}", uuid::Uuid::new_v4().simple());
        std::fs::write(
            secrets.join(format!("{role}-db-password")),
            format!("{password}\n"),
        )
        .expect("a password file");
        passwords.push(password);
    }
    for expected in [
        "for service in auth resource; do",
        "/run/secrets/persons-auth/",
    ] {
        assert!(
            script.contains(expected),
            "the init script no longer says {expected:?}"
        );
    }
    let script = script
        .replace(
            "for service in auth resource; do",
            &format!("for service in {auth} {resource}; do"),
        )
        .replace(
            "/run/secrets/persons-auth/",
            &format!("{}/", secrets.display()),
        );
    // docker-entrypoint.sh sources the script with this function defined (psql as the
    // superuser, stopping at the first error).
    let entrypoint = format!(
        "set -Eeo pipefail\n\
         docker_process_sql() {{ psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc \"$@\"; }}\n\
         {script}"
    );
    run(
        Command::new("bash")
            .arg("-c")
            .arg(&entrypoint)
            .envs(pg_env(&admin)),
        "deploy's postgres init script",
    );
    std::fs::remove_dir_all(&secrets).expect("the Secret's files are removed");

    for role in [&auth, &resource] {
        let output = run(
            psql()
                .envs(pg_env(&admin))
                .args(["--dbname", "postgres", "-At", "-c"])
                .arg(format!(
                    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, \
                 pg_get_userbyid(d.datdba) FROM pg_roles r JOIN pg_database d \
                 ON d.datname = r.rolname WHERE rolname = '{role}'"
                )),
            "psql",
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("f|f|f|f|{role}"),
            "{role}: no superuser, CREATEDB, CREATEROLE or BYPASSRLS, and owns its database"
        );
    }
    // Neither role may open the other's database.
    for (role, password, other) in [
        (&auth, &passwords[0], &resource),
        (&resource, &passwords[1], &auth),
    ] {
        let mut url: Url = role_url(&admin, role, password).parse().expect("a URL");
        url.set_path(other);
        let output = psql()
            .args(["-c", "SELECT 1"])
            .arg(url.as_str())
            .output()
            .expect("psql runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("CONNECT privilege"),
            "{role} could open {other}'s database: {stderr}"
        );
    }

    // Both services migrate, store what they need (the signing key, the first admin) and serve
    // as their roles, auth-service's revocation feed (LISTEN) included.
    let deployment = AuthDeployment {
        database_url: role_url(&admin, &auth, &passwords[0]),
        key_encryption_key: base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            rand::random::<[u8; 32]>(),
        ),
        admin: Credentials::random("admin"),
        env: Vec::new(),
    };
    let auth_replica = AuthReplica::start(&deployment, "auth-own-role").await;
    let _resource_replica = ResourceReplica::start(
        &role_url(&admin, &resource, &passwords[1]),
        std::slice::from_ref(&auth_replica.url),
        "resource-own-role",
    )
    .await;
}
