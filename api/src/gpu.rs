//! Which resources are GPUs, and how many a pod really needs.
//!
//! A pod's footprint on a node is its *effective request*, computed the way the scheduler and
//! kubelet do (KEP-753 sidecar rules included): the larger of
//! - the sum of the app containers plus every restartable init container (sidecar), and
//! - the peak during initialisation, where each ordinary init container runs next to the
//!   sidecars started before it.
//!
//! Pod overhead is added on top. A resource given only as a limit counts as requested, since
//! the apiserver defaults requests to limits (and extended resources must be equal anyway).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::quantity;

/// The resource names that count as GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuResourceNames {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Default for GpuResourceNames {
    /// `nvidia.com/gpu`, every `nvidia.com/mig-*` profile and `amd.com/gpu`.
    fn default() -> Self {
        Self {
            exact: vec!["nvidia.com/gpu".into(), "amd.com/gpu".into()],
            prefixes: vec!["nvidia.com/mig-".into()],
        }
    }
}

impl GpuResourceNames {
    /// Adds configured names; a trailing `*` makes a prefix (`example.com/vgpu-*`).
    pub fn with_extra<I, S>(mut self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for name in extra {
            let name = name.as_ref().trim();
            if name.is_empty() {
                continue;
            }
            match name.strip_suffix('*') {
                Some(prefix) => self.prefixes.push(prefix.to_string()),
                None => self.exact.push(name.to_string()),
            }
        }
        self
    }

    pub fn is_gpu(&self, resource: &str) -> bool {
        self.exact.iter().any(|e| e == resource)
            || self
                .prefixes
                .iter()
                .any(|p| resource.starts_with(p.as_str()))
    }
}

/// A pod's effective requests, by resource name, in base units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRequests(pub BTreeMap<String, f64>);

impl PodRequests {
    /// Computes the effective requests of a pod spec. Unparseable quantities are skipped
    /// (the apiserver never stores them; traces and fixtures may carry them).
    pub fn of(spec: &PodSpec) -> Self {
        let mut app = BTreeMap::new();
        for c in &spec.containers {
            add(&mut app, &container_requests(c));
        }
        let mut sidecars = BTreeMap::new();
        let mut init_peak = BTreeMap::new();
        for c in spec.init_containers.iter().flatten() {
            let req = container_requests(c);
            let during = if c.restart_policy.as_deref() == Some("Always") {
                add(&mut app, &req);
                add(&mut sidecars, &req);
                sidecars.clone()
            } else {
                let mut during = req;
                add(&mut during, &sidecars);
                during
            };
            max_into(&mut init_peak, &during);
        }
        max_into(&mut app, &init_peak);
        if let Some(overhead) = &spec.overhead {
            for (k, q) in overhead {
                if let Ok(v) = quantity::parse(&q.0) {
                    *app.entry(k.clone()).or_insert(0.0) += v;
                }
            }
        }
        Self(app)
    }

    pub fn get(&self, resource: &str) -> f64 {
        self.0.get(resource).copied().unwrap_or(0.0)
    }

    /// CPU in cores.
    pub fn cpu(&self) -> f64 {
        self.get("cpu")
    }

    /// Memory in bytes.
    pub fn memory(&self) -> f64 {
        self.get("memory")
    }

    /// GPUs by resource name (only the GPU resources, only non-zero ones).
    pub fn gpus_by_resource(&self, names: &GpuResourceNames) -> BTreeMap<String, u32> {
        self.0
            .iter()
            .filter(|(k, v)| names.is_gpu(k) && **v > 0.0)
            .map(|(k, v)| (k.clone(), v.ceil().min(u32::MAX as f64) as u32))
            .collect()
    }

    /// Total GPU devices (whole GPUs and MIG slices alike) the pod needs on one node.
    pub fn gpu_count(&self, names: &GpuResourceNames) -> u32 {
        self.gpus_by_resource(names)
            .values()
            .fold(0u32, |a, b| a.saturating_add(*b))
    }
}

/// True when the pod's effective requests include any GPU resource.
pub fn is_gpu_pod(spec: &PodSpec, names: &GpuResourceNames) -> bool {
    gpu_count(spec, names) > 0
}

/// The pod's effective GPU count.
pub fn gpu_count(spec: &PodSpec, names: &GpuResourceNames) -> u32 {
    PodRequests::of(spec).gpu_count(names)
}

