//! Loader tests on the real traces and on broken files.

use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};
use gpu_autoscaler_predictor::series::{
    self, LoadError, load_csv, load_openb, load_philly, openb_epoch, openb_gpus, parse_csv,
    parse_openb, parse_philly,
};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/traces")
        .join(rel)
}

fn philly() -> PathBuf {
    data("philly_node_sequence/philly_node_sequence.csv")
}

fn t(y: i32, m: u32, d: u32, h: u32, mi: u32) -> chrono::NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|x| x.and_hms_opt(h, mi, 0))
        .expect("date")
}

#[test]
fn philly_resamples_to_five_minutes_with_its_hole_and_dst_hour() {
    let s = load_philly(&philly(), "active").expect("load philly");
    assert_eq!(s.step_minutes, 5);
    assert!(s.weekday_known);
    assert_eq!(s.start, t(2017, 10, 3, 0, 0));
    assert_eq!(s.end(), t(2017, 12, 15, 18, 45));
    // The 10-hour hole (599 minutes after 2017-10-25 14:00) leaves 119 empty buckets.
    let hole_start = s.index_of(t(2017, 10, 25, 14, 5)).expect("in range");
    assert!(s.values[hole_start - 1].is_some());
    assert!(
        s.values[hole_start..hole_start + 119]
            .iter()
            .all(Option::is_none)
    );
    assert_eq!(s.len() - s.present(), 119);
    // The DST hour is present once per bucket, and buckets average 5 minutes.
    let dst = s.index_of(t(2017, 11, 5, 1, 0)).expect("in range");
    assert!(s.values[dst].is_some());
    let first = s.values[0].expect("first bucket");
    let want = (312.0 + 309.0 + 314.0 + 314.0 + raw_fifth()) / 5.0;
    assert!((first - want).abs() < 1e-9, "{first} vs {want}");
    let max = s.max_value().expect("values");
    assert!((300.0..=460.0).contains(&max), "max {max}");
}

fn raw_fifth() -> f64 {
    let text = std::fs::read_to_string(philly()).expect("read");
    let line = text.lines().nth(5).expect("row 5");
    line.split(',')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("active")
}

#[test]
fn philly_other_column_and_missing_column() {
    let s = load_philly(&philly(), "total").expect("total column");
    assert_eq!(s.values[0], Some(420.0));
    let e = load_philly(&philly(), "busy").expect_err("no such column");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::MissingColumn { .. }));
    assert!(
        msg.contains("philly_node_sequence.csv") && msg.contains("busy"),
        "{msg}"
    );
}

#[test]
fn openb_gives_hourly_demand_over_the_dense_days() {
    let s = load_openb(&data("alibaba_openb_2023/openb_pod_list_default.csv")).expect("load");
    assert_eq!(s.step_minutes, 60);
    assert!(!s.weekday_known);
    let days = s.len() as f64 / 24.0;
    assert!((33.0..=35.0).contains(&days), "{days} days");
    // Starts on relative day 115 (the earliest deletion), ends by day 150.
    let from = (s.start - openb_epoch()).num_hours() as f64 / 24.0;
    assert!((115.0..116.0).contains(&from), "starts on day {from}");
    assert_eq!(s.present(), s.len());
    let mean = s.values.iter().flatten().sum::<f64>() / s.len() as f64;
    let max = s.max_value().expect("values");
    assert!((10.0..200.0).contains(&mean), "mean demand {mean}");
    assert!(max < 1000.0, "max demand {max}");
}

#[test]
fn openb_gpu_request_rule() {
    assert_eq!(openb_gpus(1, 460), 0.46);
    assert_eq!(openb_gpus(1, 1000), 1.0);
    assert_eq!(openb_gpus(8, 1000), 8.0);
    assert_eq!(openb_gpus(0, 0), 0.0);
}

