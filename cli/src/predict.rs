//! `gpu-autoscaler predict ...`: CLI glue over the predictor library (no logic here).

use std::path::PathBuf;

use anyhow::Context as _;
use gpu_autoscaler_predictor::backtest::{self, BacktestOptions};
use gpu_autoscaler_predictor::model::ModelConfig;
use gpu_autoscaler_predictor::series::{self, DemandSeries};

/// Demand forecasting tools.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    #[command(subcommand)]
    pub command: PredictCommand,
}

/// `predict` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PredictCommand {
    /// Replay a demand series and score the model against seasonal-naive and last-value.
    Backtest(BacktestArgs),
}

/// Input format of `--series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeriesFormat {
    /// Philly node sequence (`time,active,total` per minute), resampled to 5 minutes.
    Philly,
    /// Alibaba openb pod list, converted to hourly GPU demand (relative time: daily season).
    Openb,
    /// Generic `time,value` CSV.
    Csv,
}

/// `predict backtest` options.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Demand series file.
    #[arg(long)]
    pub series: PathBuf,
    /// How to read `--series`; guessed from the header when omitted.
    #[arg(long, value_enum)]
    pub format: Option<SeriesFormat>,
    /// Value column of the Philly format.
    #[arg(long, default_value = "active")]
    pub column: String,
    /// Forecast horizon, a multiple of the series step (default 30, or one step of a
    /// coarser series such as the hourly openb demand).
    #[arg(long)]
    pub horizon_minutes: Option<u32>,
    /// Seasonal lookback (7, 14, 21, 28 for a weekly season; 1..=28 daily).
    #[arg(long)]
    pub lookback_days: Option<u32>,
    /// Evaluation window at the end of the series (never used for tuning).
    #[arg(long, default_value_t = 14)]
    pub holdout_days: u32,
    /// Capacity for the pre-warm utilization (default: the series maximum).
    #[arg(long)]
    pub capacity: Option<f64>,
    /// Also score the candidate designs on the weeks before the hold-out (model selection).
    #[arg(long, value_name = "DAYS")]
    pub select_days: Option<u32>,
    /// Write series.csv, forecasts.csv, summary.txt and chart.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn guess_format(path: &std::path::Path) -> anyhow::Result<SeriesFormat> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut header = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut header)
        .with_context(|| format!("read {}", path.display()))?;
    let cols: Vec<&str> = header.trim().split(',').map(str::trim).collect();
    Ok(if cols.contains(&"num_gpu") {
        SeriesFormat::Openb
    } else if cols.contains(&"active") {
        SeriesFormat::Philly
    } else {
        SeriesFormat::Csv
    })
}

fn load(args: &BacktestArgs) -> anyhow::Result<DemandSeries> {
    let format = match args.format {
        Some(f) => f,
        None => guess_format(&args.series)?,
    };
    Ok(match format {
        SeriesFormat::Philly => series::load_philly(&args.series, &args.column)?,
        SeriesFormat::Openb => series::load_openb(&args.series)?,
        SeriesFormat::Csv => series::load_csv(&args.series)?,
    })
}

fn backtest_cmd(args: &BacktestArgs) -> anyhow::Result<()> {
    let series = load(args)?;
    let mut opts = BacktestOptions::for_series(&series);
    opts.model = ModelConfig {
        horizon_minutes: args.horizon_minutes.unwrap_or(opts.model.horizon_minutes),
        lookback_days: args.lookback_days.unwrap_or(opts.model.lookback_days),
        ..opts.model
    };
    opts.model.validate()?;
    opts.holdout_days = args.holdout_days;
    opts.capacity = args.capacity;
    println!(
        "loaded {}: {} steps of {} min from {} ({} present)",
        series.name,
        series.len(),
        series.step_minutes,
        series.start,
        series.present()
    );
    if let Some(days) = args.select_days {
        let cands = backtest::candidates(&opts.model);
        let ranked = backtest::select(&series, &opts, &cands, days)?;
        println!("model selection on the {days} days before the hold-out (best MAE first):");
        println!(
            "{:<48} {:>9} {:>8} {:>9}",
            "candidate", "MAE", "MAPE", "coverage"
        );
        for (name, m) in &ranked {
            println!(
                "{:<48} {:>9.3} {:>7.2}% {:>8.1}%",
                name,
                m.mae,
                100.0 * m.mape,
                100.0 * m.coverage
            );
        }
    }
    let report = backtest::run(&series, &opts)?;
    print!("{report}");
    if let Some(dir) = &args.out {
        let files = gpu_autoscaler_predictor::report::write_all(&report, dir)
            .with_context(|| format!("write backtest output to {}", dir.display()))?;
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// Run a `predict` subcommand.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    match args.command {
        PredictCommand::Backtest(b) => backtest_cmd(&b),
    }
}
