//! GCP: pools are Managed Instance Groups, zonal or regional.
//!
//! Calls (Compute Engine v1 through `google-cloud-compute-v1`, no client retries: [`Caller`]
//! retries and counts): `instanceGroupManagers.get` (target size and the current-actions
//! summary, cached for one reconcile), `listManagedInstances` only while the summary shows
//! instances being created (their zones, and `lastAttempt.errors` such as
//! `ZONE_RESOURCE_POOL_EXHAUSTED` for [`CloudProvider::launch_failures`]), `resize` and
//! `deleteInstances` (with `skipInstancesOnValidationError`, so instances already gone are no
//! error), each followed by polling `zoneOperations.get` / `regionOperations.get` until `DONE`
//! or [`CallPolicy::operation_timeout`].
//!
//! Group names in `gcp.instanceGroups` may be `NAME` (zonal in the pool's only availability
//! zone, else regional in `gcp.region`), `ZONE/NAME`, `zones/ZONE/instanceGroupManagers/NAME`,
//! `regions/REGION/instanceGroupManagers/NAME` or a full self link.
//!
//! Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, Workload
//! Identity through the GKE metadata server, the GCE metadata server).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use google_cloud_compute_v1::client::{InstanceGroupManagers, RegionInstanceGroupManagers};
use google_cloud_compute_v1::model::managed_instance::CurrentAction;
use google_cloud_compute_v1::model::operation::Status as OpStatus;
use google_cloud_compute_v1::model::{
    InstanceGroupManager, InstanceGroupManagersDeleteInstancesRequest, ManagedInstance, Operation,
    RegionInstanceGroupManagersDeleteInstancesRequest,
};
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::{GcpSettings, NodePool};
use gpu_autoscaler_catalog::Catalog;
use gpu_autoscaler_scaler::engine::{InFlightInstance, InstanceTemplate};
use gpu_autoscaler_scaler::provider::{
    CloudProvider, InstanceRef, LaunchHint, NodeGroup, ProviderError, ProviderErrorKind,
    ProviderResult, TargetChange, catalog_price, catalog_templates,
};

use crate::common::{
    CallError, CallPolicy, Caller, CloudMetrics, ReadCache, auth_message, kind_for_status,
    parse_retry_after, redact,
};

const PROVIDER_ID_PREFIX: &str = "gce://";
const AUTH_HINT: &str = "check Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, or the Workload \
    Identity binding of the scaler's service account) and that it holds roles/compute.instanceAdmin.v1 on the project";

/// Provider settings: the policy's `gcp` block one-to-one, plus connection options.
#[derive(Debug, Clone)]
pub struct GcpConfig {
    /// `gcp.projectID`.
    pub project_id: String,
    /// `gcp.region`: where bare MIG names of multi-zone pools are regional MIGs.
    pub region: Option<String>,
    /// `gcp.instanceGroups`: pool name -> MIG (see the module docs for accepted forms).
    pub instance_groups: BTreeMap<String, String>,
    /// Compute API endpoint override (tests).
    pub endpoint: Option<String>,
    /// Metadata server override for credentials (tests); else ADC.
    pub metadata_endpoint: Option<String>,
    pub call_policy: CallPolicy,
    pub cache_ttl: Duration,
}

impl GcpConfig {
    pub fn from_settings(settings: &GcpSettings) -> Self {
        Self {
            project_id: settings.project_id.clone(),
            region: settings.region.clone(),
            instance_groups: settings.instance_groups.clone(),
            endpoint: None,
            metadata_endpoint: None,
            call_policy: CallPolicy::default(),
            cache_ttl: Duration::from_secs(2),
        }
    }
}

/// Where a MIG lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Zone(String),
    Region(String),
}

/// A MIG's coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigRef {
    pub location: Location,
    pub name: String,
}

