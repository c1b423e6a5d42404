//! `gpu-autoscaler scaler`: the leader-elected autoscaling controller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::duration::parse_duration;
use anyhow::Context as _;
use gpu_autoscaler_api::policy::ProviderKind;
use gpu_autoscaler_api::{AutoscalingPolicy, GpuResourceNames};
use gpu_autoscaler_scaler::controller::agent_utilization::{
    DEFAULT_AGENT_PORT, DEFAULT_SCRAPE_TIMEOUT,
};
use gpu_autoscaler_scaler::controller::{
    AgentUtilization, ConfigMapUtilization, LeaseConfig, Metrics, NoUtilization, Scaler,
    ScalerConfig, UtilizationSource, http,
};
use gpu_autoscaler_scaler::provider::CloudProvider;
use gpu_autoscaler_scaler::provider::kube::{KubeProvider, KubeProviderConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderChoice {
    Aws,
    Gcp,
    Azure,
    Kube,
}

#[derive(clap::Args, Debug)]
pub struct ScalerArgs {
    /// Cloud to drive. `kube` simulates one by creating Node objects (dry runs, tests).
    #[arg(long, value_enum, env = "GPU_AUTOSCALER_PROVIDER")]
    pub provider: ProviderChoice,
    /// Name of the (cluster-scoped) AutoscalingPolicy to execute.
    #[arg(long, env = "GPU_AUTOSCALER_POLICY")]
    pub policy: String,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Reconcile at least this often (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Wait this long after a watch event before planning, to batch bursts.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Leader-election Lease name.
    #[arg(long, default_value = "gpu-autoscaler-scaler")]
    pub lease_name: String,
    /// Leader-election Lease namespace (default: the pod's namespace, else kube-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the pod name, else host name + pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Act without leader election (a single replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Extra resource names counted as GPUs (a trailing `*` makes a prefix).
    #[arg(long = "gpu-resource", value_delimiter = ',')]
    pub gpu_resources: Vec<String>,
    /// Per-node GPU utilization: `agents[:PORT]` (scrape the node agents on each node's
    /// InternalIP, default port 9400), `configmap:NAMESPACE/NAME` (entries `<node>: 0..1`) or `none`.
    #[arg(long, default_value = "none")]
    pub utilization: String,

    /// Business-hours time zone of the demand forecaster: an IANA name (`Europe/Berlin`,
    /// daylight saving time included) or a fixed UTC offset (`+01:00`); weekdays and hours are
    /// learned in this local time. `--forecast-utc-offset` is the older name of this flag.
    #[arg(
        long,
        alias = "forecast-utc-offset",
        env = "GPU_AUTOSCALER_FORECAST_TIMEZONE",
        default_value = "UTC"
    )]
    pub forecast_timezone: gpu_autoscaler_scaler::controller::predictor::ForecastClock,

    /// kube provider: time from request to Node registration.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub boot_delay: Duration,
    /// kube provider: time from registration to GPUs allocatable.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub driver_delay: Duration,
    /// kube provider: catalogue region for instance specs and prices.
    #[arg(long, default_value = "us-east-1")]
    pub catalog_region: String,
    /// kube provider: namespace of its state ConfigMap.
    #[arg(long, default_value = "kube-system")]
    pub provider_namespace: String,
    /// kube provider: name of its state ConfigMap (targets, instances, injected faults).
    #[arg(long, default_value = "gpu-autoscaler-kube-provider")]
    pub provider_configmap: String,
}

async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not running in a cluster")?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "scaler".into());
    format!("{host}-{}", std::process::id())
}

