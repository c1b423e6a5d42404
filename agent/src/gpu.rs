//! GPU readings: the [`GpuReader`] seam, its NVML implementation, a fake for tests, and the
//! validation and windowing that turn raw readings into what the agent serves.
//!
//! NVML (and DCGM on top of it) sometimes answers with sentinel garbage instead of an error:
//! `0xFFFFFFFF` for a utilization, used memory above the total, a zero total. Such a field is
//! dropped (reported as unknown and counted), never passed on as a number, because a scaler
//! that read 4294967295% as "busy" or a bogus 0 as "idle" would make the wrong decision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

/// One device as read from the driver, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawGpu {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// Percent of the last sample period in which a kernel ran; `None` when the read failed.
    pub utilization_gpu: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// PIDs of compute processes on the device.
    pub pids: Vec<u32>,
}

/// Why the reader has nothing to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No driver, no library or no device: a normal state on CPU nodes, not a fault.
    #[error("no GPU: {0}")]
    NoGpu(String),
    #[error("GPU read failed: {0}")]
    Failed(String),
}

/// Where GPU readings come from. Blocking: NVML calls are synchronous, so callers run it on a
/// blocking thread.
pub trait GpuReader: Send + Sync {
    fn read(&self) -> Result<Vec<RawGpu>, ReadError>;
}

/// The real NVML binding. The library is loaded lazily and retried on every read, so a node
/// whose driver finishes installing after the agent started is picked up without a restart,
/// and a node without one just keeps reporting "no GPU".
#[derive(Default)]
pub struct NvmlReader {
    nvml: Mutex<Option<nvml_wrapper::Nvml>>,
}

impl std::fmt::Debug for NvmlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlReader")
    }
}

impl NvmlReader {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Init failures that mean "this machine has no usable NVIDIA GPU" rather than a fault.
fn init_error(e: nvml_wrapper::error::NvmlError) -> ReadError {
    use nvml_wrapper::error::NvmlError as E;
    match e {
        E::LibloadingError(_)
        | E::LibraryNotFound
        | E::DriverNotLoaded
        | E::NoPermission
        | E::NotFound
        | E::Uninitialized => ReadError::NoGpu(e.to_string()),
        other => ReadError::Failed(other.to_string()),
    }
}

impl GpuReader for NvmlReader {
    fn read(&self) -> Result<Vec<RawGpu>, ReadError> {
        let mut guard = self
            .nvml
            .lock()
            .map_err(|_| ReadError::Failed("NVML handle lock poisoned".to_string()))?;
        if guard.is_none() {
            *guard = Some(nvml_wrapper::Nvml::init().map_err(init_error)?);
        }
        let Some(nvml) = guard.as_ref() else {
            return Err(ReadError::Failed("NVML handle missing".to_string()));
        };
        let count = nvml
            .device_count()
            .map_err(|e| ReadError::Failed(format!("device count: {e}")))?;
        if count == 0 {
            return Err(ReadError::NoGpu("NVML reports 0 devices".to_string()));
        }
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                // A device that fell off the bus is reported without readings, not skipped:
                // the node still has it, and unknown is the honest answer.
                Err(e) => {
                    tracing::warn!(index, error = %e, "NVML device handle");
                    gpus.push(RawGpu {
                        index,
                        ..RawGpu::default()
                    });
                    continue;
                }
            };
            let memory = device.memory_info().ok();
            gpus.push(RawGpu {
                index,
                uuid: device.uuid().unwrap_or_default(),
                model: device.name().unwrap_or_default(),
                utilization_gpu: device.utilization_rates().ok().map(|u| u.gpu),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                pids: device
                    .running_compute_processes()
                    .map(|ps| ps.iter().map(|p| p.pid).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(gpus)
    }
}

/// A scripted reader for tests and CI: returns whatever was last set.
#[derive(Debug)]
pub struct FakeGpuReader {
    next: Mutex<Result<Vec<RawGpu>, ReadError>>,
}

impl FakeGpuReader {
    pub fn new(answer: Result<Vec<RawGpu>, ReadError>) -> Self {
        FakeGpuReader {
            next: Mutex::new(answer),
        }
    }

    pub fn set(&self, answer: Result<Vec<RawGpu>, ReadError>) {
        if let Ok(mut next) = self.next.lock() {
            *next = answer;
        }
    }
}

impl GpuReader for FakeGpuReader {
    fn read(&self) -> Result<Vec<RawGpu>, ReadError> {
        self.next
            .lock()
            .map_err(|_| ReadError::Failed("fake lock poisoned".to_string()))?
            .clone()
    }
}

/// A pod that was given a GPU (from the kubelet pod-resources API).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub container: String,
}

/// One GPU as served: validated readings, unknown fields as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuState {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// 0..1.
    pub utilization: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub processes: usize,
    /// Pods holding this GPU; `null` when the pod-resources socket is not available.
    pub pods: Option<Vec<PodRef>>,
}

impl GpuState {
    pub fn memory_free_bytes(&self) -> Option<u64> {
        Some(self.memory_total_bytes? - self.memory_used_bytes?)
    }
}

/// Which readings were rejected as garbage, by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rejected {
    pub utilization: u32,
    pub memory: u32,
}

