//! Label, annotation and taint keys (INTERFACES.md, "Kubernetes vocabulary").

/// The API group and key prefix of everything we own.
pub const GROUP: &str = "gpu-autoscaler.io";

/// Pod label set by users: what kind of work the pod does.
pub const LABEL_WORKLOAD_TYPE: &str = "gpu-autoscaler.io/workload-type";
/// Pod annotation: `low`, `medium` or `high`; set by users or the webhook.
pub const ANNOTATION_EVICTION_PRIORITY: &str = "gpu-autoscaler.io/eviction-priority";
/// Pod annotation: ordered, comma-separated capacity types the pod may run on.
pub const ANNOTATION_TIER_PREFERENCE: &str = "gpu-autoscaler.io/tier-preference";
/// Node label: `spot`, `on-demand` or `reserved`.
pub const LABEL_CAPACITY_TYPE: &str = "gpu-autoscaler.io/capacity-type";
/// Node label: the AutoscalingPolicy node pool the node belongs to.
pub const LABEL_NODE_POOL: &str = "gpu-autoscaler.io/node-pool";
/// Node annotation `"true"`: the cloud announced that this spot node will be reclaimed.
pub const ANNOTATION_SPOT_INTERRUPTION_WARNING: &str =
    "gpu-autoscaler.io/spot-interruption-warning";
/// Node annotation: RFC 3339 time at which the cloud reclaims the node.
pub const ANNOTATION_SPOT_TERMINATION_TIME: &str = "gpu-autoscaler.io/spot-termination-time";

/// Taint on spot nodes (`gpu-autoscaler.io/capacity-type=spot:NoSchedule`), so that only pods
/// whose tier preference allows spot land there.
pub const TAINT_SPOT_KEY: &str = LABEL_CAPACITY_TYPE;
pub const TAINT_SPOT_VALUE: &str = "spot";
pub const TAINT_EFFECT_NO_SCHEDULE: &str = "NoSchedule";
/// Taint the agent adds on an interruption notice (`gpu-autoscaler.io/spot-interruption:NoSchedule`).
pub const TAINT_SPOT_INTERRUPTION_KEY: &str = "gpu-autoscaler.io/spot-interruption";

/// Pod annotation `"true"`: never evict this pod for a scale-down (our opt-out).
pub const ANNOTATION_SCALE_DOWN_DISABLED: &str = "gpu-autoscaler.io/scale-down-disabled";
/// The Cluster Autoscaler's opt-out, honoured too so existing workloads keep their protection.
pub const ANNOTATION_CA_SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Label on objects (pods, namespaces) that opts them out of the webhook.
pub const LABEL_WEBHOOK_OPT_OUT: &str = "gpu-autoscaler.io/ignore";

/// Well-known Kubernetes node labels we read.
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The taint every node gets at registration until it is Ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Capacity-type labels of other provisioners and managed node groups, read as well as ours.
pub const LABEL_KARPENTER_CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
pub const LABEL_EKS_CAPACITY_TYPE: &str = "eks.amazonaws.com/capacityType";
pub const LABEL_GKE_SPOT: &str = "cloud.google.com/gke-spot";
pub const LABEL_GKE_PREEMPTIBLE: &str = "cloud.google.com/gke-preemptible";
pub const LABEL_AKS_SCALESET_PRIORITY: &str = "kubernetes.azure.com/scalesetpriority";
