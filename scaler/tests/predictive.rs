//! Predictive pre-warming on a virtual clock: the real predictor feeds the real engine
//! through `scaler::forecast`, exactly as the controller and `simulate` do.

use chrono::{DateTime, Datelike, Duration, FixedOffset, TimeZone, Timelike, Utc, Weekday};
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::AutoscalingPolicySpec;
use gpu_autoscaler_scaler::engine::ScaleUpCause;
use gpu_autoscaler_scaler::engine::testing::{VirtualCluster, node_pool, pool_state};
use gpu_autoscaler_scaler::forecast::{DemandForecaster, ForecastClock, capacity_gpus};

const STEP_MIN: i64 = 5;
const PEAK_GPUS: f64 = 32.0;

/// Weekdays 09:00-17:00: a team's 32-GPU training slot; nothing otherwise.
fn weekday_peak(t: DateTime<Utc>) -> f64 {
    let weekday = !matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
    if weekday && (9..17).contains(&t.hour()) {
        PEAK_GPUS
    } else {
        0.0
    }
}

fn policy() -> AutoscalingPolicySpec {
    let mut p = AutoscalingPolicySpec {
        enable_predictive_scaling: true,
        enable_multi_tier_scaling: false,
        enable_spot_instances: false,
        node_pools: vec![node_pool(
            "od",
            CapacityType::OnDemand,
            0,
            10,
            &["p3.16xlarge"],
            &["us-east-1a"],
        )],
        ..Default::default()
    };
    p.scale_up_cooldown_seconds = 0;
    p
}

