//! Forecast cost per pool per tick with 28 days of 5-minute history (target: well under 1 ms).

use chrono::{Duration, NaiveDate, NaiveDateTime};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gpu_autoscaler_predictor::model::{Forecaster, ModelConfig};
use gpu_autoscaler_predictor::prewarm::{self, PreWarmPolicy};

fn start() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// A weekly pattern with a daytime bump, a weekend dip and deterministic jitter.
fn demand(i: i64) -> f64 {
    let minute_of_week = (i * 5) % (7 * 1440);
    let day = minute_of_week / 1440;
    let hour = (minute_of_week % 1440) as f64 / 60.0;
    let base = if day >= 5 { 40.0 } else { 80.0 };
    let bump = 40.0 * (-((hour - 13.0) / 3.0).powi(2)).exp();
    let jitter = ((i * 7919) % 13) as f64 - 6.0;
    base + bump + jitter
}

fn trained(cfg: ModelConfig) -> (Forecaster, NaiveDateTime) {
    let mut m = Forecaster::new(cfg).expect("valid config");
    let steps = 28 * 288;
    for i in 0..steps {
        m.observe(start() + Duration::minutes(5 * i), demand(i));
    }
    (m, start() + Duration::minutes(5 * (steps - 1)))
}

fn bench(c: &mut Criterion) {
    let (weekly28, now) = trained(ModelConfig {
        lookback_days: 28,
        ..ModelConfig::default()
    });
    c.bench_function("forecast_28d_5min_lookback28", |b| {
        b.iter(|| black_box(&weekly28).forecast(black_box(now), Duration::minutes(30)))
    });
    let (default7, now7) = trained(ModelConfig::default());
    c.bench_function("forecast_28d_5min_default", |b| {
        b.iter(|| black_box(&default7).forecast(black_box(now7), Duration::minutes(30)))
    });
    let policy = PreWarmPolicy {
        lead_time: Duration::minutes(10),
        ..PreWarmPolicy::default()
    };
    c.bench_function("prewarm_decide_28d_5min", |b| {
        b.iter(|| prewarm::decide(black_box(&weekly28), black_box(now), 100.0, &policy))
    });
    c.bench_function("observe_one_tick", |b| {
        let mut m = weekly28.clone();
        let mut i = 28 * 288;
        b.iter(|| {
            m.observe(start() + Duration::minutes(5 * i), demand(i));
            i += 1;
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
