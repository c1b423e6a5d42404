//! `gpu-autoscaler agent`: the per-node DaemonSet (NVML utilization + spot-interruption watcher).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::parse_duration;
use anyhow::Context as _;
use gpu_autoscaler_agent::cloud::{self, Cloud};
use gpu_autoscaler_agent::run::{AgentConfig, Endpoints};
use gpu_autoscaler_agent::{NvmlReader, RebalanceAction};
use gpu_autoscaler_api::GpuResourceNames;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// This node's name (from the downward API: spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Metadata service to watch for spot interruptions; `none` samples GPUs only.
    #[arg(long, default_value = "none", value_parser = ["aws", "gcp", "azure", "none"])]
    pub cloud: String,
    /// Address to serve /v1/utilization, /metrics, /healthz and /readyz on.
    #[arg(long, default_value = "0.0.0.0:9400")]
    pub listen: SocketAddr,
    /// How often the metadata service is polled (AWS recommends 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often the GPUs are sampled.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Averaging window of the utilization served to the scaler.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub window: Duration,
    /// Per-request timeout towards the metadata service.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub metadata_timeout: Duration,
    /// AWS instance metadata (IMDSv2) base URL.
    #[arg(long, default_value = cloud::aws::DEFAULT_ENDPOINT)]
    pub aws_metadata_endpoint: String,
    /// GCP metadata server base URL.
    #[arg(long, default_value = cloud::gcp::DEFAULT_ENDPOINT)]
    pub gcp_metadata_endpoint: String,
    /// Azure instance metadata (Scheduled Events) base URL.
    #[arg(long, default_value = cloud::azure::DEFAULT_ENDPOINT)]
    pub azure_metadata_endpoint: String,
    /// GCP: long-poll `instance/preempted` with wait_for_change (each request hangs at most
    /// this long, e.g. 60s) instead of plain polling.
    #[arg(long, value_parser = parse_duration)]
    pub gcp_wait_for_change: Option<Duration>,
    /// GCP gives no termination time: the node is reclaimed this long after detection.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub gcp_notice: Duration,
    /// Azure: this VM's name as listed in Scheduled Events `Resources` (default: --node-name).
    #[arg(long)]
    pub azure_vm_name: Option<String>,
    /// Azure: approve the Preempt event this long before NotBefore even if pods remain.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub azure_ack_margin: Duration,
    /// AWS rebalance recommendation: `annotate` (annotation + NoSchedule taint, no cordon) or
    /// `ignore`.
    #[arg(long, default_value = "annotate", value_parser = ["annotate", "ignore"])]
    pub rebalance_action: String,
    /// Kubelet pod-resources socket, to map GPUs to pods; `none` disables it.
    #[arg(long, default_value = gpu_autoscaler_agent::podresources::DEFAULT_SOCKET)]
    pub pod_resources_socket: String,
    /// Extra GPU resource names (exact, or a prefix ending in `*`).
    #[arg(long = "gpu-resource")]
    pub gpu_resources: Vec<String>,
    /// Kubeconfig file; otherwise KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
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

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cloud: Cloud = args.cloud.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let rebalance: RebalanceAction = args
        .rebalance_action
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    if args.poll_interval.is_zero() || args.sample_interval.is_zero() {
        anyhow::bail!("--poll-interval and --sample-interval must be above zero");
    }
    let config = AgentConfig {
        poll_interval: args.poll_interval,
        sample_interval: args.sample_interval,
        window: args.window,
        endpoints: Endpoints {
            aws: args.aws_metadata_endpoint,
            gcp: args.gcp_metadata_endpoint,
            azure: args.azure_metadata_endpoint,
        },
        metadata_timeout: args.metadata_timeout,
        gcp_wait_for_change: args.gcp_wait_for_change,
        gcp_notice: args.gcp_notice,
        azure_vm_name: args.azure_vm_name,
        azure_ack_margin: args.azure_ack_margin,
        rebalance,
        pod_resources_socket: (args.pod_resources_socket != "none")
            .then(|| PathBuf::from(&args.pod_resources_socket)),
        gpu_names: GpuResourceNames::default().with_extra(&args.gpu_resources),
        ..AgentConfig::new(&args.node_name, cloud)
    };
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(node = %args.node_name, %cloud, listen = %args.listen,
        poll_interval = ?config.poll_interval, "starting agent");
    gpu_autoscaler_agent::run::run(
        config,
        client,
        Arc::new(NvmlReader::new()),
        listener,
        crate::shutdown::signal(),
        |_| {},
    )
    .await?;
    Ok(())
}