fn trained(
    history: impl Fn(DateTime<Utc>, u64) -> f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DemandForecaster {
    trained_on(FixedOffset::east_opt(0).unwrap().into(), history, from, to)
}

fn trained_on(
    clock: ForecastClock,
    history: impl Fn(DateTime<Utc>, u64) -> f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DemandForecaster {
    let settings = policy().predictive;
    let mut f = DemandForecaster::new(&settings, STEP_MIN as u32, clock).unwrap();
    let mut t = from;
    let mut i = 0u64;
    while t < to {
        f.observe(t, history(t, i));
        t += Duration::minutes(STEP_MIN);
        i += 1;
    }
    f
}

/// Runs one morning from 06:00 on `day`, feeding the forecaster the live demand, and returns
/// the time of the first predictive scale-up, if any.
fn first_pre_warm(
    mut f: DemandForecaster,
    day: DateTime<Utc>,
    live: impl Fn(DateTime<Utc>) -> f64,
) -> Option<DateTime<Utc>> {
    let boot = Duration::minutes(5);
    let gpu_ready = Duration::minutes(2);
    let mut cluster = VirtualCluster::new(
        day + Duration::hours(6),
        policy(),
        vec![pool_state(policy().node_pools[0].clone())],
    );
    cluster.boot_delay = boot;
    cluster.gpu_ready_delay = gpu_ready;
    let settings = cluster.policy.predictive.clone();
    let end = day + Duration::hours(10);
    while cluster.now < end {
        let now = cluster.now;
        f.observe(now, live(now));
        let snap = cluster.snapshot();
        cluster.forecast = Some(f.view(now, capacity_gpus(&snap), &settings, boot + gpu_ready));
        let plan = cluster.step(Duration::minutes(STEP_MIN));
        if plan
            .scale_ups
            .iter()
            .any(|s| s.cause == ScaleUpCause::Predictive)
        {
            return Some(now);
        }
    }
    None
}

#[test]
fn recurring_weekday_peak_is_pre_warmed_before_0830_minus_boot() {
    // Three weeks of history, then Monday of the fourth week.
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap(); // a Monday
    let monday = start + Duration::weeks(3);
    let f = trained(|t, _| weekday_peak(t), start, monday + Duration::hours(6));
    let at = first_pre_warm(f, monday, weekday_peak)
        .expect("a confident weekday peak must be pre-warmed");
    let latest = monday + Duration::hours(8) + Duration::minutes(30) - Duration::minutes(7);
    assert!(
        at <= latest,
        "pre-warm started at {at}, after {latest} (08:30 minus boot and GPU-ready time)"
    );
    assert!(
        at >= monday + Duration::hours(7),
        "pre-warm at {at} is far too early for a 09:00 peak"
    );
}

/// Weekdays 09:00-17:00 Berlin time (CET in winter, CEST from the last Sunday of March).
fn berlin_weekday_peak(t: DateTime<Utc>) -> f64 {
    weekday_peak(
        t.with_timezone(&chrono_tz::Europe::Berlin)
            .naive_local()
            .and_utc(),
    )
}

#[test]
fn a_zone_clock_keeps_business_hours_across_daylight_saving_time() {
    // Three weeks of Berlin office hours in winter time, then the first Monday after the
    // switch to summer time (2026-03-29): 09:00 local is now 07:00 UTC instead of 08:00.
    let start = Utc.with_ymd_and_hms(2026, 3, 9, 0, 0, 0).unwrap(); // a Monday
    let monday = start + Duration::weeks(3);
    let zone: ForecastClock = "Europe/Berlin".parse().unwrap();
    let f = trained_on(
        zone,
        |t, _| berlin_weekday_peak(t),
        start,
        monday + Duration::hours(6),
    );
    let at = first_pre_warm(f, monday, berlin_weekday_peak).expect("pre-warm with a zone clock");
    // Ready for 07:00 UTC: start no later than 06:30 minus boot and GPU-ready time.
    let latest = monday + Duration::hours(6) + Duration::minutes(30) - Duration::minutes(7);
    assert!(
        at <= latest,
        "zone clock pre-warmed at {at}, after {latest}"
    );

    // The same history on a fixed +01:00 clock still expects 08:00 UTC and warms an hour late.
    let fixed: ForecastClock = "+01:00".parse().unwrap();
    let f = trained_on(
        fixed,
        |t, _| berlin_weekday_peak(t),
        start,
        monday + Duration::hours(6),
    );
    let fixed_at = first_pre_warm(f, monday, berlin_weekday_peak);
    assert!(
        fixed_at.is_none_or(|t| t > latest),
        "a fixed offset cannot know about DST: {fixed_at:?}"
    );
}

#[test]
fn no_pre_warm_when_confidence_is_low() {
    // The same amount of demand, but on erratic days and hours: nothing repeats.
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let monday = start + Duration::weeks(3);
    let erratic = |t: DateTime<Utc>, i: u64| {
        // A deterministic scramble (splitmix64) picks ~1/3 of the hours at random.
        let mut z = (t.timestamp() as u64 / 3600).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let _ = i;
        if z.is_multiple_of(3) { PEAK_GPUS } else { 0.0 }
    };
    let f = trained(erratic, start, monday + Duration::hours(6));
    let probe = f.view(
        monday + Duration::hours(8),
        0.0,
        &policy().predictive,
        Duration::minutes(7),
    );
    assert!(
        probe.confidence < 0.7,
        "erratic history must not be trusted, confidence {}",
        probe.confidence
    );
    assert_eq!(
        first_pre_warm(f, monday, |t| erratic(t, 0)),
        None,
        "no pre-warm on a low-confidence day"
    );
}

#[test]
fn no_pre_warm_on_a_quiet_weekend() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let saturday = start + Duration::weeks(3) + Duration::days(5);
    assert_eq!(saturday.weekday(), Weekday::Sat);
    let f = trained(|t, _| weekday_peak(t), start, saturday + Duration::hours(6));
    assert_eq!(first_pre_warm(f, saturday, weekday_peak), None);
}

#[test]
fn learning_survives_a_restart() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let monday = start + Duration::weeks(3);
    let now = monday + Duration::hours(8) + Duration::minutes(20);
    let f = trained(
        |t, _| weekday_peak(t),
        start,
        now + Duration::minutes(STEP_MIN),
    );
    let json = f.state().to_json().unwrap();
    assert!(
        json.len() < 64 * 1024,
        "persisted state must fit a ConfigMap comfortably: {} bytes",
        json.len()
    );
    let restored = DemandForecaster::restore(
        gpu_autoscaler_predictor::ModelState::from_json(&json).unwrap(),
        FixedOffset::east_opt(0).unwrap(),
    )
    .unwrap();
    let settings = policy().predictive;
    let a = f.view(now, 0.0, &settings, Duration::minutes(7));
    let b = restored.view(now, 0.0, &settings, Duration::minutes(7));
    assert_eq!(
        a, b,
        "a restored model must forecast exactly like the original"
    );
    assert!(
        a.confidence >= 0.7 && a.predicted_gpus_upper >= PEAK_GPUS / 2.0,
        "{a:?}"
    );
}