/// Resolves a `gcp.instanceGroups` value for a pool.
pub fn parse_mig(value: &str, pool: &NodePool, region: Option<&str>) -> Option<MigRef> {
    let v = value.trim().trim_end_matches('/');
    let v = v
        .split("/projects/")
        .nth(1)
        .and_then(|r| r.split_once('/').map(|(_, rest)| rest))
        .unwrap_or(v);
    let parts: Vec<&str> = v.split('/').filter(|s| !s.is_empty()).collect();
    let mig = |location, name: &str| {
        Some(MigRef {
            location,
            name: name.to_string(),
        })
    };
    match parts.as_slice() {
        ["zones", zone, "instanceGroupManagers", name] => {
            mig(Location::Zone(zone.to_string()), name)
        }
        ["regions", region, "instanceGroupManagers", name] => {
            mig(Location::Region(region.to_string()), name)
        }
        [zone, name] => mig(Location::Zone(zone.to_string()), name),
        [name] => match (pool.availability_zones.as_slice(), region) {
            ([zone], _) => mig(Location::Zone(zone.clone()), name),
            (_, Some(region)) => mig(Location::Region(region.to_string()), name),
            _ => None,
        },
        _ => None,
    }
}

/// `gce://<project>/<zone>/<instance-name>` -> (project, zone, name).
pub fn parse_provider_id(provider_id: &str) -> Option<(&str, &str, &str)> {
    let rest = provider_id.strip_prefix(PROVIDER_ID_PREFIX)?;
    let mut it = rest.splitn(3, '/');
    let (p, z, n) = (it.next()?, it.next()?, it.next()?);
    (!p.is_empty() && !z.is_empty() && !n.is_empty() && !n.contains('/')).then_some((p, z, n))
}

pub fn provider_id(project: &str, zone: &str, name: &str) -> String {
    format!("{PROVIDER_ID_PREFIX}{project}/{zone}/{name}")
}