/// Validates one raw device reading. Pure.
pub fn validate(raw: &RawGpu, pods: Option<Vec<PodRef>>) -> (GpuState, Rejected) {
    let mut rejected = Rejected::default();
    let utilization = match raw.utilization_gpu {
        Some(u) if u <= 100 => Some(f64::from(u) / 100.0),
        Some(_) => {
            rejected.utilization += 1;
            None
        }
        None => None,
    };
    let (used, total) = match (raw.memory_used_bytes, raw.memory_total_bytes) {
        (Some(used), Some(total))
            if total > 0 && total != u64::MAX && total != u64::from(u32::MAX) && used <= total =>
        {
            (Some(used), Some(total))
        }
        (None, None) => (None, None),
        _ => {
            rejected.memory += 1;
            (None, None)
        }
    };
    let state = GpuState {
        index: raw.index,
        uuid: raw.uuid.clone(),
        model: raw.model.clone(),
        utilization,
        memory_used_bytes: used,
        memory_total_bytes: total,
        processes: raw.pids.len(),
        pods,
    };
    (state, rejected)
}

/// Health of the last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    NoGpu,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NoGpu => "no-gpu",
            Status::Error => "error",
        }
    }
}

/// The JSON document of `GET /v1/utilization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtilizationReport {
    pub node: String,
    pub status: Status,
    pub gpus: Vec<GpuState>,
    /// Mean of the per-sample node means over the window, 0..1; `null` when unknown.
    pub average: Option<f64>,
    /// Node mean of the last sample, 0..1.
    pub current: Option<f64>,
    pub window_seconds: u64,
    /// Samples inside the window that had a node mean.
    pub window_samples: usize,
    pub sampled_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Node mean of the GPUs that have a valid utilization.
