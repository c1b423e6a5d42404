//! `gpu-autoscaler`: one binary, one subcommand per component. Each subcommand lives in its
//! own module and owns its flags; this file only parses, sets up logging and dispatches.

mod crd;
mod logging;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gpu-autoscaler", version, about = "GPU-aware node autoscaling for Kubernetes")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd(crd::CrdArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    // rustls needs one process-wide crypto provider; we standardise on aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Crd(args) => crd::run(args),
        }
    })
}