pub async fn run(args: ScalerArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let cloud_options = gpu_autoscaler_clouds::ProviderOptions::default();
    let provider: Arc<dyn CloudProvider> = match args.provider {
        ProviderChoice::Kube => {
            let p = Arc::new(
                KubeProvider::new(
                    client.clone(),
                    KubeProviderConfig {
                        namespace: args.provider_namespace.clone(),
                        configmap: args.provider_configmap.clone(),
                        boot_delay: args.boot_delay,
                        driver_delay: args.driver_delay,
                        region: args.catalog_region.clone(),
                        ..Default::default()
                    },
                )
                .map_err(|e| anyhow::anyhow!("kube provider: {e}"))?,
            );
            // The simulated cloud runs in every replica: it is the "cloud", not the controller.
            tokio::spawn(p.clone().run_simulation(std::future::pending()));
            p
        }
        cloud => {
            let kind = match cloud {
                ProviderChoice::Aws => ProviderKind::Aws,
                ProviderChoice::Gcp => ProviderKind::Gcp,
                _ => ProviderKind::Azure,
            };
            // The cloud provider maps pools to groups from the policy's aws/gcp/azure block,
            // read once at start: a changed mapping takes a restart (the Deployment rolls).
            let policy = kube::Api::<AutoscalingPolicy>::all(client.clone())
                .get(&args.policy)
                .await
                .with_context(|| format!("reading AutoscalingPolicy {}", args.policy))?;
            gpu_autoscaler_clouds::build_provider(kind, &policy.spec, &cloud_options)
                .await
                .map_err(|e| anyhow::anyhow!("{cloud:?} provider: {e}"))?
        }
    };
    let utilization: Arc<dyn UtilizationSource> = match args.utilization.trim() {
        "none" | "" => Arc::new(NoUtilization),
        spec if spec == "agents" || spec.starts_with("agents:") => {
            let port = agent_port(spec)?;
            Arc::new(AgentUtilization::from_nodes(
                client.clone(),
                port,
                DEFAULT_SCRAPE_TIMEOUT,
            ))
        }
        spec => {
            let (ns, name) = spec
                .strip_prefix("configmap:")
                .and_then(|r| r.split_once('/'))
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--utilization agents[:PORT], configmap:NAMESPACE/NAME or none, got {spec:?}"
                    )
                })?;
            Arc::new(ConfigMapUtilization::new(client.clone(), ns, name))
        }
    };
    let mut config = ScalerConfig::new(args.policy.clone());
    config.interval = args.interval;
    config.debounce = args.debounce;
    config.gpu_resources = GpuResourceNames::default().with_extra(&args.gpu_resources);
    // The scaler's own state (predictor history) lives in its namespace.
    config.state_namespace = args.lease_namespace.clone();
    config.forecast_clock = args.forecast_timezone;
    if !args.no_leader_election {
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        config.lease = Some(LeaseConfig::new(
            &args.lease_name,
            &args.lease_namespace,
            identity,
        ));
    }
    // One registry for the controller's and the cloud calls' metrics, served on /metrics.
    let mut metrics = Metrics::new();
    cloud_options.metrics.register(&mut metrics.registry);
    let scaler = Scaler::new(client, config, provider, utilization).with_metrics(Arc::new(metrics));
    let handle = scaler.handle();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, policy = %args.policy, provider = ?args.provider, "starting scaler");
    let server = tokio::spawn(async move { axum::serve(listener, http::router(handle)).await });
    let result = scaler.run(crate::shutdown::signal()).await;
    server.abort();
    result.map_err(|e| anyhow::anyhow!("scaler: {e}"))
}

/// The agent port of `agents` / `agents:PORT`.
fn agent_port(spec: &str) -> anyhow::Result<u16> {
    match spec.strip_prefix("agents").map(|r| r.strip_prefix(':')) {
        Some(None) if spec == "agents" => Ok(DEFAULT_AGENT_PORT),
        Some(Some(port)) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow::anyhow!("--utilization agents:PORT: bad port {port:?}")),
        _ => anyhow::bail!("--utilization agents[:PORT], got {spec:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ports_parse() {
        assert_eq!(agent_port("agents").ok(), Some(9400));
        assert_eq!(agent_port("agents:9500").ok(), Some(9500));
        assert!(agent_port("agents:").is_err());
        assert!(agent_port("agents:0").is_err());
        assert!(agent_port("agents:x").is_err());
        assert!(agent_port("agentsx").is_err());
    }
}