fn container_requests(c: &Container) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(res) = &c.resources else { return out };
    if let Some(limits) = &res.limits {
        for (k, q) in limits {
            if let Ok(v) = quantity::parse(&q.0) {
                out.insert(k.clone(), v);
            }
        }
    }
    // Explicit requests override the limit-derived default.
    if let Some(requests) = &res.requests {
        for (k, q) in requests {
            if let Ok(v) = quantity::parse(&q.0) {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}

fn add(into: &mut BTreeMap<String, f64>, other: &BTreeMap<String, f64>) {
    for (k, v) in other {
        *into.entry(k.clone()).or_insert(0.0) += v;
    }
}

fn max_into(into: &mut BTreeMap<String, f64>, other: &BTreeMap<String, f64>) {
    for (k, v) in other {
        let e = into.entry(k.clone()).or_insert(0.0);
        if *v > *e {
            *e = *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn q(kv: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: if requests.is_empty() {
                    None
                } else {
                    q(requests)
                },
                limits: if limits.is_empty() { None } else { q(limits) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(limits: &[(&str, &str)]) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(&[], limits)
        }
    }

    fn spec(init: Vec<Container>, app: Vec<Container>) -> PodSpec {
        PodSpec {
            init_containers: if init.is_empty() { None } else { Some(init) },
            containers: app,
            ..Default::default()
        }
    }

    #[test]
    fn sums_app_containers_from_limits_only() {
        let names = GpuResourceNames::default();
        let s = spec(
            vec![],
            vec![
                container(&[], &[("nvidia.com/gpu", "2")]),
                container(&[], &[("nvidia.com/gpu", "1")]),
            ],
        );
        assert_eq!(gpu_count(&s, &names), 3);
        assert!(is_gpu_pod(&s, &names));
    }

    #[test]
    fn init_container_larger_than_apps_wins() {
        let names = GpuResourceNames::default();
        let s = spec(
            vec![container(&[], &[("nvidia.com/gpu", "4")])],
            vec![container(&[], &[("nvidia.com/gpu", "1")])],
        );
        assert_eq!(gpu_count(&s, &names), 4);
    }

    #[test]
    fn sidecars_add_to_apps_and_to_later_init_containers() {
        let names = GpuResourceNames::default();
        // Sidecar 1 GPU, then an init container of 2 that runs beside it (peak 3),
        // then apps of 1 that run beside the sidecar (steady 2). Effective: 3.
        let s = spec(
            vec![
                sidecar(&[("nvidia.com/gpu", "1")]),
                container(&[], &[("nvidia.com/gpu", "2")]),
            ],
            vec![container(&[], &[("nvidia.com/gpu", "1")])],
        );
        assert_eq!(gpu_count(&s, &names), 3);
        // An init container *before* the sidecar doesn't overlap with it.
        let s = spec(
            vec![
                container(&[], &[("nvidia.com/gpu", "2")]),
                sidecar(&[("nvidia.com/gpu", "1")]),
            ],
            vec![container(&[], &[("nvidia.com/gpu", "2")])],
        );
        assert_eq!(gpu_count(&s, &names), 3);
    }

    #[test]
    fn mig_and_amd_count_and_extra_names_are_configurable() {
        let s = spec(
            vec![],
            vec![container(
                &[("nvidia.com/mig-1g.10gb", "2")],
                &[("nvidia.com/mig-1g.10gb", "2")],
            )],
        );
        assert_eq!(gpu_count(&s, &GpuResourceNames::default()), 2);
        let s = spec(vec![], vec![container(&[], &[("amd.com/gpu", "1")])]);
        assert_eq!(gpu_count(&s, &GpuResourceNames::default()), 1);
        let s = spec(
            vec![],
            vec![container(&[], &[("example.com/vgpu-small", "1")])],
        );
        assert_eq!(gpu_count(&s, &GpuResourceNames::default()), 0);
        let names = GpuResourceNames::default().with_extra(["example.com/vgpu-*"]);
        assert_eq!(gpu_count(&s, &names), 1);
    }

    #[test]
    fn no_resources_is_not_a_gpu_pod() {
        let s = spec(
            vec![],
            vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
        );
        assert!(!is_gpu_pod(&s, &GpuResourceNames::default()));
        let s = spec(vec![], vec![container(&[("cpu", "2")], &[])]);
        assert!(!is_gpu_pod(&s, &GpuResourceNames::default()));
    }

    #[test]
    fn requests_override_limits_and_overhead_is_added() {
        let mut s = spec(
            vec![],
            vec![container(
                &[("cpu", "500m")],
                &[("cpu", "2"), ("memory", "1Gi")],
            )],
        );
        s.overhead = q(&[("cpu", "250m")]);
        let r = PodRequests::of(&s);
        assert!((r.cpu() - 0.75).abs() < 1e-9);
        assert_eq!(r.memory(), 1024.0 * 1024.0 * 1024.0);
    }

    #[test]
    fn zero_gpu_request_is_not_a_gpu_pod() {
        let s = spec(vec![], vec![container(&[], &[("nvidia.com/gpu", "0")])]);
        assert!(!is_gpu_pod(&s, &GpuResourceNames::default()));
    }
}
