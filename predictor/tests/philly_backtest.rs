//! Bounded-slice backtest on the real Philly series (CI): the model must beat seasonal-naive.
//! The slice ends well before the reported hold-out (the last two weeks).

use std::path::Path;

use chrono::NaiveDate;
use gpu_autoscaler_predictor::backtest::{self, BacktestOptions};
use gpu_autoscaler_predictor::series::load_philly;

#[test]
fn model_beats_seasonal_naive_on_a_philly_slice() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/traces/philly_node_sequence/philly_node_sequence.csv");
    let full = load_philly(&path, "active").expect("load philly");
    let cut = NaiveDate::from_ymd_opt(2017, 11, 14)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("date");
    let slice = full.before(cut);
    let mut opts = BacktestOptions::for_series(&slice);
    opts.holdout_days = 7;
    opts.capacity = Some(420.0);
    let report = backtest::run(&slice, &opts).expect("backtest");
    let [model, naive, last] = &report.methods[..] else {
        panic!("three methods expected, got {}", report.methods.len());
    };
    assert_eq!(
        (model.name.as_str(), naive.name.as_str(), last.name.as_str()),
        ("model", "seasonal-naive", "last-value")
    );
    assert!(model.n > 1500, "scored {} targets", model.n);
    assert!(
        model.mae < 0.85 * naive.mae,
        "model MAE {} vs seasonal-naive {}",
        model.mae,
        naive.mae
    );
    assert!(model.coverage > 0.6 && model.coverage <= 1.0);
    let text = report.to_string();
    assert!(text.contains("seasonal-naive") && text.contains("calibration"));
    let svg = gpu_autoscaler_predictor::report::svg(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let csv = gpu_autoscaler_predictor::report::forecasts_csv(&report);
    assert_eq!(csv.lines().count(), report.points.len() + 1);
}

#[test]
fn openb_backtest_uses_a_daily_season_and_an_hourly_horizon() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/traces/alibaba_openb_2023/openb_pod_list_default.csv");
    let series = gpu_autoscaler_predictor::series::load_openb(&path).expect("load openb");
    let mut opts = BacktestOptions::for_series(&series);
    assert_eq!(
        opts.model.season,
        gpu_autoscaler_predictor::model::Season::Daily
    );
    assert_eq!(
        opts.model.horizon_minutes, 60,
        "a 30-minute horizon is off the hourly grid"
    );
    opts.holdout_days = 7;
    let report = backtest::run(&series, &opts).expect("backtest");
    let (model, naive) = (&report.methods[0], &report.methods[1]);
    assert!(model.n >= 160, "scored {}", model.n);
    assert!(
        model.mae < naive.mae,
        "model {} vs naive {}",
        model.mae,
        naive.mae
    );

    opts.model.horizon_minutes = 90;
    let err = backtest::run(&series, &opts).expect_err("90 min is off the hourly grid");
    assert!(
        matches!(err, backtest::BacktestError::Horizon { .. }),
        "{err}"
    );
}
