use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Overrides the directory holding kube-apiserver and kube-scheduler.
pub const K8S_BIN_ENV: &str = "GPU_AUTOSCALER_K8S_BIN";
/// Overrides the etcd binary (a path); otherwise `etcd` is looked up on `PATH`.
pub const ETCD_BIN_ENV: &str = "GPU_AUTOSCALER_ETCD";
/// The command that installs etcd and builds the Kubernetes binaries.
pub const SETUP_COMMAND: &str = "scripts/control-plane.sh";

/// `$HOME/.cache/gpu-autoscaler/k8s-1.20.2/bin`, where `scripts/control-plane.sh` caches builds.
pub fn default_k8s_bin_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/gpu-autoscaler/k8s-1.20.2/bin")
}

/// Resolved paths of the control-plane executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_scheduler: PathBuf,
}

impl Binaries {
    /// Finds all three binaries. The scheduler is only required when `need_scheduler`; a
    /// missing one is an error naming [`SETUP_COMMAND`], never a reason to skip a test.
    pub fn locate(need_scheduler: bool) -> Result<Self> {
        let k8s_dir = std::env::var_os(K8S_BIN_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(default_k8s_bin_dir, PathBuf::from);
        Self::locate_in(&k8s_dir, need_scheduler)
    }

    /// Like [`Binaries::locate`] with an explicit Kubernetes binary directory.
    pub fn locate_in(k8s_dir: &Path, need_scheduler: bool) -> Result<Self> {
        let kube_apiserver = in_dir(k8s_dir, "kube-apiserver")?;
        let kube_scheduler = if need_scheduler {
            in_dir(k8s_dir, "kube-scheduler")?
        } else {
            k8s_dir.join("kube-scheduler")
        };
        Ok(Binaries {
            etcd: etcd()?,
            kube_apiserver,
            kube_scheduler,
        })
    }
}

fn in_dir(dir: &Path, name: &'static str) -> Result<PathBuf> {
    let path = dir.join(name);
    if is_executable(&path) {
        return Ok(path);
    }
    Err(Error::MissingBinary {
        name,
        looked: path.display().to_string(),
        setup: SETUP_COMMAND,
        hint: format!(" (or point {K8S_BIN_ENV} at a directory holding it)"),
    })
}

fn etcd() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os(ETCD_BIN_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(Error::MissingBinary {
            name: "etcd",
            looked: format!("{ETCD_BIN_ENV}={}", path.display()),
            setup: SETUP_COMMAND,
            hint: String::new(),
        });
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut looked = Vec::new();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join("etcd");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        looked.push(dir.display().to_string());
    }
    Err(Error::MissingBinary {
        name: "etcd",
        looked: format!("PATH={}", looked.join(":")),
        setup: SETUP_COMMAND,
        hint: " (it installs Debian's etcd-server)".to_string(),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
