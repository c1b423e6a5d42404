//! Azure: pools are Virtual Machine Scale Sets, driven through a small typed ARM client.
//!
//! Calls (`Microsoft.Compute`, api-version [`API_VERSION`]): `GET virtualMachineScaleSets/{vmss}`
//! (capacity and SKU, cached for one reconcile), `PATCH` of `sku.capacity` (after a fresh GET;
//! absolute, a repeat is a no-op), `POST .../delete` with `instanceIds`, and
//! `GET .../virtualMachines` (in-flight instances; skipped while the set is settled). The
//! long-running PATCH and delete are polled through `Azure-AsyncOperation` (else `Location`)
//! until done or [`CallPolicy::operation_timeout`]; a scale-out still running then is kept and
//! polled again by [`CloudProvider::launch_failures`], which reports `AllocationFailed` /
//! `SkuNotAvailable` / quota failures that surface only at the end.
//!
//! Scale from zero needs each VM size's GPUs, vCPUs and memory, which the bundled Azure price
//! table does not carry: [`AzureProvider::load_vm_sizes`] reads them once at start-up from the
//! Resource SKUs API (`GET /subscriptions/{s}/providers/Microsoft.Compute/skus`, api-version
//! [`SKUS_API_VERSION`], filtered to the region), keeping the GPU sizes not restricted there.
//!
//! `azure_mgmt_compute` is not used: it is generated for an old api-version, unmaintained
//! since the SDK's rewrite, and ten times the build of the four requests we make.
//!
//! Credentials ([`default_credential`]): workload identity (`AZURE_FEDERATED_TOKEN_FILE`),
//! a client secret from the environment, else managed identity (user-assigned when
//! `AZURE_CLIENT_ID` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::{AzureSettings, NodePool};
use gpu_autoscaler_catalog::Catalog;
use gpu_autoscaler_scaler::engine::{InFlightInstance, InstanceTemplate};
use gpu_autoscaler_scaler::provider::{
    CloudProvider, InstanceRef, LaunchHint, NodeGroup, ProviderError, ProviderErrorKind,
    ProviderResult, TargetChange, catalog_price, catalog_templates,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    CallError, CallPolicy, Caller, CloudMetrics, ReadCache, auth_message, kind_for_status,
    parse_retry_after, redact,
};

pub const API_VERSION: &str = "2024-07-01";
/// api-version of the Resource SKUs list (its newest stable one).
pub const SKUS_API_VERSION: &str = "2021-07-01";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
const PROVIDER_ID_PREFIX: &str = "azure://";
const AUTH_HINT: &str = "check the workload identity federation (AZURE_CLIENT_ID, AZURE_TENANT_ID, \
    AZURE_FEDERATED_TOKEN_FILE) or the managed identity, and that it has \"Virtual Machine Contributor\" on the \
    resource group";

/// Something that hands out ARM bearer tokens. Implemented for every `azure_identity`
/// credential; tests pass a fixed token.
pub trait TokenSource: Send + Sync {
    fn token(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// An `azure_identity` credential as a [`TokenSource`] for the ARM scope.
pub struct IdentityTokens(pub Arc<dyn azure_core::credentials::TokenCredential>);

impl TokenSource for IdentityTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, String>> {
        async move {
            self.0
                .get_token(&[ARM_SCOPE], None)
                .await
                .map(|t| t.token.secret().to_string())
                // The SDK's message names the failing source; it never carries the token.
                .map_err(|e| redact(&e.to_string()))
        }
        .boxed()
    }
}

/// Workload identity, else a client secret from the environment, else managed identity.
pub fn default_credential() -> ProviderResult<Arc<dyn TokenSource>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let fail = |e: azure_core::Error| {
        ProviderError::new(
            ProviderErrorKind::Auth,
            "new",
            auth_message("Azure", &e.to_string(), AUTH_HINT),
        )
    };
    let cred: Arc<dyn azure_core::credentials::TokenCredential> =
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(fail)?
        } else if let (Some(tenant), Some(client), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            azure_identity::ClientSecretCredential::new(&tenant, client, secret.into(), None)
                .map_err(fail)?
        } else {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: env("AZURE_CLIENT_ID")
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(fail)?
        };
    Ok(Arc::new(IdentityTokens(cred)))
}

