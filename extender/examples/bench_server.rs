//! Serves the extender over a synthetic cluster on loopback, for load generators.
//!
//! ```text
//! cargo run --release -p gpu-autoscaler-extender --example bench_server -- \
//!     --nodes 5000 --listen 127.0.0.1:18888 --out /tmp/extender-bench
//! ```
//!
//! The index is loaded with `synth::cluster(N)` and marked synced (node-cache mode, no API
//! server). Request bodies for both modes are written to `--out`: `cache.json` (NodeNames only)
//! and `full.json` (the full NodeList), for the same high-priority 2-GPU spot-first pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use gpu_autoscaler_api::GpuResourceNames;
use gpu_autoscaler_extender::server::Extender;
use gpu_autoscaler_extender::{ClusterIndex, Config, router, serve_http, synth};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = arg(&args, "--nodes", "5000").parse()?;
    let listen: SocketAddr = arg(&args, "--listen", "127.0.0.1:18888").parse()?;
    let out = PathBuf::from(arg(&args, "--out", "/tmp/extender-bench"));
    std::fs::create_dir_all(&out)?;

    let now = Utc::now();
    let index = Arc::new(ClusterIndex::new(GpuResourceNames::default(), true));
    index.load_views(synth::cluster(nodes, now));
    let ext = Arc::new(Extender::new(Config::default(), index));

    let pod = synth::pod_json(
        "bench",
        2,
        Some("spot,on-demand"),
        Some("high"),
        Some("rs-1"),
    );
    let cache = synth::cache_request(&pod, (0..nodes).map(|i| format!("gpu-node-{i:05}")));
    let full = synth::full_request(&pod, (0..nodes).map(|i| synth::node_json(i, now)).collect());
    std::fs::write(out.join("cache.json"), &cache)?;
    std::fs::write(out.join("full.json"), &full)?;
    println!(
        "nodes={nodes} cache.json={} bytes full.json={} bytes listening on {listen}",
        cache.len(),
        full.len()
    );

    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_http(listener, router(ext), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
