//! `gpu-autoscaler webhook`: the mutating admission webhook over HTTPS.
//!
//! Configuration comes from `--config FILE` (YAML, every key documented in docs/webhook.md);
//! flags given on the command line override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_positive_duration as parse_duration;
use anyhow::Context;
use gpu_autoscaler_api::EvictionPriority;
use gpu_autoscaler_webhook::{
    AppState, Config, TlsFiles, TlsServeOptions, probe_router, serve_tls,
};

#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// HTTPS address for /mutate, /validate-policy, /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM serving certificate (chain), e.g. a mounted Secret's tls.crt.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// YAML configuration file (see docs/webhook.md); flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Optional plain-HTTP address serving only /healthz, /readyz and /metrics (for probes
    /// and scrapes that should not need TLS).
    #[arg(long, value_name = "ADDR")]
    probe_listen: Option<SocketAddr>,
    /// How often the certificate files are re-read for rotation, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    cert_reload_interval: Duration,
    /// How long open requests may finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Eviction priority of GPU pods that label and priority don't decide (overrides the file).
    #[arg(long, value_parser = ["low", "medium", "high"])]
    default_eviction_priority: Option<String>,
    /// Numeric pod priority at or above which a pod is `high` (overrides the file).
    #[arg(long, allow_hyphen_values = true)]
    priority_high_at_or_above: Option<i32>,
    /// Numeric pod priority below which a pod is `low` (overrides the file).
    #[arg(long, allow_hyphen_values = true)]
    priority_low_below: Option<i32>,
    /// Extra GPU resource name, repeatable; a trailing `*` makes a prefix (`example.com/vgpu-*`).
    #[arg(long = "gpu-resource", value_name = "NAME")]
    gpu_resources: Vec<String>,
    /// Namespace whose pods are never mutated, repeatable; replaces the file's list when given.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    excluded_namespaces: Vec<String>,
    /// Set spec.schedulerName of GPU pods that use the default scheduler to this profile.
    #[arg(long, value_name = "NAME")]
    scheduler_name: Option<String>,
}

fn build_config(args: &WebhookArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_yaml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(p) = &args.default_eviction_priority {
        cfg.default_eviction_priority = p.parse::<EvictionPriority>()?;
    }
    if let Some(v) = args.priority_high_at_or_above {
        cfg.priority_thresholds.high_at_or_above = v;
    }
    if let Some(v) = args.priority_low_below {
        cfg.priority_thresholds.low_below = v;
    }
    cfg = cfg.with_extra_gpu_resources(&args.gpu_resources);
    if !args.excluded_namespaces.is_empty() {
        cfg.excluded_namespaces = args.excluded_namespaces.clone();
    }
    if let Some(name) = args
        .scheduler_name
        .as_ref()
        .filter(|n| !n.trim().is_empty())
    {
        cfg.scheduler_name = Some(name.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn terminated() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    tracing::info!(
        default = %config.default_eviction_priority,
        excluded_namespaces = ?config.excluded_namespaces,
        scheduler_name = ?config.scheduler_name,
        "webhook configuration loaded"
    );
    let state = AppState::new(config);

    if let Some(addr) = args.probe_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding probe address {addr}"))?;
        let app = probe_router().with_state(state.clone());
        tracing::info!(%addr, "serving probes and metrics over plain HTTP");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "probe server stopped");
            }
        });
    }

    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let options = TlsServeOptions {
        files: TlsFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        reload_interval: args.cert_reload_interval,
    };
    // Waiting for the certificate can take a while (Secret not issued yet); a SIGTERM then
    // must still stop us.
    let mut server = tokio::select! {
        s = serve_tls(listener, state.clone(), options) => s.context("starting the HTTPS server")?,
        _ = terminated() => return Ok(()),
    };
    tracing::info!(addr = %server.local_addr, "webhook serving HTTPS");
    tokio::select! {
        r = server.wait() => r.context("HTTPS server failed")?,
        _ = terminated() => {
            tracing::info!(grace = ?args.shutdown_grace, "shutting down");
            server.shutdown(args.shutdown_grace).await.context("shutting down")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile_dir();
        let file = dir.join("webhook.yaml");
        std::fs::write(
            &file,
            "defaultEvictionPriority: high\nexcludedNamespaces: [a]\nschedulerName: from-file\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "x",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--config",
            file.to_str().unwrap(),
            "--default-eviction-priority",
            "low",
            "--priority-low-below",
            "-100",
            "--gpu-resource",
            "example.com/vgpu-*",
            "--exclude-namespace",
            "kube-system",
            "--exclude-namespace",
            "monitoring",
        ]);
        let cfg = build_config(&cli.args).unwrap();
        assert_eq!(cfg.default_eviction_priority, EvictionPriority::Low);
        assert_eq!(cfg.priority_thresholds.low_below, -100);
        assert!(cfg.gpu_resources.is_gpu("example.com/vgpu-2g"));
        assert_eq!(cfg.excluded_namespaces, vec!["kube-system", "monitoring"]);
        assert_eq!(cfg.scheduler_name.as_deref(), Some("from-file"));
        assert_eq!(cli.args.listen, "0.0.0.0:8443".parse().unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gpu-autoscaler-webhook-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