pub fn node_mean(gpus: &[GpuState]) -> Option<f64> {
    let values: Vec<f64> = gpus.iter().filter_map(|g| g.utilization).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Keeps the node means of the last `window` and builds reports. Pure: `now` is passed in.
#[derive(Debug, Clone)]
pub struct Sampler {
    node: String,
    window: ChronoDuration,
    history: VecDeque<(DateTime<Utc>, f64)>,
    last: Option<UtilizationReport>,
}

impl Sampler {
    pub fn new(node: impl Into<String>, window: std::time::Duration) -> Self {
        Sampler {
            node: node.into(),
            window: ChronoDuration::from_std(window).unwrap_or(ChronoDuration::minutes(5)),
            history: VecDeque::new(),
            last: None,
        }
    }

    /// Folds one read into the window and returns the new report plus rejected-field counts.
    /// `pods` maps a GPU UUID to the pods holding it (`None`: pod-resources unavailable).
    pub fn record(
        &mut self,
        now: DateTime<Utc>,
        read: Result<Vec<RawGpu>, ReadError>,
        pods: Option<&BTreeMap<String, Vec<PodRef>>>,
    ) -> (UtilizationReport, Rejected) {
        let cutoff = now - self.window;
        while self.history.front().is_some_and(|(t, _)| *t < cutoff) {
            self.history.pop_front();
        }
        let mut rejected = Rejected::default();
        let (status, gpus, error) = match read {
            Ok(raw) => {
                let gpus: Vec<GpuState> = raw
                    .iter()
                    .map(|g| {
                        let held = pods.map(|m| m.get(&g.uuid).cloned().unwrap_or_default());
                        let (state, r) = validate(g, held);
                        rejected.utilization += r.utilization;
                        rejected.memory += r.memory;
                        state
                    })
                    .collect();
                (Status::Ok, gpus, None)
            }
            Err(ReadError::NoGpu(reason)) => (Status::NoGpu, Vec::new(), Some(reason)),
            Err(ReadError::Failed(reason)) => (Status::Error, Vec::new(), Some(reason)),
        };
        let current = node_mean(&gpus);
        if let Some(mean) = current {
            self.history.push_back((now, mean));
        }
        // Without a GPU or after a failed read, an older window average would describe a
        // state that no longer holds, so it is withheld.
        let average = (status == Status::Ok && !self.history.is_empty())
            .then(|| self.history.iter().map(|(_, v)| v).sum::<f64>() / self.history.len() as f64);
        let report = UtilizationReport {
            node: self.node.clone(),
            status,
            gpus,
            average,
            current,
            window_seconds: self.window.num_seconds().max(0) as u64,
            window_samples: self.history.len(),
            sampled_at: Some(now),
            error,
        };
        self.last = Some(report.clone());
        (report, rejected)
    }

    /// The report before any sample was taken.
    pub fn empty_report(&self) -> UtilizationReport {
        UtilizationReport {
            node: self.node.clone(),
            status: Status::Error,
            gpus: Vec::new(),
            average: None,
            current: None,
            window_seconds: self.window.num_seconds().max(0) as u64,
            window_samples: 0,
            sampled_at: None,
            error: Some("not sampled yet".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, util: Option<u32>, used: Option<u64>, total: Option<u64>) -> RawGpu {
        RawGpu {
            index,
            uuid: format!("GPU-{index}"),
            model: "NVIDIA A100-SXM4-80GB".to_string(),
            utilization_gpu: util,
            memory_used_bytes: used,
            memory_total_bytes: total,
            pids: vec![100 + index],
        }
    }

    #[test]
    fn sentinel_utilization_is_rejected_not_served() {
        let (state, rejected) = validate(&gpu(0, Some(u32::MAX), Some(1), Some(2)), None);
        assert_eq!(state.utilization, None);
        assert_eq!(rejected.utilization, 1);
        let (state, rejected) = validate(&gpu(0, Some(101), Some(1), Some(2)), None);
        assert_eq!(state.utilization, None);
        assert_eq!(rejected.utilization, 1);
        let (state, rejected) = validate(&gpu(0, Some(100), Some(1), Some(2)), None);
        assert_eq!(state.utilization, Some(1.0));
        assert_eq!(rejected, Rejected::default());
    }

    #[test]
    fn impossible_memory_is_rejected() {
        for (used, total) in [
            (Some(3), Some(2)),
            (Some(0), Some(0)),
            (Some(1), Some(u64::MAX)),
            (Some(1), Some(u64::from(u32::MAX))),
            (Some(1), None),
        ] {
            let (state, rejected) = validate(&gpu(0, Some(5), used, total), None);
            assert_eq!(state.memory_used_bytes, None, "{used:?}/{total:?}");
            assert_eq!(state.memory_free_bytes(), None);
            assert_eq!(rejected.memory, 1);
        }
        let (state, _) = validate(&gpu(0, Some(5), Some(30), Some(80)), None);
        assert_eq!(state.memory_free_bytes(), Some(50));
    }

    fn close(v: Option<f64>, want: f64) -> bool {
        v.is_some_and(|v| (v - want).abs() < 1e-9)
    }

    #[test]
    fn window_average_and_no_gpu() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let mut s = Sampler::new("n1", std::time::Duration::from_secs(60));
        let (r, _) = s.record(
            t0,
            Ok(vec![
                gpu(0, Some(20), None, None),
                gpu(1, Some(40), None, None),
            ]),
            None,
        );
        assert!(close(r.current, 0.3) && close(r.average, 0.3));
        // A garbage GPU does not drag the mean to 0: it is left out.
        let (r, rej) = s.record(
            t0 + ChronoDuration::seconds(30),
            Ok(vec![
                gpu(0, Some(90), None, None),
                gpu(1, Some(u32::MAX), None, None),
            ]),
            None,
        );
        assert_eq!(rej.utilization, 1);
        assert!(close(r.current, 0.9) && close(r.average, 0.6));
        // The first sample falls out of the 60 s window.
        let (r, _) = s.record(
            t0 + ChronoDuration::seconds(75),
            Ok(vec![gpu(0, Some(10), None, None)]),
            None,
        );
        assert_eq!(r.window_samples, 2);
        assert!(close(r.average, 0.5));
        let (r, _) = s.record(
            t0 + ChronoDuration::seconds(80),
            Err(ReadError::NoGpu("NVML library not found".to_string())),
            None,
        );
        assert_eq!(r.status, Status::NoGpu);
        assert_eq!(r.average, None);
        assert!(r.gpus.is_empty());
    }

    #[test]
    fn pods_attach_by_uuid() {
        let mut s = Sampler::new("n1", std::time::Duration::from_secs(60));
        let pods = BTreeMap::from([(
            "GPU-1".to_string(),
            vec![PodRef {
                namespace: "ml".to_string(),
                name: "train-0".to_string(),
                container: "main".to_string(),
            }],
        )]);
        let (r, _) = s.record(
            Utc::now(),
            Ok(vec![
                gpu(0, Some(1), None, None),
                gpu(1, Some(2), None, None),
            ]),
            Some(&pods),
        );
        assert_eq!(r.gpus[0].pods, Some(vec![]));
        assert_eq!(r.gpus[1].pods.as_ref().map(Vec::len), Some(1));
    }

    /// The real binding on a machine without an NVIDIA driver: a clean "no GPU", no panic.
    /// On a GPU machine it must read at least one device instead.
    #[test]
    fn real_nvml_reports_no_gpu_cleanly_without_a_driver() {
        let reader = NvmlReader::new();
        for _ in 0..3 {
            match reader.read() {
                Err(ReadError::NoGpu(reason)) => assert!(!reason.is_empty()),
                Ok(gpus) => assert!(!gpus.is_empty()),
                Err(ReadError::Failed(reason)) => panic!("NVML failed instead of no-GPU: {reason}"),
            }
        }
    }
}
