//! Shared vocabulary of gpu-autoscaler.
//!
//! Everything that more than one component must agree on lives here, so the webhook, the
//! extender, the scaler and `simulate` can never drift apart:
//! - [`keys`]: label, annotation and taint keys of the fixed outer interface;
//! - [`capacity`]: capacity types and their detection across cloud conventions;
//! - [`priority`]: eviction priority, tier preference and workload type, with strict parsing;
//! - [`gpu`]: which resources are GPUs, and a pod's effective GPU request;
//! - [`quantity`]: Kubernetes resource quantities as numbers;
//! - [`policy`]: the `AutoscalingPolicy` CRD and its cross-field validation.

pub mod capacity;
pub mod gpu;
pub mod keys;
pub mod policy;
pub mod priority;
pub mod quantity;

pub use capacity::CapacityType;
pub use gpu::{GpuResourceNames, PodRequests};
pub use policy::{AutoscalingPolicy, AutoscalingPolicySpec, AutoscalingPolicyStatus};
pub use priority::{EvictionPriority, TierPreference, WorkloadType};