#[test]
fn openb_integrates_pods_over_hours_including_pending() {
    let header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";
    let rows = "a,1,1,2,1000,,LS,Running,0,14400,0\n\
        b,1,1,1,500,,LS,Pending,5400,8100,\n\
        c,1,1,0,0,,LS,Running,0,3600,0\n\
        d,1,1,1,1000,,LS,Running,3600,18000,3600\n\
        e,1,1,1,1000,,LS,Running,10800,12600,10800\n";
    let s = parse_openb(format!("{header}{rows}").as_bytes(), "inline").expect("parse");
    // Window: first deletion (1 h) .. last creation (3 h).
    assert_eq!(s.start, openb_epoch() + Duration::hours(1));
    assert_eq!(s.values.len(), 2);
    // Hour 1: a 2 + d 1 + pending b 0.5 GPU for half the hour.
    assert_eq!(s.values[0], Some(3.25));
    // Hour 2: a 2 + d 1 + b 0.5 GPU for a quarter of the hour.
    assert_eq!(s.values[1], Some(3.125));
    let short = format!("{header}a,1,1,1,1000,,LS,Running,0,3600,0\n");
    let e = parse_openb(short.as_bytes(), "short.csv").expect_err("window under an hour");
    assert!(matches!(e, LoadError::Empty { .. }), "{e}");
}

#[test]
fn broken_files_name_file_line_and_column() {
    let bad_time = "time,active,total\n2017-10-03 00:00:00,1,420\nyesterday,2,420\n";
    let e = parse_philly(bad_time.as_bytes(), "p.csv", "active").expect_err("bad time");
    assert!(
        matches!(&e, LoadError::Field { line: 3, column, .. } if column == "time"),
        "{e}"
    );
    assert!(e.to_string().starts_with("p.csv:3: column `time`"), "{e}");

    let bad_num = "time,active,total\n2017-10-03 00:00:00,x1,420\n";
    let e = parse_philly(bad_num.as_bytes(), "p.csv", "active").expect_err("bad number");
    assert!(e.to_string().contains("p.csv:2: column `active`"), "{e}");

    let ragged = "time,value\n2024-01-01 00:00,1\n2024-01-01 00:05,2,3\n";
    let e = parse_csv(ragged.as_bytes(), "g.csv").expect_err("ragged row");
    assert!(matches!(e, LoadError::Row { line: 3, .. }), "{e}");

    let e = parse_csv("time,value\n".as_bytes(), "g.csv").expect_err("no rows");
    assert!(matches!(e, LoadError::Empty { .. }), "{e}");

    let pods = "name,num_gpu,gpu_milli,creation_time,deletion_time\na,1,1000,10,zz\n";
    let e = parse_openb(pods.as_bytes(), "o.csv").expect_err("bad deletion");
    assert!(
        e.to_string().contains("o.csv:2: column `deletion_time`"),
        "{e}"
    );

    let far = "time,value\n1900-01-01 00:00,1\n1900-01-01 00:01,1\n2100-01-01 00:00,2\n";
    let e = parse_csv(far.as_bytes(), "far.csv").expect_err("span too long to allocate");
    assert!(matches!(e, LoadError::Empty { .. }), "{e}");

    let huge =
        "name,num_gpu,gpu_milli,creation_time,deletion_time\na,1,1000,10,9000000000000000000\n";
    let e = parse_openb(huge.as_bytes(), "o.csv").expect_err("absurd time");
    assert!(
        e.to_string().contains("o.csv:2: column `deletion_time`"),
        "{e}"
    );

    let e = load_csv(Path::new("/nonexistent/demand.csv")).expect_err("missing file");
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/demand.csv"));
}

#[test]
fn generic_csv_infers_step_and_keeps_gaps() {
    let csv = "time,value\n\
        2024-01-01T00:00:00,1\n\
        2024-01-01T00:15:00,2\n\
        2024-01-01T00:30:00,\n\
        2024-01-01T01:15:00,4\n\
        2024-01-01T01:15:00,6\n\
        2024-01-01T01:30:00+02:00,7\n";
    let s = parse_csv(csv.as_bytes(), "g.csv").expect("parse");
    assert_eq!(s.step_minutes, 15);
    assert_eq!(s.len(), 7);
    assert_eq!(s.values[0], Some(1.0));
    assert_eq!(s.values[2], None);
    assert_eq!(s.values[5], Some(5.0), "duplicates are averaged");
    assert_eq!(s.values[6], Some(7.0), "offsets keep the local wall clock");
    assert_eq!(s.time_at(6), t(2024, 1, 1, 1, 30));
}

#[test]
fn parse_time_formats() {
    assert_eq!(
        series::parse_time("2017-10-03 00:01:00"),
        Some(t(2017, 10, 3, 0, 1))
    );
    assert_eq!(
        series::parse_time("2017-10-03T00:01"),
        Some(t(2017, 10, 3, 0, 1))
    );
    assert_eq!(series::parse_time("nope"), None);
}
