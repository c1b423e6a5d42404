//! `gpu-autoscaler crd`: prints the CRDs generated from the Rust types.

#[derive(clap::Args)]
pub struct CrdArgs {}

pub fn run(_args: CrdArgs) -> anyhow::Result<()> {
    print!("{}", gpu_autoscaler_api::policy::crd_yaml());
    Ok(())
}