/// (zone, name) of an instance URL `.../zones/<zone>/instances/<name>`.
fn instance_location(url: &str) -> Option<(String, String)> {
    let rest = url.split("/zones/").nth(1)?;
    let (zone, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("instances/")?;
    Some((zone.to_string(), name.to_string()))
}

fn error_code_kind(code: &str) -> Option<ProviderErrorKind> {
    if code.starts_with("ZONE_RESOURCE_POOL_EXHAUSTED")
        || code == "RESOURCE_POOL_EXHAUSTED"
        || code == "STOCKOUT"
    {
        Some(ProviderErrorKind::InsufficientCapacity)
    } else if code == "QUOTA_EXCEEDED" || code.ends_with("QUOTA_EXCEEDED") {
        Some(ProviderErrorKind::Quota)
    } else if code == "RESOURCE_NOT_FOUND" {
        Some(ProviderErrorKind::NotFound)
    } else {
        None
    }
}

fn classify(e: google_cloud_compute_v1::Error) -> CallError {
    let text = redact(&e.to_string());
    if e.is_authentication() {
        return CallError::new(
            ProviderError::new(
                ProviderErrorKind::Auth,
                "gcp",
                auth_message("GCP", &text, AUTH_HINT),
            ),
            false,
        );
    }
    if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() {
        return CallError::new(ProviderError::other("gcp", text), true);
    }
    let Some(status) = e.http_status_code() else {
        return CallError::new(ProviderError::other("gcp", text), false);
    };
    // The reason (`rateLimitExceeded`, ...) may be in the raw payload or only in the parsed
    // status, depending on how the client decoded the body: look at both.
    let payload = format!(
        "{} {:?}",
        e.http_payload()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .unwrap_or_default(),
        e.status()
    );
    let message = e
        .status()
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| text.clone());
    let retry_after = e
        .http_headers()
        .and_then(|h| h.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    // Compute reports rate limits as 403 `rateLimitExceeded` as well as 429.
    let rate_limited = [
        "rateLimitExceeded",
        "RATE_LIMIT_EXCEEDED",
        "Rate Limit Exceeded",
        "Quota exceeded for quota metric",
    ]
    .iter()
    .any(|m| payload.contains(m));
    let (kind, transient) = if rate_limited {
        (ProviderErrorKind::Throttled, false)
    } else if payload.contains("ZONE_RESOURCE_POOL_EXHAUSTED") {
        (ProviderErrorKind::InsufficientCapacity, false)
    } else if payload.contains("quotaExceeded") || payload.contains("QUOTA_EXCEEDED") {
        (ProviderErrorKind::Quota, false)
    } else {
        kind_for_status(status)
    };
    let detail = format!("HTTP {status}: {}", redact(&message));
    let message = if kind == ProviderErrorKind::Auth {
        auth_message("GCP", &detail, AUTH_HINT)
    } else {
        detail
    };
    let mut err = ProviderError::new(kind, "gcp", message);
    err.retry_after = retry_after;
    CallError::new(err, transient)
}

#[derive(Debug, Clone)]
struct MigState {
    target: u32,
    /// Instances being created (from the current-actions summary).
    creating: u32,
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    zone: Option<String>,
    action: Option<CurrentAction>,
    machine_type: Option<String>,
    /// (code, message) of the last failed attempt to create it.
    errors: Vec<(String, String)>,
}

/// The GCP Managed Instance Group provider.
pub struct GcpProvider {
    config: GcpConfig,
    zonal: InstanceGroupManagers,
    regional: RegionInstanceGroupManagers,
    caller: Caller,
    catalog: Option<Catalog>,
    states: ReadCache<MigState>,
    members: ReadCache<Vec<Member>>,
    reported: Mutex<BTreeSet<(String, String)>>,
}

impl std::fmt::Debug for GcpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GcpProvider {
    /// Builds the Compute clients with ADC (or the metadata server at
    /// [`GcpConfig::metadata_endpoint`]).
    pub async fn new(config: GcpConfig, metrics: CloudMetrics) -> ProviderResult<Self> {
        let build_err = |e: &dyn std::fmt::Display| {
            ProviderError::new(
                ProviderErrorKind::Auth,
                "new",
                auth_message("GCP", &e.to_string(), AUTH_HINT),
            )
        };
        let credentials = match &config.metadata_endpoint {
            Some(url) => google_cloud_auth::credentials::mds::Builder::default()
                .with_endpoint(url.clone())
                .build(),
            None => google_cloud_auth::credentials::Builder::default().build(),
        }
        .map_err(|e| build_err(&e))?;
        let mut zonal = InstanceGroupManagers::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        let mut regional = RegionInstanceGroupManagers::builder()
            .with_credentials(credentials)
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        if let Some(e) = &config.endpoint {
            zonal = zonal.with_endpoint(e.clone());
            regional = regional.with_endpoint(e.clone());
        }
        let zonal = zonal
            .build()
            .await
            .map_err(|e| ProviderError::other("new", redact(&e.to_string())))?;
        let regional = regional
            .build()
            .await
            .map_err(|e| ProviderError::other("new", redact(&e.to_string())))?;
        let catalog_region = config
            .region
            .clone()
            .unwrap_or_else(|| "us-central1".into());
        let catalog = Catalog::gcp(&catalog_region)
            .or_else(|_| Catalog::gcp("us-central1"))
            .ok();
        Ok(Self {
            caller: Caller::new("gcp", config.call_policy.clone(), metrics),
            states: ReadCache::new(config.cache_ttl),
            members: ReadCache::new(config.cache_ttl),
            reported: Mutex::new(BTreeSet::new()),
            zonal,
            regional,
            catalog,
            config,
        })
    }

    fn mig(&self, operation: &'static str, pool: &NodePool) -> ProviderResult<MigRef> {
        let value = self.config.instance_groups.get(&pool.name).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::NotFound,
                operation,
                format!(
                    "pool {}: no Managed Instance Group mapped (gcp.instanceGroups)",
                    pool.name
                ),
            )
        })?;
        parse_mig(value, pool, self.config.region.as_deref()).ok_or_else(|| {
            ProviderError::other(
                operation,
                format!("pool {}: cannot tell the zone or region of MIG {value:?}; use ZONE/NAME or set gcp.region", pool.name),
            )
        })
    }

    async fn get(
        &self,
        operation: &'static str,
        pool: &NodePool,
        fresh: bool,
    ) -> ProviderResult<MigState> {
        if !fresh && let Some(s) = self.states.get(&pool.name) {
            return Ok(s);
        }
        let mig = self.mig(operation, pool)?;
        let project = &self.config.project_id;
        let igm: InstanceGroupManager = self
            .caller
            .call(operation, "instanceGroupManagers.get", || {
                let fut = match &mig.location {
                    Location::Zone(z) => self
                        .zonal
                        .get()
                        .set_project(project)
                        .set_zone(z)
                        .set_instance_group_manager(&mig.name)
                        .send()
                        .boxed(),
                    Location::Region(r) => self
                        .regional
                        .get()
                        .set_project(project)
                        .set_region(r)
                        .set_instance_group_manager(&mig.name)
                        .send()
                        .boxed(),
                };
                fut.map(|r| r.map_err(classify))
            })
            .await?;
        let a = igm.current_actions.unwrap_or_default();
        let n = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let state = MigState {
            target: n(igm.target_size),
            creating: n(a.creating)
                + n(a.creating_without_retries)
                + n(a.recreating)
                + n(a.verifying),
        };
        self.states.put(&pool.name, state.clone());
        Ok(state)
    }

    async fn list(&self, operation: &'static str, pool: &NodePool) -> ProviderResult<Vec<Member>> {
        if let Some(m) = self.members.get(&pool.name) {
            return Ok(m);
        }
        let mig = self.mig(operation, pool)?;
        let project = &self.config.project_id;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (items, next): (Vec<ManagedInstance>, Option<String>) = self
                .caller
                .call(operation, "listManagedInstances", || {
                    let token = token.clone();
                    let fut = match &mig.location {
                        Location::Zone(z) => self
                            .zonal
                            .list_managed_instances()
                            .set_project(project)
                            .set_zone(z)
                            .set_instance_group_manager(&mig.name)
                            .set_or_clear_page_token(token)
                            .send()
                            .map(|r| r.map(|r| (r.managed_instances, r.next_page_token)))
                            .boxed(),
                        Location::Region(r) => self
                            .regional
                            .list_managed_instances()
                            .set_project(project)
                            .set_region(r)
                            .set_instance_group_manager(&mig.name)
                            .set_or_clear_page_token(token)
                            .send()
                            .map(|r| r.map(|r| (r.managed_instances, r.next_page_token)))
                            .boxed(),
                    };
                    fut.map(|r| r.map_err(classify))
                })
                .await?;
            out.extend(items.into_iter().filter_map(|m| {
                let (zone, name) = m
                    .instance
                    .as_deref()
                    .and_then(instance_location)
                    .or_else(|| Some((String::new(), m.name.clone()?)))?;
                let errors = m
                    .last_attempt
                    .and_then(|a| a.errors)
                    .map(|e| {
                        e.errors
                            .into_iter()
                            .map(|e| (e.code.unwrap_or_default(), e.message.unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(Member {
                    name,
                    zone: (!zone.is_empty()).then_some(zone),
                    action: m.current_action,
                    machine_type: m
                        .properties_from_flexibility_policy
                        .and_then(|p| p.machine_type)
                        .map(|t| t.rsplit('/').next().unwrap_or_default().to_string()),
                    errors,
                })
            }));
            match next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        self.members.put(&pool.name, out.clone());
        Ok(out)
    }

    /// Polls the operation until DONE; its errors are classified like API errors.
    async fn wait(
        &self,
        operation: &'static str,
        mig: &MigRef,
        op: Operation,
    ) -> ProviderResult<()> {
        let deadline = Instant::now() + self.caller.policy.operation_timeout;
        let project = &self.config.project_id;
        let mut op = op;
        loop {
            if op.status == Some(OpStatus::Done) {
                let Some(err) = op.error.as_ref().filter(|e| !e.errors.is_empty()) else {
                    return Ok(());
                };
                let first = &err.errors[0];
                let code = first.code.clone().unwrap_or_default();
                let message = first.message.clone().unwrap_or_default();
                let kind = error_code_kind(&code).unwrap_or(ProviderErrorKind::Other);
                let mut e = ProviderError::new(
                    kind,
                    operation,
                    format!("MIG {}: {code}: {}", mig.name, redact(&message)),
                );
                if let Location::Zone(z) = &mig.location {
                    e.zone = Some(z.clone());
                }
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::other(
                    operation,
                    format!(
                        "MIG {}: operation {} not done after {:?}",
                        mig.name,
                        op.name.as_deref().unwrap_or("?"),
                        self.caller.policy.operation_timeout
                    ),
                ));
            }
            tokio::time::sleep(self.caller.policy.poll_interval).await;
            let name = op.name.clone().unwrap_or_default();
            op = self
                .caller
                .call(operation, "operations.get", || {
                    let fut = match &mig.location {
                        Location::Zone(z) => self
                            .zonal
                            .get_operation()
                            .set_project(project)
                            .set_zone(z)
                            .set_operation(&name)
                            .send()
                            .boxed(),
                        Location::Region(r) => self
                            .regional
                            .get_operation()
                            .set_project(project)
                            .set_region(r)
                            .set_operation(&name)
                            .send()
                            .boxed(),
                    };
                    fut.map(|r| r.map_err(classify))
                })
                .await?;
        }
    }
}

impl CloudProvider for GcpProvider {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn node_groups<'a>(
        &'a self,
        pools: &'a [NodePool],
    ) -> BoxFuture<'a, ProviderResult<Vec<NodeGroup>>> {
        async move {
            let mut out = Vec::new();
            for p in pools {
                let Ok(mig) = self.mig("node_groups", p) else {
                    continue;
                };
                self.get("node_groups", p, true).await?;
                // A MIG has no size limits of its own (its autoscaler's are not ours).
                out.push(NodeGroup {
                    pool: p.name.clone(),
                    id: mig.name,
                    min_size: p.min_size,
                    max_size: p.max_size,
                });
            }
            Ok(out)
        }
        .boxed()
    }

    fn target_size<'a>(&'a self, pool: &'a NodePool) -> BoxFuture<'a, ProviderResult<u32>> {
        async move { Ok(self.get("target_size", pool, false).await?.target) }.boxed()
    }

    fn set_target_size<'a>(
        &'a self,
        pool: &'a NodePool,
        target: u32,
        _hints: &'a [LaunchHint],
    ) -> BoxFuture<'a, ProviderResult<TargetChange>> {
        async move {
            const OP: &str = "set_target_size";
            let current = self.get(OP, pool, true).await?;
            if current.target == target {
                return Ok(TargetChange { previous: current.target, target });
            }
            let mig = self.mig(OP, pool)?;
            let size = i32::try_from(target).map_err(|_| ProviderError::other(OP, "target too large"))?;
            let project = &self.config.project_id;
            let op = self
                .caller
                .call(OP, "instanceGroupManagers.resize", || {
                    let fut = match &mig.location {
                        Location::Zone(z) => self
                            .zonal
                            .resize()
                            .set_project(project)
                            .set_zone(z)
                            .set_instance_group_manager(&mig.name)
                            .set_size(size)
                            .send()
                            .boxed(),
                        Location::Region(r) => self
                            .regional
                            .resize()
                            .set_project(project)
                            .set_region(r)
                            .set_instance_group_manager(&mig.name)
                            .set_size(size)
                            .send()
                            .boxed(),
                    };
                    fut.map(|r| r.map_err(classify))
                })
                .await?;
            self.states.invalidate(&pool.name);
            self.members.invalidate(&pool.name);
            self.wait(OP, &mig, op).await?;
            tracing::info!(pool = %pool.name, mig = %mig.name, from = current.target, to = target, "MIG resized");
            Ok(TargetChange { previous: current.target, target })
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
            if instances.is_empty() {
                return Ok(());
            }
            let mig = self.mig(OP, pool)?;
            let urls: Vec<String> = instances
                .iter()
                .filter_map(|i| {
                    parse_provider_id(&i.provider_id)
                        .map(|(_, zone, name)| format!("zones/{zone}/instances/{name}"))
                })
                .collect();
            if urls.is_empty() {
                return Ok(());
            }
            let project = &self.config.project_id;
            let op = self
                .caller
                .call(OP, "instanceGroupManagers.deleteInstances", || {
                    let fut = match &mig.location {
                        Location::Zone(z) => self
                            .zonal
                            .delete_instances()
                            .set_project(project)
                            .set_zone(z)
                            .set_instance_group_manager(&mig.name)
                            .set_body(
                                InstanceGroupManagersDeleteInstancesRequest::new()
                                    .set_instances(urls.clone())
                                    .set_skip_instances_on_validation_error(true),
                            )
                            .send()
                            .boxed(),
                        Location::Region(r) => self
                            .regional
                            .delete_instances()
                            .set_project(project)
                            .set_region(r)
                            .set_instance_group_manager(&mig.name)
                            .set_body(
                                RegionInstanceGroupManagersDeleteInstancesRequest::new()
                                    .set_instances(urls.clone())
                                    .set_skip_instances_on_validation_error(true),
                            )
                            .send()
                            .boxed(),
                    };
                    fut.map(|r| r.map_err(classify))
                })
                .await?;
            self.states.invalidate(&pool.name);
            self.members.invalidate(&pool.name);
            self.wait(OP, &mig, op).await
        }
        .boxed()
    }

    fn in_flight<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<InFlightInstance>>> {
        async move {
            let state = self.get("in_flight", pool, false).await?;
            if state.creating == 0 {
                return Ok(Vec::new());
            }
            Ok(self
                .list("in_flight", pool)
                .await?
                .into_iter()
                .filter(|m| m.action.as_ref().is_some_and(creating))
                .map(|m| InFlightInstance {
                    instance_type: m.machine_type,
                    zone: m.zone,
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
            let state = self.get("launch_failures", pool, false).await?;
            if state.creating == 0 {
                return Ok(Vec::new());
            }
            let members = self.list("launch_failures", pool).await?;
            let Ok(mut reported) = self.reported.lock() else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for m in members
                .iter()
                .filter(|m| m.action.as_ref().is_some_and(creating))
            {
                for (code, message) in &m.errors {
                    let Some(kind) =
                        error_code_kind(code).filter(|k| *k != ProviderErrorKind::NotFound)
                    else {
                        continue;
                    };
                    if !reported.insert((m.name.clone(), code.clone())) {
                        continue;
                    }
                    let mut e = ProviderError::new(
                        kind,
                        "set_target_size",
                        format!("instance {}: {code}: {}", m.name, redact(message)),
                    );
                    e.zone = m.zone.clone();
                    e.instance_type = m.machine_type.clone();
                    out.push(e);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn instance_for_provider_id(&self, pool: &str, provider_id: &str) -> Option<InstanceRef> {
        let (project, _, name) = parse_provider_id(provider_id)?;
        (project == self.config.project_id).then(|| InstanceRef {
            pool: pool.to_string(),
            id: name.to_string(),
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

fn creating(a: &CurrentAction) -> bool {
    matches!(
        a,
        CurrentAction::Creating
            | CurrentAction::CreatingWithoutRetries
            | CurrentAction::Recreating
            | CurrentAction::Verifying
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(zones: &[&str]) -> NodePool {
        serde_json::from_value(serde_json::json!({
            "name": "p", "maxSize": 3, "instanceTypes": ["a2-highgpu-1g"],
            "availabilityZones": zones,
        }))
        .unwrap_or_else(|e| panic!("pool: {e}"))
    }

    #[test]
    fn mig_names_resolve_to_zones_and_regions() {
        let z = |s: &str| Location::Zone(s.into());
        let r = |s: &str| Location::Region(s.into());
        let one = pool(&["us-central1-a"]);
        let many = pool(&["us-central1-a", "us-central1-b"]);
        assert_eq!(
            parse_mig("m", &one, None).map(|m| m.location),
            Some(z("us-central1-a"))
        );
        assert_eq!(
            parse_mig("m", &many, Some("us-central1")).map(|m| m.location),
            Some(r("us-central1"))
        );
        assert_eq!(parse_mig("m", &many, None), None);
        assert_eq!(
            parse_mig("us-east1-b/m", &many, None).map(|m| m.location),
            Some(z("us-east1-b"))
        );
        let link = "https://www.googleapis.com/compute/v1/projects/p/regions/europe-west4/instanceGroupManagers/m";
        assert_eq!(
            parse_mig(link, &one, None),
            Some(MigRef {
                location: r("europe-west4"),
                name: "m".into()
            })
        );
    }

    #[test]
    fn provider_ids_round_trip() {
        let pid = provider_id("proj", "us-central1-a", "gpu-abc1");
        assert_eq!(
            parse_provider_id(&pid),
            Some(("proj", "us-central1-a", "gpu-abc1"))
        );
        assert_eq!(parse_provider_id("aws:///z/i-1"), None);
        assert_eq!(
            instance_location(
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/instances/x"
            ),
            Some(("us-central1-a".into(), "x".into()))
        );
    }

    #[test]
    fn error_codes_classify() {
        assert_eq!(
            error_code_kind("ZONE_RESOURCE_POOL_EXHAUSTED"),
            Some(ProviderErrorKind::InsufficientCapacity)
        );
        assert_eq!(
            error_code_kind("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"),
            Some(ProviderErrorKind::InsufficientCapacity)
        );
        assert_eq!(
            error_code_kind("QUOTA_EXCEEDED"),
            Some(ProviderErrorKind::Quota)
        );
        assert_eq!(error_code_kind("SOMETHING"), None);
    }
}
