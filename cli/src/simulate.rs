//! `gpu-autoscaler simulate`: replay a real GPU cluster trace through the real engine on a
//! simulated cloud, and compare it with reactive on-demand scaling and a static peak fleet.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gpu_autoscaler_catalog::Cloud;
use gpu_autoscaler_simulate::trace::{self, SeriesOptions};
use gpu_autoscaler_simulate::{SimConfig, report, run_all};

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Pod list in the Alibaba openb CSV format (default: the bundled openb extract).
    #[arg(long, value_name = "FILE", conflicts_with = "demand_series")]
    pub trace: Option<PathBuf>,
    /// Aggregate demand series (Philly `time,active,total` or Helios VC sequence) replayed as
    /// GPU requests.
    #[arg(long, value_name = "FILE")]
    pub demand_series: Option<PathBuf>,
    /// GPUs per demand unit of --demand-series (Helios counts GPUs: 1; Philly counts nodes).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub series_unit_gpus: u32,
    /// AutoscalingPolicy YAML for gpu-autoscaler (default: the bundled policy of --cloud).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Price tables: aws (us-east-1), gcp (us-central1) or azure.
    #[arg(long, default_value = "aws", value_parser = ["aws", "gcp", "azure"])]
    pub cloud: String,
    /// Region of the price tables (default: the cloud's default region).
    #[arg(long)]
    pub region: Option<String>,
    /// Seed of the spot interruption draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pace the replay at this many virtual seconds per wall second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Output directory for report.json and report.html.
    #[arg(long, default_value = "simulate-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Seconds from launch request to a Ready node.
    #[arg(long, default_value_t = gpu_autoscaler_simulate::config::DEFAULT_BOOT_S)]
    pub boot_seconds: i64,
    /// Seconds from Ready to allocatable GPUs (driver + device plugin).
    #[arg(long, default_value_t = gpu_autoscaler_simulate::config::DEFAULT_GPU_READY_S)]
    pub gpu_ready_seconds: i64,
    /// Checkpoint interval of interrupted work in seconds (default: no checkpoints).
    #[arg(long)]
    pub checkpoint_seconds: Option<i64>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let cloud: Cloud = args.cloud.parse()?;
    let mut cfg = SimConfig::new(cloud)?;
    if let Some(region) = &args.region {
        cfg.region = region.clone();
    }
    cfg.seed = args.seed;
    cfg.boot_s = args.boot_seconds;
    cfg.gpu_ready_s = args.gpu_ready_seconds;
    cfg.checkpoint_s = args.checkpoint_seconds.filter(|c| *c > 0);
    if let Some(p) = &args.policy {
        cfg.load_policy(p)?;
    }
    let workload = match (&args.trace, &args.demand_series) {
        (Some(p), _) => trace::load_pod_list(p)?,
        (None, Some(p)) => trace::load_demand_series(
            p,
            &SeriesOptions {
                gpus_per_unit: args.series_unit_gpus,
                // Synthetic pods ask for the trace's median CPU and memory per GPU.
                cpu_milli_per_gpu: median_per_gpu(|p| p.cpu_milli)?,
                memory_mib_per_gpu: median_per_gpu(|p| p.memory_mib)?,
            },
        )?,
        (None, None) => trace::bundled()?,
    };
    let s = workload.summary();
    eprintln!(
        "trace {}: {} GPU pods ({} fractional, {} multi-GPU, {} never scheduled in the original), {:.1} days",
        s.source,
        s.gpu_pods,
        s.fractional,
        workload.pods.iter().filter(|p| p.gpus > 1).count(),
        s.never_scheduled,
        s.span_days
    );

    let speed = args.speed;
    let quiet = args.quiet;
    let mut wall0 = Instant::now();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut last_policy = String::new();
    let mut t0: Option<i64> = None;
    let mut timings: Vec<(String, Instant)> = Vec::new();
    let mut progress = |policy: &str, frac: f64, t: i64| {
        if policy != last_policy {
            timings.push((policy.to_string(), Instant::now()));
            last_policy = policy.to_string();
            t0 = Some(t);
            wall0 = Instant::now();
        }
        if speed > 0.0 {
            // Pace the virtual clock: sleep until wall time catches up.
            let virt = (t - t0.unwrap_or(t)) as f64 / speed;
            let wall = wall0.elapsed().as_secs_f64();
            if virt > wall {
                std::thread::sleep(Duration::from_secs_f64((virt - wall).min(1.0)));
            }
        }
        if !quiet && (last_draw.elapsed() >= Duration::from_millis(200) || frac >= 1.0) {
            last_draw = Instant::now();
            let width = 30;
            let done = ((frac.clamp(0.0, 1.0)) * width as f64) as usize;
            eprint!(
                "\r{policy:>20} [{}{}] {:>5.1}%  day {:>6.1}",
                "#".repeat(done),
                " ".repeat(width - done),
                frac * 100.0,
                t as f64 / 86400.0
            );
            let _ = std::io::stderr().flush();
        }
    };
    let mut rep = run_all(&workload, &cfg, &mut progress)?;
    if !quiet {
        eprintln!();
    }
    let end = Instant::now();
    for (i, (name, at)) in timings.iter().enumerate() {
        let until = timings.get(i + 1).map_or(end, |(_, t)| *t);
        eprintln!("{name}: simulated in {:.1} s", (until - *at).as_secs_f64());
    }
    rep.runtime_seconds = Some(started.elapsed().as_secs_f64());
    report::write(&rep, &args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    println!("{}", report::table(&rep));
    for p in &rep.pools {
        for n in &p.notes {
            println!("note: pool {}: {n}", p.name);
        }
    }
    println!(
        "wrote {} and {} in {:.1} s",
        args.out.join("report.json").display(),
        args.out.join("report.html").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Median of a per-GPU figure over the bundled trace's GPU pods.
fn median_per_gpu(f: impl Fn(&trace::TracePod) -> u64) -> anyhow::Result<u64> {
    let t = trace::bundled()?;
    let mut v: Vec<u64> = t
        .pods
        .iter()
        .map(|p| f(p) / u64::from(p.gpus.max(1)))
        .collect();
    v.sort_unstable();
    Ok(v.get(v.len() / 2).copied().unwrap_or(0))
}
