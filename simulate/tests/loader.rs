//! Loader tests: the bundled real file, and broken files with located errors.

use std::io::Write as _;

use gpu_autoscaler_simulate::trace::{self, LoadError, SeriesOptions};

const HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time";

#[test]
fn bundled_openb_file_loads_with_multi_gpu_and_fractional_pods() {
    let t = trace::bundled().unwrap();
    // 8,152 rows; 1,088 ask for no GPU (see the row counts in data/ATTRIBUTION.md).
    assert_eq!(t.pods.len() + t.dropped_cpu_only, 8152);
    assert_eq!(t.dropped_cpu_only, 1088);
    let s = t.summary();
    // 861 GPU pods were Pending and never scheduled in the original cluster.
    assert_eq!(s.never_scheduled, 861);
    assert!(s.fractional > 3000, "{}", s.fractional);
    assert!(t.pods.iter().any(|p| p.gpus == 8) && t.pods.iter().any(|p| p.gpus == 2));
    assert!(
        t.pods.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s),
        "sorted by arrival"
    );
    assert!(t.pods.iter().all(|p| p.duration_s >= 0 && p.gpus >= 1));
    // The first row: created 0, scheduled 0, deleted 12,537,496.
    let p0 = t.pods.iter().find(|p| p.name == "openb-pod-0000").unwrap();
    assert_eq!(
        (p0.arrival_s, p0.duration_s, p0.gpu_milli),
        (0, 12_537_496, 1000)
    );
    // openb-pod-0001: 460 milli-GPU, scheduled at creation.
    let p1 = t.pods.iter().find(|p| p.name == "openb-pod-0001").unwrap();
    assert_eq!(
        (p1.gpus, p1.gpu_milli, p1.duration_s),
        (1, 460, 12_902_960 - 427_061)
    );
}

#[test]
fn never_scheduled_pods_run_from_creation_to_deletion() {
    let text = format!("{HEADER}\np,1000,1024,1,500,,BE,Pending,100,160,\n");
    let t = trace::parse_pod_list("x.csv", &text).unwrap();
    assert!(t.pods[0].never_scheduled);
    assert_eq!(t.pods[0].duration_s, 60);
}

#[test]
fn missing_file_names_the_file() {
    let err = trace::load_pod_list(std::path::Path::new("/nonexistent/pods.csv")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(msg.contains("/nonexistent/pods.csv"), "{msg}");
}

#[test]
fn missing_column_names_the_column_and_the_header() {
    let text = "name,cpu_milli,memory_mib,num_gpu,qos,creation_time,deletion_time,scheduled_time\n";
    let msg = trace::parse_pod_list("pods.csv", text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pods.csv") && msg.contains("line 1") && msg.contains("\"gpu_milli\""),
        "{msg}"
    );
    assert!(msg.contains("name,cpu_milli"), "{msg}");
}

#[test]
fn malformed_row_names_file_line_and_column() {
    let text = format!(
        "{HEADER}\na,1000,1024,1,500,,LS,Running,0,10,0\nb,1000,1024,two,500,,LS,Running,0,10,0\n"
    );
    let msg = trace::parse_pod_list("pods.csv", &text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pods.csv, line 3, column \"num_gpu\"") && msg.contains("\"two\""),
        "{msg}"
    );

    let text = format!("{HEADER}\na,1000,1024,1,500,,LS,Running,0,10,20\n");
    let msg = trace::parse_pod_list("pods.csv", &text)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2, column \"deletion_time\""), "{msg}");

    let text = format!("{HEADER}\na,1000,1024,1,1500,,LS,Running,0,10,0\n");
    let msg = trace::parse_pod_list("pods.csv", &text)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2, column \"gpu_milli\""), "{msg}");

    let text = format!("{HEADER}\na,1000,1024,1\n");
    let msg = trace::parse_pod_list("pods.csv", &text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 2") && msg.contains("4 fields, the header has 11"),
        "{msg}"
    );
}

#[test]
fn a_file_without_gpu_pods_is_an_error() {
    let text = format!("{HEADER}\na,1000,1024,0,0,,LS,Running,0,10,0\n");
    let msg = trace::parse_pod_list("cpu.csv", &text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cpu.csv") && msg.contains("no GPU pods"),
        "{msg}"
    );
}

fn opts(gpus: u32) -> SeriesOptions {
    SeriesOptions {
        gpus_per_unit: gpus,
        cpu_milli_per_gpu: 8000,
        memory_mib_per_gpu: 30000,
    }
}

#[test]
fn philly_series_becomes_lifo_pods() {
    let text = "time,active,total\n2017-10-03 00:00:00,2,420\n2017-10-03 00:01:00,3,420\n2017-10-03 00:02:00,1,420\n";
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let t = trace::load_demand_series(f.path(), &opts(8)).unwrap();
    // Rise to 2 at t=0, to 3 at t=60, fall to 1 at t=120 (newest two end), last one ends one
    // step after the last sample.
    let d: Vec<(i64, i64, u32)> = t
        .pods
        .iter()
        .map(|p| (p.arrival_s, p.duration_s, p.gpus))
        .collect();
    assert_eq!(d, vec![(0, 180, 8), (0, 120, 8), (60, 60, 8)]);
}

#[test]
fn helios_series_sums_running_and_pending_over_vcs() {
    let text = "time,vc,total_gpu_num,running_gpu_num,pending_gpu_num,idle_gpu_num\n\
                2020-05-01 00:00:00,a,64,3,1,0\n2020-05-01 00:00:00,b,64,2,0,0\n\
                2020-05-01 00:10:00,a,64,1,0,0\n2020-05-01 00:10:00,b,64,1,0,0\n";
    let t = trace::parse_demand_series("h.csv", text, &opts(1)).unwrap();
    assert_eq!(t.pods.len(), 6);
    assert_eq!(t.pods.iter().filter(|p| p.duration_s == 600).count(), 4);
    assert_eq!(t.pods.iter().filter(|p| p.duration_s == 1200).count(), 2);
}

#[test]
fn broken_series_rows_are_located() {
    let text = "time,active,total\n2017-10-03 00:00:00,2,420\n03/10/2017,3,420\n";
    let msg = trace::parse_demand_series("p.csv", text, &opts(8))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("p.csv, line 3, column \"time\""), "{msg}");
    let text = "time,active,total\n2017-10-03 00:00:00,x,420\n";
    let msg = trace::parse_demand_series("p.csv", text, &opts(8))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2, column \"active\""), "{msg}");
    let text = "time,foo\n2017-10-03 00:00:00,1\n";
    let msg = trace::parse_demand_series("p.csv", text, &opts(8))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing column \"vc\""), "{msg}");
}
