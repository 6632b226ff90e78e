//! The Kubernetes manifests as a cluster would take them: `kubectl kustomize` renders `deploy/`
//! (the production set) and `deploy/overlays/laptop`, `kubernetes-validate --strict` checks each
//! rendering (and the example Secret) against the API schemas of the oldest and newest
//! Kubernetes we support, and `tests/python/check_manifests.py` checks the rules schemas cannot
//! express: probes and a locked-down security context on every container, resources sized,
//! secrets only as mounted files, no PostgreSQL superuser, the NetworkPolicies evaluated
//! connection by connection, and the replica counts of each variant.
//!
//! kubectl (with its built-in kustomize) and the Python tools (scripts/test's venv) are required:
//! a missing one fails the test with what to install.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use e2e::prometheus::deploy_dir;

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

/// Renders a kustomization into a file of its own, for the tools that read files.
fn render(kustomization: &Path, file_name: &str) -> PathBuf {
    let output = run(
        Command::new(kubectl()).arg("kustomize").arg(kustomization),
        &format!("kubectl kustomize {}", kustomization.display()),
    );
    let dir = std::env::temp_dir().join(e2e::unique("manifests-"));
    std::fs::create_dir_all(&dir).expect("a temporary directory for the renderings");
    let file = dir.join(file_name);
    std::fs::write(&file, &output.stdout).expect("the rendering is written");
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

fn check(variant: &str, kustomization: &Path) {
    let rendered = render(kustomization, &format!("{variant}.yaml"));
    validate(&rendered);
    let secret = deploy_dir().join("secret.example.yaml");
    validate(&secret);
    let script = workspace().join("tests/python/check_manifests.py");
    let output = run(
        Command::new(python())
            .arg(script)
            .arg(variant)
            .arg(&rendered)
            .arg(&secret),
        &format!("check_manifests.py on the {variant} rendering"),
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    std::fs::remove_dir_all(rendered.parent().expect("the rendering's directory"))
        .expect("the rendering is removed");
}

#[test]
fn the_production_set_is_valid_and_locked_down() {
    check("production", &deploy_dir());
}

#[test]
fn the_laptop_overlay_is_valid_and_locked_down() {
    check("laptop", &deploy_dir().join("overlays/laptop"));
}
