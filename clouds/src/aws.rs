//! AWS: pools are Auto Scaling Groups.
//!
//! Calls: `DescribeAutoScalingGroups` (every mapped or discovered group in one request per 100
//! groups, cached for [`AwsConfig::cache_ttl`] so one reconcile reads each group once),
//! `SetDesiredCapacity` (`HonorCooldown=false`, after a fresh read of that group: the target is
//! absolute and a repeat is a no-op), `TerminateInstanceInAutoScalingGroup`
//! (`ShouldDecrementDesiredCapacity=true`, only for instances the group still has) and
//! `DescribeScalingActivities` (only for groups short of their desired capacity, to surface
//! `InsufficientInstanceCapacity` and quota failures as [`CloudProvider::launch_failures`]).
//!
//! Spot and on-demand prices come from the bundled catalogue rather than
//! `DescribeSpotPriceHistory`: that call lives in `aws-sdk-ec2`, which alone adds about seven
//! minutes to a cold build, for prices the engine only uses to rank pools.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::config::Region;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_autoscaling::types::{
    AutoScalingGroup, Filter, LifecycleState, ScalingActivityStatusCode,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::keys::LABEL_NODE_POOL;
use gpu_autoscaler_api::policy::{AwsSettings, NodePool};
use gpu_autoscaler_catalog::Catalog;
use gpu_autoscaler_scaler::engine::{InFlightInstance, InstanceTemplate};
use gpu_autoscaler_scaler::provider::{
    CloudProvider, InstanceRef, LaunchHint, NodeGroup, ProviderError, ProviderErrorKind,
    ProviderResult, TargetChange, catalog_price, catalog_templates,
};

use crate::common::{
    CallError, CallPolicy, Caller, CloudMetrics, auth_message, kind_for_status, parse_retry_after,
};

const PROVIDER_ID_PREFIX: &str = "aws:///";
/// DescribeAutoScalingGroups returns at most 100 groups per page.
const PAGE: usize = 100;
const AUTH_HINT: &str = "check the service account's IRSA role (eks.amazonaws.com/role-arn), the instance profile \
    or AWS_* variables, and that the role allows autoscaling:DescribeAutoScalingGroups, SetDesiredCapacity, \
    TerminateInstanceInAutoScalingGroup and DescribeScalingActivities";

/// Provider settings: the policy's `aws` block one-to-one, plus connection options.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// `aws.region`; else the SDK's chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// `aws.autoScalingGroups`: pool name -> ASG name.
    pub auto_scaling_groups: BTreeMap<String, String>,
    /// `aws.autoDiscoveryTags`: groups carrying all these tags are ours; the pool is the
    /// group's `gpu-autoscaler.io/node-pool` tag, else the group's name.
    pub auto_discovery_tags: BTreeMap<String, String>,
    /// Endpoint override (tests against moto, VPC endpoints).
    pub endpoint_url: Option<String>,
    pub call_policy: CallPolicy,
    /// How long one read of the groups serves `target_size` / `in_flight` / `launch_failures`.
    pub cache_ttl: Duration,
}

impl AwsConfig {
    pub fn from_settings(settings: &AwsSettings) -> Self {
        Self {
            region: settings.region.clone(),
            auto_scaling_groups: settings.auto_scaling_groups.clone(),
            auto_discovery_tags: settings.auto_discovery_tags.clone(),
            endpoint_url: None,
            call_policy: CallPolicy::default(),
            cache_ttl: Duration::from_secs(2),
        }
    }
}

/// What we keep of one group.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    name: String,
    desired: u32,
    min: u32,
    max: u32,
    instances: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    id: String,
    zone: Option<String>,
    instance_type: Option<String>,
    state: String,
}

impl Member {
    fn launching(&self) -> bool {
        self.state.starts_with("Pending") || self.state.starts_with("Warmed:Pending")
    }

