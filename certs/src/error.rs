//! Errors of certificate generation and of the cluster operations.

/// Anything that stops us from producing or applying certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The request itself cannot produce a usable certificate.
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM or X.509 material could not be read.
    #[error("cannot read certificate material: {0}")]
    Parse(String),
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What we were doing, with the object's name.
        context: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Somebody else kept changing the object between our read and our write.
    #[error("{0}")]
    Conflict(String),
}

impl CertError {
    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }
}