/// Provider settings: the policy's `azure` block one-to-one, plus connection options.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `azure.subscriptionID`.
    pub subscription_id: String,
    /// `azure.resourceGroup`.
    pub resource_group: String,
    /// `azure.region` (catalogue prices, zone names).
    pub region: Option<String>,
    /// `azure.vmScaleSets`: pool name -> VMSS name.
    pub vm_scale_sets: BTreeMap<String, String>,
    /// ARM endpoint (`https://management.azure.com`; tests override).
    pub endpoint: String,
    pub call_policy: CallPolicy,
    pub cache_ttl: Duration,
    /// While a set is settled (every VM provisioned, count = capacity), its VMs are re-listed
    /// only this often.
    pub settled_recheck: Duration,
}

impl AzureConfig {
    pub fn from_settings(settings: &AzureSettings) -> Self {
        Self {
            subscription_id: settings.subscription_id.clone(),
            resource_group: settings.resource_group.clone(),
            region: settings.region.clone(),
            vm_scale_sets: settings.vm_scale_sets.clone(),
            endpoint: "https://management.azure.com".into(),
            call_policy: CallPolicy::default(),
            cache_ttl: Duration::from_secs(2),
            settled_recheck: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Sku {
    name: Option<String>,
    tier: Option<String>,
    capacity: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Vmss {
    sku: Option<Sku>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmProperties {
    provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vm {
    instance_id: Option<String>,
    #[serde(default)]
    zones: Vec<String>,
    sku: Option<Sku>,
    properties: Option<VmProperties>,
}

/// One page of an ARM list answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    next_link: Option<String>,
}

/// One entry of the Resource SKUs list (only what a template needs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSku {
    resource_type: Option<String>,
    name: Option<String>,
    #[serde(default)]
    capabilities: Vec<SkuCapability>,
    #[serde(default)]
    restrictions: Vec<SkuRestriction>,
}

#[derive(Debug, Clone, Deserialize)]
struct SkuCapability {
    name: String,
    value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SkuRestriction {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

/// A GPU VM size as the Resource SKUs API describes it in the provider's region.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSize {
    pub gpus: u32,
    pub vcpus: u32,
    pub memory_gib: f64,
}

impl ResourceSku {
    fn capability(&self, name: &str) -> Option<f64> {
        self.capabilities
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .and_then(|c| c.value.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    }

    /// The size's shape, when it is a VM size with GPUs that the subscription may use in
    /// `region` (a `Location` restriction naming the region, e.g. `NotAvailableForSubscription`,
    /// rules it out; zone restrictions leave it usable in the other zones).
    fn gpu_vm_size(&self, region: &str) -> Option<(String, VmSize)> {
        if !self
            .resource_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("virtualMachines"))
        {
            return None;
        }
        let restricted = self.restrictions.iter().any(|r| {
            r.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("Location"))
                && r.values.iter().any(|v| v.eq_ignore_ascii_case(region))
        });
        if restricted {
            return None;
        }
        let gpus = self.capability("GPUs")?;
        if gpus < 1.0 || gpus.fract() != 0.0 {
            return None;
        }
        let size = VmSize {
            gpus: gpus as u32,
            vcpus: self.capability("vCPUs")? as u32,
            memory_gib: self.capability("MemoryGB")?,
        };
        Some((self.name.clone()?, size))
    }
}

#[derive(Debug, Clone, Deserialize)]
struct ArmErrorBody {
    error: Option<ArmError>,
}

#[derive(Debug, Clone, Deserialize)]
struct ArmError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct AsyncStatus {
    status: Option<String>,
    error: Option<ArmError>,
}

#[derive(Debug, Clone)]
struct Settled {
    capacity: u64,
    at: Instant,
}

/// A long-running operation we stopped waiting for.
#[derive(Debug, Clone)]
struct Pending {
    url: String,
    azure_async: bool,
}

/// The Azure VM Scale Set provider.
pub struct AzureProvider {
    config: AzureConfig,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    caller: Caller,
    catalog: Option<Catalog>,
    /// GPU VM sizes of the region (Resource SKUs API), for templates; see `load_vm_sizes`.
    vm_sizes: Mutex<BTreeMap<String, VmSize>>,
    sets: ReadCache<Sku>,
    settled: Mutex<BTreeMap<String, Settled>>,
    pending: Mutex<BTreeMap<String, Pending>>,
    reported: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Parses `azure:///subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/
/// virtualMachineScaleSets/<vmss>/virtualMachines/<id>` -> (resource group, vmss, instance id).
pub fn parse_provider_id(provider_id: &str) -> Option<(String, String, String)> {
    let rest = provider_id.strip_prefix(PROVIDER_ID_PREFIX)?;
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let find = |key: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .map(|s| s.to_string())
    };
    let rg = find("resourceGroups")?;
    let vmss = find("virtualMachineScaleSets")?;
    let id = find("virtualMachines")?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then_some((rg, vmss, id))
}

pub fn provider_id(
    subscription: &str,
    resource_group: &str,
    vmss: &str,
    instance_id: &str,
) -> String {
    format!(
        "{PROVIDER_ID_PREFIX}/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{instance_id}"
    )
}

fn kind_for_code(code: &str, message: &str) -> Option<ProviderErrorKind> {
    match code {
        "SkuNotAvailable"
        | "AllocationFailed"
        | "ZonalAllocationFailed"
        | "OverconstrainedAllocationRequest"
        | "OverconstrainedZonalAllocationRequest" => Some(ProviderErrorKind::InsufficientCapacity),
        "QuotaExceeded" | "OperationNotAllowed"
            if message.to_ascii_lowercase().contains("quota") =>
        {
            Some(ProviderErrorKind::Quota)
        }
        "QuotaExceeded" => Some(ProviderErrorKind::Quota),
        "TooManyRequests" | "SubscriptionRequestsThrottled" => Some(ProviderErrorKind::Throttled),
        "InvalidAuthenticationToken"
        | "ExpiredAuthenticationToken"
        | "AuthorizationFailed"
        | "AuthenticationFailed"
        | "InvalidAuthenticationTokenTenant" => Some(ProviderErrorKind::Auth),
        "ResourceNotFound" | "ResourceGroupNotFound" | "NotFound" => {
            Some(ProviderErrorKind::NotFound)
        }
        _ => None,
    }
}

fn arm_error(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> CallError {
    let parsed: Option<ArmError> = serde_json::from_str::<ArmErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.clone())
        .unwrap_or_default();
    let message = parsed
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    let (status_kind, transient) = kind_for_status(status);
    let kind = kind_for_code(&code, &message).unwrap_or(status_kind);
    let detail = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {code}: {}", redact(&message))
    };
    let text = if kind == ProviderErrorKind::Auth {
        auth_message("Azure", &detail, AUTH_HINT)
    } else {
        detail
    };
    let mut e = ProviderError::new(kind, "azure", text);
    e.retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    CallError::new(e, transient)
}

fn transport_error(e: reqwest::Error) -> CallError {
    // reqwest errors carry the URL (no secrets in ours) but never headers.
    CallError::new(ProviderError::other("azure", redact(&e.to_string())), true)
}

/// One answer of the ARM API.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl AzureProvider {
    pub fn new(
        config: AzureConfig,
        tokens: Arc<dyn TokenSource>,
        metrics: CloudMetrics,
    ) -> ProviderResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.call_policy.timeout)
            .build()
            .map_err(|e| ProviderError::other("new", e))?;
        let region = config.region.clone().unwrap_or_else(|| "eastus".into());
        let catalog = Catalog::azure(&region)
            .or_else(|_| Catalog::azure("eastus"))
            .ok();
        Ok(Self {
            caller: Caller::new("azure", config.call_policy.clone(), metrics),
            sets: ReadCache::new(config.cache_ttl),
            settled: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            reported: Mutex::new(BTreeSet::new()),
            http,
            tokens,
            catalog,
            vm_sizes: Mutex::new(BTreeMap::new()),
            config,
        })
    }

