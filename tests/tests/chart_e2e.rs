//! The Helm chart against a real kube-apiserver 1.20: lint, render and schema checks, then
//! install, cert hooks, webhook mutation through `webhook.url`, upgrade and uninstall, all with
//! the Helm v4 engine (PyPI `helm-python-sdk`). The checks themselves are Python
//! (`tests/chart/`); this test supplies the control plane and the `gpu-autoscaler` binary and
//! runs them under cargo nextest. The Python environment comes from
//! `scripts/install-python-deps.sh` (`~/.cache/gpu-autoscaler/venv`, or `GPU_AUTOSCALER_PYTHON`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use gpu_autoscaler_testkit::ControlPlane;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("GPU_AUTOSCALER_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/gpu-autoscaler/venv/bin/python");
    ensure!(
        venv.is_file(),
        "{} is missing: run scripts/install-python-deps.sh (helm-python-sdk, pytest, pyyaml)",
        venv.display()
    );
    Ok(venv)
}

/// `target/<profile>/gpu-autoscaler`, next to the `deps/` directory this test binary lives in.
fn binary_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(profile_dir) = exe.parent().and_then(|deps| deps.parent()) {
        candidates.push(profile_dir.join("gpu-autoscaler"));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug/gpu-autoscaler"));
    }
    candidates.push(repo_root().join("target/debug/gpu-autoscaler"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the gpu-autoscaler binary is not built (looked at {candidates:?}); \
                 run `cargo build -p gpu-autoscaler` before the tests"
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_lints_renders_installs_upgrades_and_uninstalls() -> Result<()> {
    let python = python()?;
    let binary = binary_path()?;
    let cp = ControlPlane::start().await?;
    let root = repo_root();
    let output = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "tests/chart",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfE",
        ])
        .current_dir(&root)
        .env("GPU_AUTOSCALER_KUBECONFIG", cp.kubeconfig_path())
        .env("GPU_AUTOSCALER_BIN", &binary)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {} -m pytest", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    ensure!(
        output.status.success(),
        "chart tests failed ({}); apiserver log tail:\n{}",
        output.status,
        cp.log_tail(gpu_autoscaler_testkit::Component::KubeApiserver, 40)
    );
    // A run where the install tests were skipped would prove nothing about the cluster.
    ensure!(
        !stdout.contains("skipped"),
        "some chart tests were skipped: {stdout}"
    );
    Ok(())
}
