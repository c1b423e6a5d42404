//! Wiring: one call that runs the sampler, the watcher and the HTTP server of an agent, used
//! by the `agent` subcommand and by the end-to-end tests alike.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpu_autoscaler_api::GpuResourceNames;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cloud::aws::AwsImds;
use crate::cloud::azure::AzureScheduledEvents;
use crate::cloud::gcp::GcpMetadata;
use crate::cloud::{self, Cloud, CloudWatcher};
use crate::gpu::{GpuReader, Sampler};
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::node::{NodeActions, RebalanceAction};
use crate::server::{self, AgentState, SamplingConfig};
use crate::watcher::{self, Watcher};

/// Metadata service base URLs (overridable for tests and proxies).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub aws: String,
    pub gcp: String,
    pub azure: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            aws: cloud::aws::DEFAULT_ENDPOINT.to_string(),
            gcp: cloud::gcp::DEFAULT_ENDPOINT.to_string(),
            azure: cloud::azure::DEFAULT_ENDPOINT.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub cloud: Cloud,
    pub poll_interval: Duration,
    pub sample_interval: Duration,
    /// Averaging window of the utilization served to the scaler.
    pub window: Duration,
    pub endpoints: Endpoints,
    pub metadata_timeout: Duration,
    /// GCP: long-poll with `wait_for_change`, each request hanging at most this long.
    pub gcp_wait_for_change: Option<Duration>,
    pub gcp_notice: Duration,
    /// Azure: the VM name in Scheduled Events `Resources` (default: the node name).
    pub azure_vm_name: Option<String>,
    pub azure_ack_margin: Duration,
    pub rebalance: RebalanceAction,
    pub pod_resources_socket: Option<PathBuf>,
    pub gpu_names: GpuResourceNames,
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>, cloud: Cloud) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            cloud,
            poll_interval: watcher::DEFAULT_POLL_INTERVAL,
            sample_interval: Duration::from_secs(10),
            window: Duration::from_secs(300),
            endpoints: Endpoints::default(),
            metadata_timeout: cloud::DEFAULT_REQUEST_TIMEOUT,
            gcp_wait_for_change: None,
            gcp_notice: cloud::gcp::DEFAULT_NOTICE,
            azure_vm_name: None,
            azure_ack_margin: watcher::DEFAULT_AZURE_ACK_MARGIN,
            rebalance: RebalanceAction::Annotate,
            pod_resources_socket: Some(PathBuf::from(crate::podresources::DEFAULT_SOCKET)),
            gpu_names: GpuResourceNames::default(),
        }
    }
}

/// The metadata watcher for `config.cloud`.
pub fn cloud_watcher(config: &AgentConfig) -> CloudWatcher {
    let http = HttpClient::new();
    let timeout = config.metadata_timeout;
    match config.cloud {
        Cloud::Aws => CloudWatcher::Aws(
            AwsImds::new(http, &config.endpoints.aws, timeout)
                .watch_rebalance(config.rebalance != RebalanceAction::Ignore),
        ),
        Cloud::Gcp => CloudWatcher::Gcp(
            GcpMetadata::new(http, &config.endpoints.gcp, timeout)
                .notice(config.gcp_notice)
                .wait_for_change(config.gcp_wait_for_change),
        ),
        Cloud::Azure => CloudWatcher::Azure(AzureScheduledEvents::new(
            http,
            &config.endpoints.azure,
            timeout,
            config
                .azure_vm_name
                .clone()
                .unwrap_or_else(|| config.node_name.clone()),
        )),
        Cloud::None => CloudWatcher::None,
    }
}

/// A running agent's handles.
#[derive(Debug, Clone)]
pub struct Handles {
    pub state: Arc<AgentState>,
    pub metrics: Arc<Metrics>,
    pub local_addr: SocketAddr,
}

/// Runs the agent on `listener` until `shutdown` resolves. `on_start` gets the handles once
/// everything is running (tests use it to find the port and the state).
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    reader: Arc<dyn GpuReader>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(Handles),
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let sampler = Sampler::new(&config.node_name, config.window);
    let state = AgentState::new(sampler.empty_report(), metrics.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let gpu_names = config.gpu_names.clone();
    let sampling = SamplingConfig {
        reader,
        interval: config.sample_interval,
        pod_resources_socket: config.pod_resources_socket.clone(),
        gpu_resource: Arc::new(move |r: &str| gpu_names.is_gpu(r)),
    };
    let sampler_task = tokio::spawn(server::run_sampler(
        sampling,
        sampler,
        state.clone(),
        stopped(stop_rx.clone()),
    ));
    let actions = NodeActions::new(client, &config.node_name, config.rebalance);
    let watcher = Watcher::new(cloud_watcher(&config), actions, metrics.clone())
        .poll_interval(config.poll_interval)
        .azure_ack_margin(config.azure_ack_margin);
    let watcher_task = tokio::spawn(watcher.run(stopped(stop_rx)));

    on_start(Handles {
        state: state.clone(),
        metrics,
        local_addr: listener.local_addr()?,
    });
    let served = axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = sampler_task.await;
    let _ = watcher_task.await;
    served
}