    fn leaving(&self) -> bool {
        self.state.starts_with("Terminat")
            || self.state.starts_with("Detach")
            || self.state.starts_with("EnteringStandby")
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    /// pool -> group, for every pool we found a group for.
    groups: BTreeMap<String, Group>,
}

/// The AWS Auto Scaling provider.
pub struct AwsProvider {
    client: Client,
    config: AwsConfig,
    caller: Caller,
    catalog: Option<Catalog>,
    snapshot: Mutex<Option<(std::time::Instant, Arc<Snapshot>)>>,
    /// Scaling activities already reported by `launch_failures`.
    reported: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `aws:///<zone>/<instance-id>` -> (zone, instance id).
pub fn parse_provider_id(provider_id: &str) -> Option<(&str, &str)> {
    let rest = provider_id.strip_prefix(PROVIDER_ID_PREFIX)?;
    let (zone, id) = rest.split_once('/')?;
    (id.starts_with("i-") && !id.contains('/')).then_some((zone, id))
}

pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("{PROVIDER_ID_PREFIX}{zone}/{instance_id}")
}

fn classify<E>(e: SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = DisplayErrorContext(&e).to_string();
    let lower = text.to_ascii_lowercase();
    let no_credentials = lower.contains("credential")
        && (lower.contains("no credentials")
            || lower.contains("failed to load")
            || lower.contains("provider"));
    match &e {
        SdkError::ServiceError(se) => {
            let raw = se.raw();
            let status = raw.status().as_u16();
            let retry_after = raw
                .headers()
                .get("retry-after")
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
            let code = se.err().code().unwrap_or_default().to_string();
            let message = se.err().message().unwrap_or_default().to_string();
            let detail = if code.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("{code}: {message}")
            };
            let (kind, transient) = match code.as_str() {
                "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException" => (ProviderErrorKind::Throttled, false),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "AccessDeniedException"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "UnrecognizedClientException"
                | "AuthFailure"
                | "InvalidAccessKeyId"
                | "MissingAuthenticationToken" => (ProviderErrorKind::Auth, false),
                "LimitExceeded" | "VcpuLimitExceeded" | "InstanceLimitExceeded" => {
                    (ProviderErrorKind::Quota, false)
                }
                "InsufficientInstanceCapacity" => (ProviderErrorKind::InsufficientCapacity, false),
                "ResourceContention"
                | "ScalingActivityInProgress"
                | "ServiceUnavailable"
                | "InternalFailure" => (ProviderErrorKind::Other, true),
                "ValidationError" if message.contains("not found") => {
                    (ProviderErrorKind::NotFound, false)
                }
                "ValidationError"
                    if message.contains("above max") || message.contains("below min") =>
                {
                    (ProviderErrorKind::Quota, false)
                }
                _ => kind_for_status(status),
            };
            let message = if kind == ProviderErrorKind::Auth {
                auth_message("AWS", &detail, AUTH_HINT)
            } else {
                detail
            };
            let mut err = ProviderError::new(kind, "aws", message);
            err.retry_after = retry_after;
            CallError::new(err, transient)
        }
        _ if no_credentials => CallError::new(
            ProviderError::new(
                ProviderErrorKind::Auth,
                "aws",
                auth_message("AWS", "no usable credentials", AUTH_HINT),
            ),
            false,
        ),
        SdkError::ConstructionFailure(_) => {
            CallError::new(ProviderError::other("aws", text), false)
        }
        // Timeouts, connection failures and unparseable responses may pass.
        _ => CallError::new(ProviderError::other("aws", text), true),
    }
}

fn group_from(asg: &AutoScalingGroup) -> Option<Group> {
    let nonneg = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    Some(Group {
        name: asg.auto_scaling_group_name()?.to_string(),
        desired: nonneg(asg.desired_capacity()),
        min: nonneg(asg.min_size()),
        max: nonneg(asg.max_size()),
        instances: asg
            .instances()
            .iter()
            .filter_map(|i| {
                Some(Member {
                    id: i.instance_id()?.to_string(),
                    zone: i.availability_zone().map(str::to_string),
                    instance_type: i.instance_type().map(str::to_string),
                    state: i
                        .lifecycle_state()
                        .map(LifecycleState::as_str)
                        .unwrap_or("")
                        .to_string(),
                })
            })
            .collect(),
    })
}

