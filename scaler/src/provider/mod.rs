//! Cloud providers: how the controller changes the size of a node group and removes nodes.
//!
//! [`CloudProvider`] is the one seam between the controller and a cloud. Every call is
//! absolute or targeted, never relative: [`CloudProvider::set_target_size`] takes the desired
//! size of the group (the controller reads the current size first), so a call repeated after a
//! crash or a lost reply cannot double a scale-up; [`CloudProvider::delete_instances`] names
//! the instances to remove. Errors carry a [`ProviderErrorKind`] so the controller can tell
//! "this pool has no capacity" (fall back to another pool) from "we are throttled" (retry).
//!
//! Implementations: [`kube::KubeProvider`] simulates a cloud by creating Node objects; the
//! AWS / GCP / Azure providers implement the same trait in their own modules.

pub mod kube;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_catalog::Catalog;

use crate::engine::{InFlightInstance, InstanceTemplate};

/// Why a provider call failed, in the classes the controller reacts to differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// Rate-limited by the cloud API: retry later, the pool itself is fine.
    Throttled,
    /// The cloud has no capacity of this kind (spot pools especially): fall back elsewhere.
    InsufficientCapacity,
    /// An account or group limit (vCPU quota, group max size) stops the request.
    Quota,
    /// Credentials missing, expired or lacking a permission.
    Auth,
    /// The group or instance does not exist.
    NotFound,
    /// Anything else (network, 5xx, malformed answers).
    Other,
}

impl ProviderErrorKind {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::InsufficientCapacity => "insufficient_capacity",
            Self::Quota => "quota",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::Other => "other",
        }
    }
}

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{operation} {kind:?}: {message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    /// The provider operation (`set_target_size`, `delete_instances`, ...), for logs and metrics.
    pub operation: &'static str,
    pub message: String,
    /// For capacity errors: the instance type / zone that had none, when the cloud says.
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    /// A retry hint from the cloud (throttling), if any.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(
        kind: ProviderErrorKind,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            operation,
            message: message.into(),
            instance_type: None,
            zone: None,
            retry_after: None,
        }
    }

    pub fn other(operation: &'static str, message: impl fmt::Display) -> Self {
        Self::new(ProviderErrorKind::Other, operation, message.to_string())
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// The cloud-side group behind a policy pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    /// The policy pool name.
    pub pool: String,
    /// The cloud's id of the group (ASG name, MIG URL, VMSS id, ConfigMap key...).
    pub id: String,
    /// Size limits the cloud enforces on the group (may be tighter than the pool's).
    pub min_size: u32,
    pub max_size: u32,
}

/// One cloud instance, as the provider names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub pool: String,
    /// The cloud's instance id (`i-0abc...`, a VM name, ...).
    pub id: String,
    /// The Node's `spec.providerID` for this instance.
    pub provider_id: String,
}

/// Which instance type / zone a scale-up should launch, when the cloud lets us choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchHint {
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub count: u32,
}

/// What a `set_target_size` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetChange {
    pub previous: u32,
    pub target: u32,
}

impl TargetChange {
    pub fn added(&self) -> u32 {
        self.target.saturating_sub(self.previous)
    }
}

/// A cloud (or a simulation of one) that the controller scales.
///
/// Methods return boxed futures so the controller can hold an `Arc<dyn CloudProvider>`.
pub trait CloudProvider: Send + Sync {
    /// `aws`, `gcp`, `azure`, `kube`: metric label and log field.
    fn name(&self) -> &'static str;

