//! `gpu-autoscaler certs`: CA and serving certificate for the webhook; optionally keeps the TLS
//! Secret and the webhook configurations' `caBundle` up to date (the chart's install Job).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use gpu_autoscaler_certs::{
    CertBundle, CertRequest, DEFAULT_CA_VALIDITY_DAYS, DEFAULT_RENEW_BEFORE_DAYS,
    DEFAULT_VALIDITY_DAYS, SubjectAltName, WebhookKind, ensure_secret, generate_at,
    patch_ca_bundle,
};
use time::{Duration, OffsetDateTime};

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long)]
    service: String,
    /// Namespace of the webhook's Service.
    #[arg(long)]
    namespace: String,
    /// Write ca.crt, tls.crt and tls.key into this directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Additional DNS name or IP address for the serving certificate (repeatable, or comma-separated).
    #[arg(long = "extra-san", value_delimiter = ',')]
    extra_sans: Vec<SubjectAltName>,
    /// Lifetime of the serving certificate in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    validity_days: u32,
    /// Lifetime of the CA in days (at least --validity-days).
    #[arg(long, default_value_t = DEFAULT_CA_VALIDITY_DAYS)]
    ca_validity_days: u32,
    /// Replace an existing Secret's certificate when it has fewer days left than this.
    #[arg(long, default_value_t = DEFAULT_RENEW_BEFORE_DAYS)]
    renew_before_days: u32,
    /// Create or update this kubernetes.io/tls Secret (keys tls.crt, tls.key, ca.crt); a valid
    /// existing Secret is kept and its CA used for caBundle.
    #[arg(long)]
    secret: Option<String>,
    /// Namespace of --secret (default: --namespace).
    #[arg(long, requires = "secret")]
    secret_namespace: Option<String>,
    /// Set caBundle on every webhook of this MutatingWebhookConfiguration (repeatable).
    #[arg(long = "patch-webhook")]
    patch_webhooks: Vec<String>,
    /// Set caBundle on every webhook of this ValidatingWebhookConfiguration (repeatable).
    #[arg(long = "patch-validating-webhook")]
    patch_validating_webhooks: Vec<String>,
    /// Kubeconfig to use instead of KUBECONFIG, ~/.kube/config or the in-cluster account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

pub async fn run(args: CertsArgs) -> anyhow::Result<()> {
    let req = CertRequest {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        extra_sans: args.extra_sans.clone(),
        validity_days: args.validity_days,
        ca_validity_days: args.ca_validity_days,
    };
    req.validate()?;
    let now = OffsetDateTime::now_utc();
    let needs_cluster = args.secret.is_some()
        || !args.patch_webhooks.is_empty()
        || !args.patch_validating_webhooks.is_empty();
    if args.secret.is_none() && args.out_dir.is_none() {
        // Patching caBundle alone would trust a CA whose serving key is thrown away.
        anyhow::bail!(
            "give --out-dir and/or --secret: the serving certificate must land somewhere"
        );
    }

    let client = if needs_cluster {
        Some(client(args.kubeconfig.as_deref()).await?)
    } else {
        None
    };

    let bundle = match (&client, &args.secret) {
        (Some(client), Some(secret)) => {
            let namespace = args.secret_namespace.as_deref().unwrap_or(&args.namespace);
            let renew_before = Duration::days(i64::from(args.renew_before_days));
            let ensured = ensure_secret(client, namespace, secret, &req, now, renew_before).await?;
            tracing::info!(
                secret = %format!("{namespace}/{secret}"),
                action = ?ensured.action,
                not_after = %ensured.bundle.not_after,
                "secret ensured"
            );
            ensured.bundle
        }
        _ => generate_at(&req, now)?,
    };

    if let Some(dir) = &args.out_dir {
        write_pem_files(dir, &bundle)?;
        tracing::info!(dir = %dir.display(), not_after = %bundle.not_after, "wrote ca.crt, tls.crt, tls.key");
    }

    if let Some(client) = &client {
        let targets = args
            .patch_webhooks
            .iter()
            .map(|name| (WebhookKind::Mutating, name))
            .chain(
                args.patch_validating_webhooks
                    .iter()
                    .map(|name| (WebhookKind::Validating, name)),
            );
        for (kind, name) in targets {
            let result = patch_ca_bundle(client, kind, name, &bundle.ca_pem).await?;
            tracing::info!(
                config = %format!("{kind} {name}"),
                patched = ?result.patched,
                unchanged = result.unchanged,
                "caBundle checked"
            );
        }
    }
    Ok(())
}

async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not running in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn write_pem_files(dir: &Path, bundle: &CertBundle) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&dir.join("ca.crt"), &bundle.ca_pem, 0o644)?;
    write_file(&dir.join("tls.crt"), &bundle.cert_pem, 0o644)?;
    // The key is only for the webhook process's own user.
    write_file(&dir.join("tls.key"), &bundle.key_pem, 0o600)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // `mode` only applies on creation; tighten an existing file too.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
