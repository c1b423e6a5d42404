//! Prometheus metrics of the agent.
//!
//! DCGM-exporter names, so dashboards built for dcgm-exporter work with either (labels `gpu`,
//! `UUID`, `modelName`, `Hostname`, as dcgm-exporter writes them):
//! - `DCGM_FI_DEV_GPU_UTIL`: GPU utilization, percent;
//! - `DCGM_FI_DEV_FB_USED`, `DCGM_FI_DEV_FB_FREE`: framebuffer memory, MiB.
//!
//! Our own (label `node`):
//! - `gpu_autoscaler_agent_gpu_utilization_ratio{node,gpu,uuid}`: 0..1 per GPU;
//! - `gpu_autoscaler_agent_gpu_memory_used_bytes`, `..._memory_total_bytes{node,gpu,uuid}`;
//! - `gpu_autoscaler_agent_node_utilization_ratio{node}`: window average served to the scaler;
//! - `gpu_autoscaler_agent_gpus{node}`: devices seen in the last sample;
//! - `gpu_autoscaler_agent_gpu_status{node,status}`: 1 for the current status (`ok`, `no-gpu`,
//!   `error`), 0 for the others;
//! - `gpu_autoscaler_agent_rejected_readings_total{field}`: garbage readings dropped;
//! - `gpu_autoscaler_agent_samples_total{status}`;
//! - `gpu_autoscaler_agent_interruption_notices_total{cloud,kind}`: distinct notices seen;
//! - `gpu_autoscaler_agent_detection_to_cordon_seconds{cloud}`: from the poll answer that
//!   carried the notice to the cordon patch being accepted by the apiserver;
//! - `gpu_autoscaler_agent_poll_errors_total{cloud}`: failed metadata polls;
//! - `gpu_autoscaler_agent_node_update_errors_total`: failed Node patches;
//! - `gpu_autoscaler_agent_azure_acknowledgements_total{result}`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::gpu::{Rejected, Status, UtilizationReport};

