//! `gpu-autoscaler`: one binary, one subcommand per component. Each subcommand lives in its
//! own module and owns its flags; this file only parses, sets up logging and dispatches.

mod agent;
mod certs;
mod crd;
mod duration;
mod extender;
mod logging;
mod predict;
mod scaler;
mod shutdown;
mod simulate;
mod webhook;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gpu-autoscaler",
    version,
    about = "GPU-aware node autoscaling for Kubernetes"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-node DaemonSet: NVML GPU utilization and the spot-interruption watcher.
    Agent(agent::AgentArgs),
    /// Generate webhook certificates; optionally keep the TLS Secret and caBundle up to date.
    Certs(certs::CertsArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd(crd::CrdArgs),
    /// kube-scheduler extender: capacity-type filtering, reclaim avoidance and GPU bin packing.
    Extender(extender::ExtenderArgs),
    /// Demand forecasting tools: `predict backtest`.
    Predict(predict::PredictArgs),
    /// The autoscaling controller: plans with the GPU-aware engine and drives the cloud (leader-elected).
    Scaler(scaler::ScalerArgs),
    /// Replay a real GPU cluster trace on a simulated cloud through the real engine; compare with reactive on-demand and static peak.
    Simulate(simulate::SimulateArgs),
    /// Mutating admission webhook: eviction priority, tier preference, toleration and affinity for GPU pods.
    Webhook(webhook::WebhookArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    // rustls needs one process-wide crypto provider; we standardise on aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Agent(args) => agent::run(args).await,
            Command::Certs(args) => certs::run(args).await,
            Command::Crd(args) => crd::run(args),
            Command::Extender(args) => extender::run(args).await,
            Command::Predict(args) => predict::run(args),
            Command::Scaler(args) => scaler::run(args).await,
            Command::Simulate(args) => simulate::run(args),
            Command::Webhook(args) => webhook::run(args).await,
        }
    })
}
