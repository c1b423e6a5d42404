//! The scaler's [`CloudProvider`] for real clouds, one module per cloud behind its cargo
//! feature: `aws` (Auto Scaling Groups), `gcp` (Managed Instance Groups, zonal and regional),
//! `azure` (VM Scale Sets). The released binary enables all three; the core crates build
//! without any of them.
//!
//! Every provider shares [`common`]: each API request has a timeout, is retried with backoff
//! and jitter when throttled or transient (honouring `Retry-After`), is counted in
//! [`CloudMetrics`], and its errors are classified into [`ProviderErrorKind`] with secrets
//! redacted. `set_target_size` is absolute and reads the group before writing, so a repeat
//! after a crash is a no-op.
//!
//! [`build_provider`] turns the `--provider` choice and the policy's `aws` / `gcp` / `azure`
//! block into a provider.

pub mod common;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;

use std::sync::Arc;

use gpu_autoscaler_api::AutoscalingPolicySpec;
use gpu_autoscaler_api::policy::ProviderKind;
use gpu_autoscaler_scaler::provider::{CloudProvider, ProviderError, ProviderErrorKind};

pub use common::{CallPolicy, CloudMetrics};

/// Connection options that are not part of the policy (flags, tests).
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Overrides the cloud API endpoint (moto, fakes, private endpoints).
    pub endpoint: Option<String>,
    /// Timeouts and retries; `None` = [`CallPolicy::default`].
    pub call_policy: Option<CallPolicy>,
    /// Where the per-call metrics go (register them with [`CloudMetrics::register`]).
    pub metrics: CloudMetrics,
}

/// Builds the provider for `kind` from the policy's settings block for that cloud.
///
/// Fails with a clear message when the block is missing or the cloud's feature was not
/// compiled in. `kind == Kube` is not built here (the scaler builds its simulated cloud).
pub async fn build_provider(
    kind: ProviderKind,
    spec: &AutoscalingPolicySpec,
    options: &ProviderOptions,
) -> Result<Arc<dyn CloudProvider>, ProviderError> {
    let missing = |block: &str| {
        ProviderError::new(
            ProviderErrorKind::Other,
            "build_provider",
            format!("--provider {block}: the policy has no `{block}` settings block"),
        )
    };
    let _ = (spec, options, &missing);
    match kind {
        #[cfg(feature = "aws")]
        ProviderKind::Aws => {
            let settings = spec.aws.as_ref().ok_or_else(|| missing("aws"))?;
            let mut config = aws::AwsConfig::from_settings(settings);
            config.endpoint_url = options.endpoint.clone();
            if let Some(p) = &options.call_policy {
                config.call_policy = p.clone();
            }
            Ok(Arc::new(
                aws::AwsProvider::new(config, options.metrics.clone()).await?,
            ))
        }
        #[cfg(feature = "gcp")]
        ProviderKind::Gcp => {
            let settings = spec.gcp.as_ref().ok_or_else(|| missing("gcp"))?;
            let mut config = gcp::GcpConfig::from_settings(settings);
            config.endpoint = options.endpoint.clone();
            if let Some(p) = &options.call_policy {
                config.call_policy = p.clone();
            }
            Ok(Arc::new(
                gcp::GcpProvider::new(config, options.metrics.clone()).await?,
            ))
        }
        #[cfg(feature = "azure")]
        ProviderKind::Azure => {
            let settings = spec.azure.as_ref().ok_or_else(|| missing("azure"))?;
            let mut config = azure::AzureConfig::from_settings(settings);
            if let Some(e) = &options.endpoint {
                config.endpoint = e.clone();
            }
            if let Some(p) = &options.call_policy {
                config.call_policy = p.clone();
            }
            let credential = azure::default_credential()?;
            let provider = azure::AzureProvider::new(config, credential, options.metrics.clone())?;
            // Without VM sizes only scale-from-zero is missing, so a failure here is logged
            // rather than fatal (e.g. the identity lacks `Microsoft.Compute/skus/read`).
            match provider.load_vm_sizes().await {
                Ok(n) => tracing::info!(gpu_vm_sizes = n, "Azure VM sizes loaded"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot list Azure VM sizes (Resource SKUs); pools without nodes cannot scale from zero"
                ),
            }
            Ok(Arc::new(provider))
        }
        other => Err(ProviderError::new(
            ProviderErrorKind::Other,
            "build_provider",
            format!(
                "--provider {other:?}: not built into this binary (cargo feature of gpu-autoscaler-clouds)"
            ),
        )),
    }
}