type FGauge = Gauge<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub node: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    pub cloud: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoticeLabels {
    pub cloud: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms .. 20 s: the apiserver round trips take milliseconds, a struggling apiserver seconds.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    /// Serialises rewrites of the per-GPU families (clear + set) against each other.
    gpu_write: Mutex<()>,
    dcgm_util: Family<Labels, FGauge>,
    dcgm_fb_used: Family<Labels, FGauge>,
    dcgm_fb_free: Family<Labels, FGauge>,
    gpu_util: Family<Labels, FGauge>,
    gpu_mem_used: Family<Labels, FGauge>,
    gpu_mem_total: Family<Labels, FGauge>,
    node_util: Family<NodeLabels, FGauge>,
    gpus: Family<NodeLabels, Gauge>,
    gpu_status: Family<StatusLabels, Gauge>,
    pub rejected: Family<FieldLabels, Counter>,
    pub samples: Family<ResultLabels, Counter>,
    pub notices: Family<NoticeLabels, Counter>,
    pub detection_to_cordon: Family<CloudLabels, Histogram>,
    pub poll_errors: Family<CloudLabels, Counter>,
    pub node_update_errors: Counter,
    pub azure_acks: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            gpu_write: Mutex::new(()),
            dcgm_util: Family::default(),
            dcgm_fb_used: Family::default(),
            dcgm_fb_free: Family::default(),
            gpu_util: Family::default(),
            gpu_mem_used: Family::default(),
            gpu_mem_total: Family::default(),
            node_util: Family::default(),
            gpus: Family::default(),
            gpu_status: Family::default(),
            rejected: Family::default(),
            samples: Family::default(),
            notices: Family::default(),
            detection_to_cordon: Family::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
            poll_errors: Family::default(),
            node_update_errors: Counter::default(),
            azure_acks: Family::default(),
        };
        registry.register(
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (in %), dcgm-exporter compatible",
            m.dcgm_util.clone(),
        );
        registry.register(
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB), dcgm-exporter compatible",
            m.dcgm_fb_used.clone(),
        );
        registry.register(
            "DCGM_FI_DEV_FB_FREE",
            "Framebuffer memory free (in MiB), dcgm-exporter compatible",
            m.dcgm_fb_free.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_gpu_utilization_ratio",
            "GPU utilization per device, 0..1",
            m.gpu_util.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_gpu_memory_used_bytes",
            "GPU memory used per device",
            m.gpu_mem_used.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_gpu_memory_total_bytes",
            "GPU memory installed per device",
            m.gpu_mem_total.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_node_utilization_ratio",
            "Node GPU utilization averaged over the window, 0..1 (what the scaler reads)",
            m.node_util.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_gpus",
            "GPUs seen in the last sample",
            m.gpus.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_gpu_status",
            "1 for the current GPU reading status (ok, no-gpu, error)",
            m.gpu_status.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_rejected_readings",
            "Garbage GPU readings dropped (e.g. 4294967295 utilization)",
            m.rejected.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_samples",
            "GPU samples taken, by status",
            m.samples.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_interruption_notices",
            "Distinct spot interruption notices and rebalance recommendations seen",
            m.notices.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_detection_to_cordon_seconds",
            "From the metadata answer carrying a notice to the accepted cordon patch",
            m.detection_to_cordon.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_poll_errors",
            "Failed metadata-service polls",
            m.poll_errors.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_node_update_errors",
            "Failed Node updates after a notice",
            m.node_update_errors.clone(),
        );
        registry.register(
            "gpu_autoscaler_agent_azure_acknowledgements",
            "Azure Scheduled Events StartRequests sent",
            m.azure_acks.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Publishes one sample's report. Stale GPUs (gone since the last sample) disappear.
    pub fn record_sample(&self, report: &UtilizationReport, rejected: Rejected) {
        let _guard = self.gpu_write.lock();
        for family in [
            &self.dcgm_util,
            &self.dcgm_fb_used,
            &self.dcgm_fb_free,
            &self.gpu_util,
            &self.gpu_mem_used,
            &self.gpu_mem_total,
        ] {
            family.clear();
        }
        let node = report.node.clone();
        const MIB: f64 = 1024.0 * 1024.0;
        for gpu in &report.gpus {
            let dcgm: Labels = vec![
                ("gpu".to_string(), gpu.index.to_string()),
                ("UUID".to_string(), gpu.uuid.clone()),
                ("modelName".to_string(), gpu.model.clone()),
                ("Hostname".to_string(), node.clone()),
            ];
            let ours: Labels = vec![
                ("node".to_string(), node.clone()),
                ("gpu".to_string(), gpu.index.to_string()),
                ("uuid".to_string(), gpu.uuid.clone()),
            ];
            if let Some(u) = gpu.utilization {
                self.dcgm_util.get_or_create(&dcgm).set(u * 100.0);
                self.gpu_util.get_or_create(&ours).set(u);
            }
            if let (Some(used), Some(total)) = (gpu.memory_used_bytes, gpu.memory_total_bytes) {
                self.dcgm_fb_used
                    .get_or_create(&dcgm)
                    .set((used as f64 / MIB).round());
                self.dcgm_fb_free
                    .get_or_create(&dcgm)
                    .set(((total - used) as f64 / MIB).round());
                self.gpu_mem_used.get_or_create(&ours).set(used as f64);
                self.gpu_mem_total.get_or_create(&ours).set(total as f64);
            }
        }
        let node_labels = NodeLabels { node: node.clone() };
        match report.average {
            Some(avg) => {
                self.node_util.get_or_create(&node_labels).set(avg);
            }
            None => {
                self.node_util.remove(&node_labels);
            }
        }
        self.gpus
            .get_or_create(&node_labels)
            .set(report.gpus.len() as i64);
        for status in [Status::Ok, Status::NoGpu, Status::Error] {
            self.gpu_status
                .get_or_create(&StatusLabels {
                    node: node.clone(),
                    status: status.as_str(),
                })
                .set(i64::from(status == report.status));
        }
        self.samples
            .get_or_create(&ResultLabels {
                result: report.status.as_str(),
            })
            .inc();
        if rejected.utilization > 0 {
            self.rejected
                .get_or_create(&FieldLabels {
                    field: "utilization",
                })
                .inc_by(u64::from(rejected.utilization));
        }
        if rejected.memory > 0 {
            self.rejected
                .get_or_create(&FieldLabels { field: "memory" })
                .inc_by(u64::from(rejected.memory));
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let _guard = self.gpu_write.lock();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}