    fn region(&self) -> &str {
        self.config.region.as_deref().unwrap_or("eastus")
    }

    /// Reads the GPU VM sizes of the region from the Resource SKUs API and keeps them for
    /// [`CloudProvider::templates`]; returns how many there are. Called once at start-up: sizes
    /// don't change while we run, and without them only scale-from-zero is missing (pools
    /// with nodes still scale on the nodes' own shapes), so a failure is for the caller to log.
    pub async fn load_vm_sizes(&self) -> ProviderResult<usize> {
        const OPERATION: &str = "load_vm_sizes";
        let region = self.region().to_string();
        let url = format!(
            "{}/subscriptions/{}/providers/Microsoft.Compute/skus?api-version={SKUS_API_VERSION}&$filter=location%20eq%20%27{}%27",
            self.config.endpoint.trim_end_matches('/'),
            self.config.subscription_id,
            region,
        );
        let skus: Vec<ResourceSku> = self
            .list_all(
                OPERATION,
                "resourceSkus.list",
                url,
                "unreadable Resource SKUs list",
            )
            .await?;
        let sizes: BTreeMap<String, VmSize> =
            skus.iter().filter_map(|s| s.gpu_vm_size(&region)).collect();
        let n = sizes.len();
        *self.vm_sizes.lock().unwrap_or_else(|e| e.into_inner()) = sizes;
        Ok(n)
    }