    /// The group behind each pool; pools without a group are absent from the answer.
    fn node_groups<'a>(
        &'a self,
        pools: &'a [NodePool],
    ) -> BoxFuture<'a, ProviderResult<Vec<NodeGroup>>>;

    /// The group's desired size: registered instances plus those still launching.
    fn target_size<'a>(&'a self, pool: &'a NodePool) -> BoxFuture<'a, ProviderResult<u32>>;

    /// Sets the group's desired size to `target` (absolute). Implementations read the current
    /// size and do nothing when it already equals `target`, so the call is idempotent.
    /// `hints` say which instance types / zones the added instances should be, when the cloud
    /// lets the caller choose; clouds that can't ignore them.
    fn set_target_size<'a>(
        &'a self,
        pool: &'a NodePool,
        target: u32,
        hints: &'a [LaunchHint],
    ) -> BoxFuture<'a, ProviderResult<TargetChange>>;

    /// Terminates these instances and lowers the group's desired size by as many, so the
    /// cloud doesn't replace them. Instances already gone are not an error.
    fn delete_instances<'a>(
        &'a self,
        pool: &'a NodePool,
        instances: &'a [InstanceRef],
    ) -> BoxFuture<'a, ProviderResult<()>>;

    /// Instances requested but not yet registered as Nodes (empty if the cloud can't tell).
    fn in_flight<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<InFlightInstance>>>;

    /// Scale-ups the cloud accepted but then could not fulfil (no capacity, quota), each
    /// reported once, as errors of kind `InsufficientCapacity` / `Quota` (with instance type
    /// and zone when the cloud says). The controller turns them into provider events the way
    /// it does a refused `set_target_size`, so the engine backs the pool off and falls back
    /// without waiting for `maxNodeProvisionTimeSeconds`. Providers whose scale-ups fail
    /// synchronously keep the default (none).
    fn launch_failures<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<ProviderError>>> {
        let _ = pool;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Maps a Node's `spec.providerID` to the instance (None: not one of this provider's).
    fn instance_for_provider_id(&self, pool: &str, provider_id: &str) -> Option<InstanceRef>;

    /// Node templates of a pool's instance types, in the pool's order (scale-from-zero).
    fn templates(&self, pool: &NodePool) -> Vec<InstanceTemplate>;

    /// USD per hour of one instance of this type and capacity type, when known.
    fn price(&self, instance_type: &str, capacity_type: CapacityType) -> Option<f64>;
}

/// The catalogue entry of an instance type as an engine template. `None` when the catalogue
/// doesn't know the type or it has no whole number of GPUs.
pub fn template_from_catalog(
    catalog: &Catalog,
    instance_type: &str,
    capacity_type: CapacityType,
    zones: &[String],
) -> Option<InstanceTemplate> {
    let it = catalog.get(instance_type).ok()?;
    let gpus = it.whole_gpus()?;
    let gpu_resource = match it.gpu_manufacturer.as_deref() {
        Some("amd") => "amd.com/gpu",
        Some("nvidia") | None => "nvidia.com/gpu",
        // Habana and others expose their own resources, which we don't count as GPUs.
        Some(_) => return None,
    };
    Some(InstanceTemplate {
        instance_type: instance_type.to_string(),
        gpus,
        gpu_resource: gpu_resource.to_string(),
        cpu_millis: u64::from(it.vcpu?) * 1000,
        memory_bytes: it.memory_mib? * 1024 * 1024,
        price_per_hour: it.price(capacity_type),
        zones: zones.to_vec(),
    })
}

/// Every template the catalogue has for a pool's instance types (unknown types are skipped;
/// the engine reports pools whose types have no template).
pub fn catalog_templates(catalog: &Catalog, pool: &NodePool) -> Vec<InstanceTemplate> {
    pool.instance_types
        .iter()
        .filter_map(|t| {
            template_from_catalog(catalog, t, pool.capacity_type, &pool.availability_zones)
        })
        .collect()
}

/// A catalogue price, where an absent reserved price is reported as absent (never guessed).
pub fn catalog_price(
    catalog: &Catalog,
    instance_type: &str,
    capacity_type: CapacityType,
) -> Option<f64> {
    catalog.get(instance_type).ok()?.price(capacity_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_come_from_the_catalogue() {
        let catalog = Catalog::aws("us-east-1").expect("bundled catalogue");
        let t = template_from_catalog(&catalog, "p3.16xlarge", CapacityType::OnDemand, &[])
            .expect("p3.16xlarge is a GPU type");
        assert_eq!(t.gpus, 8);
        assert_eq!(t.gpu_resource, "nvidia.com/gpu");
        assert_eq!(t.cpu_millis, 64_000);
        assert!(t.price_per_hour.is_some_and(|p| p > 0.0));
        assert!(template_from_catalog(&catalog, "no-such.type", CapacityType::Spot, &[]).is_none());
    }

    #[test]
    fn error_kinds_have_stable_labels() {
        let e = ProviderError::new(
            ProviderErrorKind::InsufficientCapacity,
            "set_target_size",
            "none left",
        );
        assert_eq!(e.kind.as_str(), "insufficient_capacity");
        assert!(e.to_string().contains("none left"));
    }
}
