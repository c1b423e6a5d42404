#![allow(dead_code)]

use gpu_autoscaler_catalog::{Catalog, Cloud};
use gpu_autoscaler_simulate::SimConfig;
use gpu_autoscaler_simulate::trace::{self, Trace};

pub const HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time";

/// A trace from `(name, gpus, qos, created, scheduled, deleted)` rows, 1 CPU and 1 GiB each.
pub fn tiny(rows: &[(&str, u32, &str, i64, i64, i64)]) -> Trace {
    let mut text = format!("{HEADER}\n");
    for (name, gpus, qos, c, s, d) in rows {
        text.push_str(&format!(
            "{name},1000,1024,{gpus},1000,,{qos},Running,{c},{d},{s}\n"
        ));
    }
    trace::parse_pod_list("tiny.csv", &text).unwrap()
}

pub fn aws_config() -> SimConfig {
    SimConfig::new(Cloud::Aws).unwrap()
}

/// The on-demand price of an AWS us-east-1 type, from the bundled catalog.
pub fn od_price(ty: &str) -> f64 {
    Catalog::aws("us-east-1")
        .unwrap()
        .get(ty)
        .unwrap()
        .on_demand_usd_per_hour
}

/// A slice of the bundled trace: pods arriving in `[from_day, to_day)` that run < 1 day.
pub fn bundled_slice(from_day: f64, to_day: f64) -> Trace {
    let full = trace::bundled().unwrap();
    let (a, b) = ((from_day * 86400.0) as i64, (to_day * 86400.0) as i64);
    let pods: Vec<_> = full
        .pods
        .into_iter()
        .filter(|p| p.arrival_s >= a && p.arrival_s < b && p.duration_s < 86400)
        .collect();
    let end_s = pods
        .iter()
        .map(|p| p.arrival_s + p.duration_s)
        .max()
        .unwrap_or(0);
    Trace {
        source: format!("bundled slice days {from_day}-{to_day}"),
        pods,
        dropped_cpu_only: 0,
        end_s,
    }
}