    /// A template for an instance type from the Resource SKUs shape, priced from the catalogue.
    fn sku_template(&self, instance_type: &str, pool: &NodePool) -> Option<InstanceTemplate> {
        let sizes = self.vm_sizes.lock().unwrap_or_else(|e| e.into_inner());
        let (name, size) = sizes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(instance_type))?;
        Some(InstanceTemplate {
            instance_type: name.clone(),
            gpus: size.gpus,
            gpu_resource: "nvidia.com/gpu".into(),
            cpu_millis: u64::from(size.vcpus) * 1000,
            memory_bytes: (size.memory_gib * 1024.0 * 1024.0 * 1024.0) as u64,
            price_per_hour: self
                .catalog
                .as_ref()
                .and_then(|c| catalog_price(c, name, pool.capacity_type)),
            zones: pool.availability_zones.clone(),
        })
    }

    fn vmss(&self, operation: &'static str, pool: &str) -> ProviderResult<&str> {
        self.config
            .vm_scale_sets
            .get(pool)
            .map(String::as_str)
            .ok_or_else(|| {
                ProviderError::new(
                    ProviderErrorKind::NotFound,
                    operation,
                    format!("pool {pool}: no VM Scale Set mapped (azure.vmScaleSets)"),
                )
            })
    }

    fn url(&self, vmss: &str, suffix: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}{suffix}?api-version={API_VERSION}",
            self.config.endpoint.trim_end_matches('/'),
            self.config.subscription_id,
            self.config.resource_group,
        )
    }

    /// One ARM request with a fresh token; non-2xx answers become classified errors.
    async fn send(
        &self,
        operation: &'static str,
        call: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> ProviderResult<Reply> {
        self.caller
            .call(operation, call, || async {
                let token = self.tokens.token().await.map_err(|e| {
                    CallError::new(
                        ProviderError::new(
                            ProviderErrorKind::Auth,
                            operation,
                            auth_message("Azure", &e, AUTH_HINT),
                        ),
                        false,
                    )
                })?;
                let mut req = self.http.request(method.clone(), url).bearer_auth(token);
                if let Some(b) = body {
                    req = req.json(b);
                }
                let resp = req.send().await.map_err(transport_error)?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.text().await.map_err(transport_error)?;
                if (200..300).contains(&status) {
                    Ok(Reply {
                        status,
                        headers,
                        body,
                    })
                } else {
                    Err(arm_error(status, &headers, &body))
                }
            })
            .await
    }

    async fn get_sku(
        &self,
        operation: &'static str,
        pool: &str,
        fresh: bool,
    ) -> ProviderResult<Sku> {
        if !fresh && let Some(s) = self.sets.get(pool) {
            return Ok(s);
        }
        let vmss = self.vmss(operation, pool)?;
        let reply = self
            .send(
                operation,
                "virtualMachineScaleSets.get",
                reqwest::Method::GET,
                &self.url(vmss, ""),
                None,
            )
            .await?;
        let set: Vmss = serde_json::from_str(&reply.body).map_err(|e| {
            ProviderError::other(operation, format!("VMSS {vmss}: unreadable answer: {e}"))
        })?;
        let sku = set
            .sku
            .ok_or_else(|| ProviderError::other(operation, format!("VMSS {vmss} has no sku")))?;
        self.sets.put(pool, sku.clone());
        Ok(sku)
    }

    async fn list_vms(&self, operation: &'static str, pool: &str) -> ProviderResult<Vec<Vm>> {
        let vmss = self.vmss(operation, pool)?;
        self.list_all(
            operation,
            "virtualMachineScaleSetVMs.list",
            self.url(vmss, "/virtualMachines"),
            &format!("VMSS {vmss}: unreadable VM list"),
        )
        .await
    }

    /// Every item of a paged ARM list, following `nextLink` only on our own endpoint (the
    /// token must not go elsewhere). `what` prefixes a decoding error.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        call: &'static str,
        mut url: String,
        what: &str,
    ) -> ProviderResult<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let reply = self
                .send(operation, call, reqwest::Method::GET, &url, None)
                .await?;
            let page: Page<T> = serde_json::from_str(&reply.body)
                .map_err(|e| ProviderError::other(operation, format!("{what}: {e}")))?;
            out.extend(page.value);
            match page.next_link {
                Some(next) if next.starts_with(self.config.endpoint.trim_end_matches('/')) => {
                    url = next
                }
                _ => return Ok(out),
            }
        }
    }

    /// Where to poll a long-running operation, from the answer that started it.
    fn lro(reply: &Reply) -> Option<Pending> {
        let header = |k: &str| {
            reply
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(url) = header("azure-asyncoperation") {
            return Some(Pending {
                url,
                azure_async: true,
            });
        }
        if reply.status == 202 {
            return header("location").map(|url| Pending {
                url,
                azure_async: false,
            });
        }
        None
    }

    /// Polls once: `Ok(true)` done, `Ok(false)` still running.
    async fn poll(&self, operation: &'static str, p: &Pending) -> ProviderResult<bool> {
        if !p
            .url
            .starts_with(self.config.endpoint.trim_end_matches('/'))
        {
            return Err(ProviderError::other(
                operation,
                "operation URL outside the ARM endpoint; not polled",
            ));
        }
        let reply = self
            .send(
                operation,
                "operations.get",
                reqwest::Method::GET,
                &p.url,
                None,
            )
            .await?;
        if !p.azure_async {
            return Ok(reply.status != 202);
        }
        let s: AsyncStatus = serde_json::from_str(&reply.body).map_err(|e| {
            ProviderError::other(operation, format!("unreadable operation status: {e}"))
        })?;
        match s.status.as_deref() {
            Some("Succeeded") => Ok(true),
            Some("Failed") | Some("Canceled") => {
                let code = s
                    .error
                    .as_ref()
                    .and_then(|e| e.code.clone())
                    .unwrap_or_default();
                let message = s
                    .error
                    .as_ref()
                    .and_then(|e| e.message.clone())
                    .unwrap_or_default();
                let kind = kind_for_code(&code, &message).unwrap_or(ProviderErrorKind::Other);
                Err(ProviderError::new(
                    kind,
                    operation,
                    format!("{code}: {}", redact(&message)),
                ))
            }
            _ => Ok(false),
        }
    }

    /// Waits for an operation up to the operation timeout. `Ok(Some(p))`: still running.
    async fn wait(&self, operation: &'static str, p: Pending) -> ProviderResult<Option<Pending>> {
        let deadline = Instant::now() + self.caller.policy.operation_timeout;
        loop {
            if self.poll(operation, &p).await? {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Ok(Some(p));
            }
            tokio::time::sleep(self.caller.policy.poll_interval).await;
        }
    }

    fn zone_name(&self, zone: &str) -> String {
        match &self.config.region {
            Some(r) => format!("{r}-{zone}"),
            None => zone.to_string(),
        }
    }
}