/// The instance type and zone named in a failed launch's status message, e.g.
/// "We currently do not have sufficient p3.16xlarge capacity in the Availability Zone you
/// requested (us-east-1a)."
fn capacity_details(message: &str) -> (Option<String>, Option<String>) {
    let instance_type = message
        .split("sufficient ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .filter(|t| t.contains('.'))
        .map(str::to_string);
    let zone = message
        .split("you requested (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .map(str::to_string);
    (instance_type, zone)
}

impl AwsProvider {
    /// Builds the client from the SDK's default credential chain (IRSA web identity,
    /// container/instance profile, env). No SDK retries: [`Caller`] retries, so every request
    /// is counted and `Retry-After` is honoured.
    pub async fn new(config: AwsConfig, metrics: CloudMetrics) -> ProviderResult<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(config.call_policy.timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let shared = loader.load().await;
        Ok(Self::with_sdk_config(&shared, config, metrics))
    }

    /// From an already loaded SDK config (tests pass static credentials this way).
    pub fn with_sdk_config(
        shared: &aws_config::SdkConfig,
        config: AwsConfig,
        metrics: CloudMetrics,
    ) -> Self {
        let region = config
            .region
            .clone()
            .or_else(|| shared.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".into());
        let catalog = Catalog::aws(&region)
            .or_else(|_| Catalog::aws("us-east-1"))
            .ok();
        Self {
            client: Client::new(shared),
            caller: Caller::new("aws", config.call_policy.clone(), metrics),
            catalog,
            config,
            snapshot: Mutex::new(None),
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// Reads every group we manage: named groups in pages of 100, discovered ones by tag filter.
    async fn describe_all(&self, operation: &'static str) -> ProviderResult<Arc<Snapshot>> {
        let mut snap = Snapshot::default();
        let by_name: BTreeMap<&str, &str> = self
            .config
            .auto_scaling_groups
            .iter()
            .map(|(pool, asg)| (asg.as_str(), pool.as_str()))
            .collect();
        let names: Vec<String> = by_name.keys().map(|s| s.to_string()).collect();
        for chunk in names.chunks(PAGE) {
            for g in self.describe(operation, Some(chunk.to_vec()), None).await? {
                if let Some(pool) = by_name.get(g.name.as_str()) {
                    snap.groups.insert(pool.to_string(), g);
                }
            }
        }
        if !self.config.auto_discovery_tags.is_empty() {
            let filters: Vec<Filter> = self
                .config
                .auto_discovery_tags
                .iter()
                .map(|(k, v)| {
                    Filter::builder()
                        .name(format!("tag:{k}"))
                        .values(v.clone())
                        .build()
                })
                .collect();
            for (g, pool_tag) in self.describe_tagged(operation, filters).await? {
                let pool = pool_tag.unwrap_or_else(|| g.name.clone());
                // An explicit mapping wins over discovery.
                snap.groups.entry(pool).or_insert(g);
            }
        }
        let snap = Arc::new(snap);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some((std::time::Instant::now(), snap.clone()));
        }
        Ok(snap)
    }

    async fn cached(&self, operation: &'static str) -> ProviderResult<Arc<Snapshot>> {
        let hit = self.snapshot.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|(at, _)| at.elapsed() < self.config.cache_ttl)
                .map(|(_, v)| v.clone())
        });
        match hit {
            Some(s) => Ok(s),
            None => self.describe_all(operation).await,
        }
    }

    fn invalidate(&self) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = None;
        }
    }

    async fn describe(
        &self,
        operation: &'static str,
        names: Option<Vec<String>>,
        filters: Option<Vec<Filter>>,
    ) -> ProviderResult<Vec<Group>> {
        Ok(self
            .describe_raw(operation, names, filters)
            .await?
            .iter()
            .filter_map(group_from)
            .collect())
    }

    async fn describe_tagged(
        &self,
        operation: &'static str,
        filters: Vec<Filter>,
    ) -> ProviderResult<Vec<(Group, Option<String>)>> {
        Ok(self
            .describe_raw(operation, None, Some(filters))
            .await?
            .iter()
            .filter_map(|asg| {
                let pool = asg
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(LABEL_NODE_POOL))
                    .and_then(|t| t.value());
                Some((group_from(asg)?, pool.map(str::to_string)))
            })
            .collect())
    }

    async fn describe_raw(
        &self,
        operation: &'static str,
        names: Option<Vec<String>>,
        filters: Option<Vec<Filter>>,
    ) -> ProviderResult<Vec<AutoScalingGroup>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .caller
                .call(operation, "DescribeAutoScalingGroups", || {
                    self.client
                        .describe_auto_scaling_groups()
                        .set_auto_scaling_group_names(names.clone())
                        .set_filters(filters.clone())
                        .max_records(PAGE as i32)
                        .set_next_token(token.clone())
                        .send()
                        .map(|r| r.map_err(classify))
                })
                .await?;
            out.extend(page.auto_scaling_groups().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// The pool's group, read fresh (writes) or from this reconcile's read.
    async fn group(
        &self,
        operation: &'static str,
        pool: &str,
        fresh: bool,
    ) -> ProviderResult<Group> {
        if fresh {
            if let Some(asg) = self.config.auto_scaling_groups.get(pool) {
                return self
                    .describe(operation, Some(vec![asg.clone()]), None)
                    .await?
                    .into_iter()
                    .find(|g| &g.name == asg)
                    .ok_or_else(|| not_found(operation, pool, Some(asg)));
            }
            self.invalidate();
        }
        let snap = self.cached(operation).await?;
        snap.groups
            .get(pool)
            .cloned()
            .ok_or_else(|| not_found(operation, pool, self.config.auto_scaling_groups.get(pool)))
    }
}

