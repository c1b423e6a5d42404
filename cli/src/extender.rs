//! `gpu-autoscaler extender`: the kube-scheduler extender (HTTP, or HTTPS with a certificate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::parse_duration;
use anyhow::Context as _;
use gpu_autoscaler_api::{CapacityType, GpuResourceNames};
use gpu_autoscaler_extender::server::{Extender, TlsFiles};
use gpu_autoscaler_extender::{ClusterIndex, Config, SpotRates, Weights, sources};

#[derive(clap::Args, Debug)]
pub struct ExtenderArgs {
    /// Address to serve /filter, /prioritize, /healthz, /readyz and /metrics on.
    #[arg(long, default_value = "0.0.0.0:8888")]
    pub listen: SocketAddr,
    /// PEM certificate; with --tls-key, serve HTTPS (reloaded when the files change).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep a watch-fed node index and answer NodeNames-only requests (nodeCacheCapable: true).
    #[arg(long)]
    pub node_cache: bool,
    /// Spot nodes whose spot-termination-time is closer than this take no new pods
    /// (e.g. 10m, 90s, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub interruption_horizon: Duration,
    /// Published spot interruption rates: a JSON file path, or `configmap:NAMESPACE/NAME`
    /// (key rates.json). Without it, the bundled AWS Spot Advisor buckets are used.
    #[arg(long)]
    pub spot_rates: Option<String>,
    /// Interruption rate assumed for spot nodes found nowhere else (0..1).
    #[arg(long, default_value_t = 0.125)]
    pub default_spot_rate: f64,
    /// Capacity type assumed for nodes without any capacity-type label, or `reject`.
    #[arg(long, default_value = "on-demand")]
    pub unknown_capacity_type: String,
    /// Extra GPU resource names (exact, or a prefix ending in `*`), besides nvidia.com/gpu,
    /// nvidia.com/mig-* and amd.com/gpu.
    #[arg(long = "gpu-resource")]
    pub gpu_resources: Vec<String>,
    /// Prioritize weights (see the extender crate's `Weights` for what each one trades off).
    #[arg(long, default_value_t = Weights::default().tier)]
    pub weight_tier: u32,
    #[arg(long, default_value_t = Weights::default().packing)]
    pub weight_packing: u32,
    #[arg(long, default_value_t = Weights::default().spot_risk)]
    pub weight_spot_risk: u32,
    #[arg(long, default_value_t = Weights::default().spread)]
    pub weight_spread: u32,
    /// Largest request body accepted, in MiB (full-NodeList requests of big clusters).
    #[arg(long, default_value_t = 256)]
    pub max_body_mib: usize,
    /// Kubeconfig file; otherwise KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

fn parse_unknown_capacity(s: &str) -> anyhow::Result<Option<CapacityType>> {
    if s.trim() == "reject" {
        return Ok(None);
    }
    s.parse::<CapacityType>()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--unknown-capacity-type: {e}, or reject"))
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

pub async fn run(args: ExtenderArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.default_spot_rate) {
        anyhow::bail!(
            "--default-spot-rate must be between 0 and 1, got {}",
            args.default_spot_rate
        );
    }
    let gpu_names = GpuResourceNames::default().with_extra(&args.gpu_resources);
    let config = Config {
        interruption_horizon: args.interruption_horizon,
        unknown_capacity: parse_unknown_capacity(&args.unknown_capacity_type)?,
        weights: Weights {
            tier: args.weight_tier,
            packing: args.weight_packing,
            spot_risk: args.weight_spot_risk,
            spread: args.weight_spread,
        },
        gpu_names: gpu_names.clone(),
    };
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let index = Arc::new(ClusterIndex::new(gpu_names, args.node_cache));
    let mut ext = Extender::new(config, index.clone())
        .with_max_body_bytes(args.max_body_mib.saturating_mul(1024 * 1024))
        .with_rates(SpotRates::default().with_default_rate(args.default_spot_rate));

    let mut rates_file = None;
    let mut rates_configmap = None;
    match args.spot_rates.as_deref() {
        None => {}
        Some(spec) => match spec.strip_prefix("configmap:") {
            Some(ns_name) => {
                let (ns, name) = ns_name
                    .split_once('/')
                    .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("--spot-rates configmap:NAMESPACE/NAME, got {spec:?}")
                    })?;
                rates_configmap = Some((ns.to_string(), name.to_string()));
            }
            None => {
                let path = PathBuf::from(spec);
                let rates = sources::load_rates_file(&path, args.default_spot_rate)
                    .map_err(|e| anyhow::anyhow!("--spot-rates: {e}"))?;
                ext = ext.with_rates(rates);
                rates_file = Some(path);
            }
        },
    }
    let ext = Arc::new(ext);

    tokio::spawn(index.clone().run_watches(client.clone()));
    if let Some(path) = rates_file {
        tokio::spawn(sources::watch_rates_file(
            ext.clone(),
            path,
            args.default_spot_rate,
            Duration::from_secs(30),
        ));
    }
    if let Some((ns, name)) = rates_configmap {
        tokio::spawn(sources::watch_rates_configmap(
            ext.clone(),
            client,
            ns,
            name,
            args.default_spot_rate,
        ));
    }

    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    tracing::info!(listen = %args.listen, node_cache = args.node_cache, https = tls.is_some(),
        horizon_s = args.interruption_horizon.as_secs(), "starting extender");
    let app = gpu_autoscaler_extender::router(ext);
    gpu_autoscaler_extender::serve(args.listen, tls, app, crate::shutdown::signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_capacity_values() {
        assert_eq!(parse_unknown_capacity("reject").unwrap(), None);
        assert_eq!(
            parse_unknown_capacity("spot").unwrap(),
            Some(CapacityType::Spot)
        );
        assert!(parse_unknown_capacity("cheap").is_err());
    }
}