impl CloudProvider for AzureProvider {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn node_groups<'a>(
        &'a self,
        pools: &'a [NodePool],
    ) -> BoxFuture<'a, ProviderResult<Vec<NodeGroup>>> {
        async move {
            let mut out = Vec::new();
            for p in pools {
                let Ok(vmss) = self.vmss("node_groups", &p.name) else {
                    continue;
                };
                self.get_sku("node_groups", &p.name, true).await?;
                out.push(NodeGroup {
                    pool: p.name.clone(),
                    id: vmss.to_string(),
                    min_size: p.min_size,
                    max_size: p.max_size,
                });
            }
            Ok(out)
        }
        .boxed()
    }

    fn target_size<'a>(&'a self, pool: &'a NodePool) -> BoxFuture<'a, ProviderResult<u32>> {
        async move {
            let sku = self.get_sku("target_size", &pool.name, false).await?;
            Ok(u32::try_from(sku.capacity.unwrap_or(0)).unwrap_or(u32::MAX))
        }
        .boxed()
    }

    fn set_target_size<'a>(
        &'a self,
        pool: &'a NodePool,
        target: u32,
        _hints: &'a [LaunchHint],
    ) -> BoxFuture<'a, ProviderResult<TargetChange>> {
        async move {
            const OP: &str = "set_target_size";
            let sku = self.get_sku(OP, &pool.name, true).await?;
            let previous = u32::try_from(sku.capacity.unwrap_or(0)).unwrap_or(u32::MAX);
            if previous == target {
                return Ok(TargetChange { previous, target });
            }
            let vmss = self.vmss(OP, &pool.name)?;
            let body = json!({ "sku": { "name": sku.name, "tier": sku.tier, "capacity": target } });
            let reply = self.send(OP, "virtualMachineScaleSets.update", reqwest::Method::PATCH, &self.url(vmss, ""), Some(&body)).await?;
            self.sets.invalidate(&pool.name);
            if let Ok(mut s) = self.settled.lock() {
                s.remove(&pool.name);
            }
            if let Some(p) = Self::lro(&reply) {
                match self.wait(OP, p).await {
                    Ok(None) => {}
                    Ok(Some(still)) => {
                        // The capacity is set; provisioning goes on. launch_failures looks again.
                        if let Ok(mut pending) = self.pending.lock() {
                            pending.insert(pool.name.clone(), still);
                        }
                    }
                    Err(mut e) => {
                        e.instance_type = sku.name.clone();
                        return Err(e);
                    }
                }
            }
            tracing::info!(pool = %pool.name, vmss, from = previous, to = target, "VMSS capacity updated");
            Ok(TargetChange { previous, target })
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
            let vmss = self.vmss(OP, &pool.name)?;
            let ids: Vec<String> = instances
                .iter()
                .filter_map(|i| parse_provider_id(&i.provider_id))
                .filter(|(rg, set, _)| rg.eq_ignore_ascii_case(&self.config.resource_group) && set.eq_ignore_ascii_case(vmss))
                .map(|(_, _, id)| id)
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            let body = json!({ "instanceIds": ids });
            let result = self.send(OP, "virtualMachineScaleSets.deleteInstances", reqwest::Method::POST, &self.url(vmss, "/delete"), Some(&body)).await;
            self.sets.invalidate(&pool.name);
            if let Ok(mut s) = self.settled.lock() {
                s.remove(&pool.name);
            }
            let reply = match result {
                Ok(r) => r,
                // Instances already gone.
                Err(e) if e.kind == ProviderErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Some(p) = Self::lro(&reply)
                && let Some(still) = self.wait(OP, p).await?
            {
                tracing::info!(pool = %pool.name, url = %still.url, "VMSS delete still running; not waiting longer");
            }
            Ok(())
        }
        .boxed()
    }

    fn in_flight<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<InFlightInstance>>> {
        async move {
            const OP: &str = "in_flight";
            let capacity = self
                .get_sku(OP, &pool.name, false)
                .await?
                .capacity
                .unwrap_or(0);
            let settled = self
                .settled
                .lock()
                .ok()
                .and_then(|s| s.get(&pool.name).cloned());
            if settled.is_some_and(|s| {
                s.capacity == capacity && s.at.elapsed() < self.config.settled_recheck
            }) {
                return Ok(Vec::new());
            }
            let vms = self.list_vms(OP, &pool.name).await?;
            let state = |v: &Vm| {
                v.properties
                    .as_ref()
                    .and_then(|p| p.provisioning_state.clone())
                    .unwrap_or_default()
            };
            let creating: Vec<InFlightInstance> = vms
                .iter()
                .filter(|v| {
                    v.instance_id.is_some()
                        && matches!(state(v).as_str(), "Creating" | "Updating" | "")
                })
                .map(|v| InFlightInstance {
                    instance_type: v.sku.as_ref().and_then(|s| s.name.clone()),
                    zone: v.zones.first().map(|z| self.zone_name(z)),
                    requested_at: None,
                })
                .collect();
            let all_done = creating.is_empty() && vms.len() as u64 == capacity;
            if let Ok(mut s) = self.settled.lock() {
                if all_done {
                    s.insert(
                        pool.name.clone(),
                        Settled {
                            capacity,
                            at: Instant::now(),
                        },
                    );
                } else {
                    s.remove(&pool.name);
                }
            }
            Ok(creating)
        }
        .boxed()
    }

    fn launch_failures<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<ProviderError>>> {
        async move {
            const OP: &str = "launch_failures";
            let Some(p) = self
                .pending
                .lock()
                .ok()
                .and_then(|m| m.get(&pool.name).cloned())
            else {
                return Ok(Vec::new());
            };
            let outcome = self.poll(OP, &p).await;
            let done = !matches!(outcome, Ok(false));
            if done && let Ok(mut m) = self.pending.lock() {
                m.remove(&pool.name);
            }
            match outcome {
                Err(e)
                    if matches!(
                        e.kind,
                        ProviderErrorKind::InsufficientCapacity | ProviderErrorKind::Quota
                    ) =>
                {
                    let fresh = self
                        .reported
                        .lock()
                        .map(|mut r| r.insert(p.url.clone()))
                        .unwrap_or(false);
                    let mut e = e;
                    e.operation = "set_target_size";
                    e.instance_type = self.sets.get(&pool.name).and_then(|s| s.name);
                    Ok(if fresh { vec![e] } else { Vec::new() })
                }
                Err(e) => Err(e),
                Ok(_) => Ok(Vec::new()),
            }
        }
        .boxed()
    }

    fn instance_for_provider_id(&self, pool: &str, provider_id: &str) -> Option<InstanceRef> {
        let (rg, vmss, id) = parse_provider_id(provider_id)?;
        let ours = self.config.vm_scale_sets.get(pool)?;
        (rg.eq_ignore_ascii_case(&self.config.resource_group) && vmss.eq_ignore_ascii_case(ours))
            .then(|| InstanceRef {
                pool: pool.to_string(),
                id,
                provider_id: provider_id.to_string(),
            })
    }

    fn templates(&self, pool: &NodePool) -> Vec<InstanceTemplate> {
        // The catalogue first (it knows GPU counts for some clouds; for Azure it has prices
        // only), then the Resource SKUs shapes, in the pool's instance-type order.
        let from_catalog = self
            .catalog
            .as_ref()
            .map(|c| catalog_templates(c, pool))
            .unwrap_or_default();
        pool.instance_types
            .iter()
            .filter_map(|t| {
                from_catalog
                    .iter()
                    .find(|c| c.instance_type == *t)
                    .cloned()
                    .or_else(|| self.sku_template(t, pool))
            })
            .collect()
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
        let pid = provider_id("sub", "rg", "gpu-vmss", "12");
        assert_eq!(
            parse_provider_id(&pid),
            Some(("rg".into(), "gpu-vmss".into(), "12".into()))
        );
        // AKS lower-cases the resource group segment name.
        let lower = pid.replace("resourceGroups", "resourcegroups");
        assert_eq!(parse_provider_id(&lower).map(|p| p.2), Some("12".into()));
        assert_eq!(parse_provider_id("aws:///z/i-1"), None);
    }

    #[test]
    fn arm_codes_classify() {
        assert_eq!(
            kind_for_code("SkuNotAvailable", ""),
            Some(ProviderErrorKind::InsufficientCapacity)
        );
        assert_eq!(
            kind_for_code("AllocationFailed", ""),
            Some(ProviderErrorKind::InsufficientCapacity)
        );
        assert_eq!(
            kind_for_code(
                "OperationNotAllowed",
                "exceeds approved Total Regional Cores quota"
            ),
            Some(ProviderErrorKind::Quota)
        );
        assert_eq!(
            kind_for_code("AuthorizationFailed", ""),
            Some(ProviderErrorKind::Auth)
        );
        assert_eq!(kind_for_code("Whatever", ""), None);
    }
}
