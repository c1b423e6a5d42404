use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting or using the test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control-plane binary is not installed; the message names the set-up command.
    #[error(
        "{name} not found (looked in: {looked}); run `{setup}` from the repository root to build and cache it{hint}"
    )]
    MissingBinary {
        name: &'static str,
        looked: String,
        setup: &'static str,
        hint: String,
    },

    /// A component exited or never became ready; carries the end of its log.
    #[error("{component} failed to start: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    StartFailed {
        component: &'static str,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },

    /// A polled condition did not hold in time.
    #[error("condition not met within {0:?}")]
    Timeout(Duration),

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("kubeconfig error: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("YAML error: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    #[error("cannot build the HTTP request for {0}")]
    Request(String),

    #[error("invalid scheduler configuration: {0}")]
    SchedulerConfig(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