fn not_found(operation: &'static str, pool: &str, asg: Option<&String>) -> ProviderError {
    let message = match asg {
        Some(asg) => format!("pool {pool}: Auto Scaling Group {asg} does not exist"),
        None => format!(
            "pool {pool}: no Auto Scaling Group mapped (aws.autoScalingGroups) or discovered by tags"
        ),
    };
    ProviderError::new(ProviderErrorKind::NotFound, operation, message)
}

impl CloudProvider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn node_groups<'a>(
        &'a self,
        pools: &'a [NodePool],
    ) -> BoxFuture<'a, ProviderResult<Vec<NodeGroup>>> {
        async move {
            let snap = self.describe_all("node_groups").await?;
            Ok(pools
                .iter()
                .filter_map(|p| {
                    let g = snap.groups.get(&p.name)?;
                    Some(NodeGroup {
                        pool: p.name.clone(),
                        id: g.name.clone(),
                        min_size: g.min,
                        max_size: g.max,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn target_size<'a>(&'a self, pool: &'a NodePool) -> BoxFuture<'a, ProviderResult<u32>> {
        async move { Ok(self.group("target_size", &pool.name, false).await?.desired) }.boxed()
    }

    fn set_target_size<'a>(
        &'a self,
        pool: &'a NodePool,
        target: u32,
        _hints: &'a [LaunchHint],
    ) -> BoxFuture<'a, ProviderResult<TargetChange>> {
        // Hints are not used: the group's mixed-instances policy picks types and zones.
        async move {
            const OP: &str = "set_target_size";
            let g = self.group(OP, &pool.name, true).await?;
            if g.desired == target {
                return Ok(TargetChange { previous: g.desired, target });
            }
            if target > g.max || target < g.min {
                return Err(ProviderError::new(
                    ProviderErrorKind::Quota,
                    OP,
                    format!("pool {}: target {target} outside group {} limits {}..={}", pool.name, g.name, g.min, g.max),
                ));
            }
            let desired = i32::try_from(target).map_err(|_| ProviderError::other(OP, "target too large"))?;
            self.caller
                .call(OP, "SetDesiredCapacity", || {
                    self.client
                        .set_desired_capacity()
                        .auto_scaling_group_name(g.name.clone())
                        .desired_capacity(desired)
                        .honor_cooldown(false)
                        .send()
                        .map(|r| r.map_err(classify))
                })
                .await?;
            self.invalidate();
            tracing::info!(pool = %pool.name, asg = %g.name, from = g.desired, to = target, "SetDesiredCapacity");
            Ok(TargetChange { previous: g.desired, target })
        }
        .boxed()
    }

    fn delete_instances<'a>(
        &'a self,
        pool: &'a NodePool,
        instances: &'a [InstanceRef],
    ) -> BoxFuture<'a, ProviderResult<()>> {
        async move {
            const OP: &str = "delete_instances";
            let g = self.group(OP, &pool.name, true).await?;
            for inst in instances {
                let Some(member) = g.instances.iter().find(|m| m.id == inst.id) else {
                    // Gone already, or never ours: terminating it would be wrong either way.
                    tracing::info!(pool = %pool.name, instance = %inst.id, "instance not in the group; nothing to terminate");
                    continue;
                };
                if member.leaving() {
                    continue;
                }
                let result = self
                    .caller
                    .call(OP, "TerminateInstanceInAutoScalingGroup", || {
                        self.client
                            .terminate_instance_in_auto_scaling_group()
                            .instance_id(inst.id.clone())
                            .should_decrement_desired_capacity(true)
                            .send()
                            .map(|r| r.map_err(classify))
                    })
                    .await;
                match result {
                    Ok(_) => tracing::info!(pool = %pool.name, instance = %inst.id, "terminated"),
                    Err(e) if e.kind == ProviderErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            self.invalidate();
            Ok(())
        }
        .boxed()
    }

    fn in_flight<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<InFlightInstance>>> {
        async move {
            let g = self.group("in_flight", &pool.name, false).await?;
            // Launching instances are the in-flight ones we can name; the rest of the gap
            // between desired and registered nodes the engine counts itself.
            Ok(g.instances
                .iter()
                .filter(|m| m.launching())
                .map(|m| InFlightInstance {
                    instance_type: m.instance_type.clone(),
                    zone: m.zone.clone(),
                    requested_at: None,
                })
                .collect())
        }
        .boxed()
    }

    fn launch_failures<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<ProviderError>>> {
        async move {
            const OP: &str = "launch_failures";
            let g = self.group(OP, &pool.name, false).await?;
            let live = g.instances.iter().filter(|m| !m.leaving()).count() as u32;
            if live >= g.desired {
                // Nothing missing: no request at all in steady state.
                return Ok(Vec::new());
            }
            let out = self
                .caller
                .call(OP, "DescribeScalingActivities", || {
                    self.client
                        .describe_scaling_activities()
                        .auto_scaling_group_name(g.name.clone())
                        .max_records(20)
                        .send()
                        .map(|r| r.map_err(classify))
                })
                .await?;
            let mut failures = Vec::new();
            let Ok(mut reported) = self.reported.lock() else {
                return Ok(failures);
            };
            for a in out.activities() {
                let failed = matches!(
                    a.status_code(),
                    Some(ScalingActivityStatusCode::Failed | ScalingActivityStatusCode::Cancelled)
                );
                let Some(id) = a.activity_id() else { continue };
                if !failed || reported.contains(id) {
                    continue;
                }
                let message = a.status_message().unwrap_or_default();
                let kind = if message.contains("InsufficientInstanceCapacity")
                    || message.contains("sufficient") && message.contains("capacity")
                {
                    ProviderErrorKind::InsufficientCapacity
                } else if message.contains("LimitExceeded") || message.contains("quota") {
                    ProviderErrorKind::Quota
                } else {
                    continue;
                };
                reported.insert(id.to_string());
                let (instance_type, zone) = capacity_details(message);
                let mut e = ProviderError::new(
                    kind,
                    "set_target_size",
                    format!("group {}: {message}", g.name),
                );
                e.instance_type = instance_type;
                e.zone = zone;
                failures.push(e);
            }
            Ok(failures)
        }
        .boxed()
    }

    fn instance_for_provider_id(&self, pool: &str, provider_id: &str) -> Option<InstanceRef> {
        let (_, id) = parse_provider_id(provider_id)?;
        Some(InstanceRef {
            pool: pool.to_string(),
            id: id.to_string(),
            provider_id: provider_id.to_string(),
        })
    }

    fn templates(&self, pool: &NodePool) -> Vec<InstanceTemplate> {
        self.catalog
            .as_ref()
            .map(|c| catalog_templates(c, pool))
            .unwrap_or_default()
    }

    fn price(&self, instance_type: &str, capacity_type: CapacityType) -> Option<f64> {
        catalog_price(self.catalog.as_ref()?, instance_type, capacity_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_round_trip() {
        let pid = provider_id("us-east-1a", "i-0abc123");
        assert_eq!(pid, "aws:///us-east-1a/i-0abc123");
        assert_eq!(parse_provider_id(&pid), Some(("us-east-1a", "i-0abc123")));
        assert_eq!(parse_provider_id("gce://p/z/n"), None);
        assert_eq!(parse_provider_id("aws:///us-east-1a/not-an-instance"), None);
    }

    #[test]
    fn capacity_messages_name_type_and_zone() {
        let m = "Launching a new EC2 instance. Status Reason: We currently do not have sufficient p3.16xlarge capacity in the Availability Zone you requested (us-east-1a). Launching EC2 instance failed.";
        assert_eq!(
            capacity_details(m),
            (Some("p3.16xlarge".into()), Some("us-east-1a".into()))
        );
        assert_eq!(capacity_details("nothing"), (None, None));
    }
}
