//! The Azure provider against a loopback fake of exactly the ARM endpoints it uses (VMSS get,
//! PATCH sku.capacity, POST delete, list VMs, the Resource SKUs list) with both long-running-operation styles
//! (`Azure-AsyncOperation` for the PATCH, `Location` for the delete) and ARM error bodies. The
//! fake checks the bearer token, the api-version and the request bodies.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{CloudInstance, TestResult};
use futures::FutureExt;
use futures::future::BoxFuture;
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_clouds::azure::{
    API_VERSION, AzureConfig, AzureProvider, SKUS_API_VERSION, TokenSource,
};
use gpu_autoscaler_clouds::{CallPolicy, CloudMetrics};
use gpu_autoscaler_scaler::engine::testing::node_pool;
use gpu_autoscaler_scaler::provider::{CloudProvider, ProviderErrorKind};
use serde_json::{Value, json};

const SUB: &str = "00000000-1111-2222-3333-444444444444";
const RG: &str = "gpu-cluster";
const VMSS: &str = "gpu-od-vmss";
const SKU: &str = "Standard_NC6s_v3";
const TOKEN: &str = "eyJ0eXAiOiJKV1Qi.fake-arm-token";

#[derive(Debug, Clone)]
struct Vm {
    id: u32,
    state: &'static str,
}

#[derive(Debug, Default)]
struct Fake {
    base: String,
    capacity: u32,
    vms: Vec<Vm>,
    next_vm: u32,
    /// async operation id -> (polls left, final error code)
    ops: BTreeMap<String, (u32, Option<&'static str>)>,
    next_op: u32,
    throttle: u32,
    /// The next scale-out fails at the end with this code; `hold` keeps it InProgress that long.
    fail_with: Option<&'static str>,
    hold: u32,
    bad_requests: Vec<String>,
    /// The Resource SKUs list answers 403 (an identity without `Microsoft.Compute/skus/read`).
    skus_forbidden: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("retry-after", "1")],
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

fn gate(fake: &Shared, headers: &HeaderMap, q: &ApiVersion) -> Option<Response> {
    let mut f = fake.lock().ok()?;
    if q.api_version.as_deref() != Some(API_VERSION) {
        f.bad_requests
            .push(format!("api-version {:?}", q.api_version));
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "bad api-version",
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") {
        return Some(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        ));
    }
    if f.throttle > 0 {
        f.throttle -= 1;
        return Some(arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled.",
        ));
    }
    None
}

fn vmss_json(f: &Fake) -> Value {
    json!({
        "id": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}"),
        "name": VMSS, "type": "Microsoft.Compute/virtualMachineScaleSets", "location": "eastus",
        "sku": {"name": SKU, "tier": "Standard", "capacity": f.capacity},
        "properties": {"provisioningState": "Succeeded", "orchestrationMode": "Uniform"},
    })
}

async fn vmss_get(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
    Path((s, rg, name)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    if s != SUB || rg != RG || name != VMSS {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The Resource was not found.",
        );
    }
    let Ok(f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Json(vmss_json(&f)).into_response()
}

async fn vmss_patch(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
    Path((s, rg, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    if s != SUB || rg != RG || name != VMSS {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The Resource was not found.",
        );
    }
    let Ok(mut guard) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let f = &mut *guard;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(cap) = v["sku"]["capacity"].as_u64() else {
        f.bad_requests.push(format!("PATCH body {v}"));
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "sku.capacity missing",
        );
    };
    if v["sku"]["name"] != json!(SKU) || v.as_object().is_some_and(|o| o.len() != 1) {
        f.bad_requests
            .push(format!("PATCH body changes more than the capacity: {v}"));
    }
    let fail = f.fail_with.take();
    if fail.is_none() {
        while (f.vms.len() as u64) < cap {
            f.next_vm += 1;
            f.vms.push(Vm {
                id: f.next_vm,
                state: "Creating",
            });
        }
    }
    f.capacity = cap as u32;
    f.next_op += 1;
    let op = format!("op-{}", f.next_op);
    f.ops.insert(op.clone(), (1 + f.hold, fail));
    let base = f.base.clone();
    let async_url = format!(
        "{base}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operations/{op}?api-version={API_VERSION}"
    );
    let location = format!(
        "{base}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operationResults/{op}?api-version={API_VERSION}"
    );
    (
        StatusCode::OK,
        [("azure-asyncoperation", async_url), ("location", location)],
        Json(vmss_json(f)),
    )
        .into_response()
}

async fn vmss_delete(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
    Path((_s, _rg, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    let Ok(mut guard) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let f = &mut *guard;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ids: Vec<String> = v["instanceIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if name != VMSS || ids.is_empty() {
        f.bad_requests.push(format!("delete body {v}"));
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "instanceIds required",
        );
    }
    for id in &ids {
        if let Some(pos) = f.vms.iter().position(|vm| vm.id.to_string() == *id) {
            f.vms.remove(pos);
            f.capacity = f.capacity.saturating_sub(1);
        }
    }
    f.next_op += 1;
    let op = format!("op-{}", f.next_op);
    f.ops.insert(op.clone(), (1, None));
    let location = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operationResults/{op}?api-version={API_VERSION}",
        f.base
    );
    (StatusCode::ACCEPTED, [("location", location)]).into_response()
}

async fn vms_list(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    let Ok(f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let value: Vec<Value> = f
        .vms
        .iter()
        .map(|vm| {
            json!({
                "id": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}/virtualMachines/{}", vm.id),
                "name": format!("{VMSS}_{}", vm.id), "instanceId": vm.id.to_string(), "zones": ["1"],
                "sku": {"name": SKU, "tier": "Standard"},
                "properties": {"provisioningState": vm.state, "latestModelApplied": true},
            })
        })
        .collect();
    Json(json!({"value": value})).into_response()
}

/// Advances an operation by one poll; when it ends, its VMs are provisioned (or not).
fn step_op(f: &mut Fake, op: &str) -> Option<(bool, Option<&'static str>)> {
    let entry = f.ops.get_mut(op)?;
    if entry.0 > 0 {
        entry.0 -= 1;
        return Some((false, None));
    }
    let err = entry.1;
    if err.is_none() {
        for vm in f.vms.iter_mut() {
            vm.state = "Succeeded";
        }
    }
    Some((true, err))
}

async fn async_op(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
    Path((_s, _loc, op)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    let Ok(mut f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match step_op(&mut f, &op) {
        None => arm_error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
        Some((false, _)) => Json(json!({"name": op, "status": "InProgress", "startTime": "2025-06-01T12:00:00Z"})).into_response(),
        Some((true, None)) => Json(json!({"name": op, "status": "Succeeded"})).into_response(),
        Some((true, Some(code))) => Json(json!({"name": op, "status": "Failed",
            "error": {"code": code, "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region."}})).into_response(),
    }
}

async fn op_result(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ApiVersion>,
    Path((_s, _loc, op)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = gate(&fake, &headers, &q) {
        return r;
    }
    let Ok(mut f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match step_op(&mut f, &op) {
        None => arm_error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
        Some((false, _)) => {
            let here = format!(
                "{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operationResults/{op}?api-version={API_VERSION}",
                f.base
            );
            (
                StatusCode::ACCEPTED,
                [("location", here), ("retry-after", "0".into())],
            )
                .into_response()
        }
        Some((true, _)) => StatusCode::OK.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SkusQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    #[serde(rename = "$filter")]
    filter: Option<String>,
    #[serde(rename = "$skiptoken")]
    skip_token: Option<String>,
}

/// `GET /subscriptions/{s}/providers/Microsoft.Compute/skus`, two pages, shaped like the
/// documented `ResourceSkusResult` (capabilities as name/value strings, restrictions). The
/// sizes' figures are Microsoft's published ones for NCv3 and NC A100 v4.
async fn skus_list(
    State(fake): State<Shared>,
    Path(s): Path<String>,
    Query(q): Query<SkusQuery>,
    headers: HeaderMap,
) -> Response {
    let mut f = match fake.lock() {
        Ok(f) => f,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if q.api_version.as_deref() != Some(SKUS_API_VERSION)
        || q.filter.as_deref() != Some("location eq 'eastus'")
        || s != SUB
    {
        f.bad_requests.push(format!(
            "skus: api-version {:?} filter {:?} subscription {s}",
            q.api_version, q.filter
        ));
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "bad skus request",
        );
    }
    if auth != format!("Bearer {TOKEN}") || f.skus_forbidden {
        return arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Compute/skus/read'.",
        );
    }
    let caps = |v: &str, mem: &str, gpus: Option<&str>| {
        let mut c = vec![
            json!({"name": "vCPUs", "value": v}),
            json!({"name": "MemoryGB", "value": mem}),
            json!({"name": "MaxResourceVolumeMB", "value": "344064"}),
        ];
        if let Some(g) = gpus {
            c.push(json!({"name": "GPUs", "value": g}));
        }
        c
    };
    let vm = |name: &str, caps: Vec<Value>, restrictions: Value| {
        json!({"resourceType": "virtualMachines", "name": name, "tier": "Standard",
               "locations": ["eastus"],
               "locationInfo": [{"location": "eastus", "zones": ["1", "2", "3"]}],
               "capabilities": caps, "restrictions": restrictions})
    };
    if q.skip_token.as_deref() == Some("2") {
        return Json(json!({"value": [
            vm("Standard_NC12s_v3", caps("12", "224", Some("2")), json!([])),
        ]}))
        .into_response();
    }
    Json(json!({
        "value": [
            vm(SKU, caps("6", "112", Some("1")), json!([])),
            // Listed but not for this subscription here: must not become a template.
            vm("Standard_NC24ads_A100_v4", caps("24", "220", Some("1")), json!([{
                "type": "Location", "values": ["eastus"],
                "restrictionInfo": {"locations": ["eastus"]},
                "reasonCode": "NotAvailableForSubscription"}])),
            // No GPUs; and a non-VM resource type.
            vm("Standard_D4s_v3", caps("4", "16", None), json!([])),
            {"resourceType": "disks", "name": "Premium_LRS", "locations": ["eastus"],
             "capabilities": [], "restrictions": []},
        ],
        "nextLink": format!("{}/subscriptions/{SUB}/providers/Microsoft.Compute/skus?api-version={SKUS_API_VERSION}&$filter=location%20eq%20%27eastus%27&$skiptoken=2", f.base),
    }))
    .into_response()
}

async fn start_fake(fake: Shared) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let set = "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}";
    let app = axum::Router::new()
        .route(set, get(vmss_get).patch(vmss_patch))
        .route(&format!("{set}/delete"), post(vmss_delete))
        .route(&format!("{set}/virtualMachines"), get(vms_list))
        .route(
            "/subscriptions/{s}/providers/Microsoft.Compute/skus",
            get(skus_list),
        )
        .route(
            "/subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/operations/{op}",
            get(async_op),
        )
        .route(
            "/subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/operationResults/{op}",
            get(op_result),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    fake.lock().map_err(|_| "lock")?.base = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

struct FixedToken(&'static str);

impl TokenSource for FixedToken {
    fn token(&self) -> BoxFuture<'_, Result<String, String>> {
        let t = self.0.to_string();
        async move { Ok(t) }.boxed()
    }
}

fn pool() -> NodePool {
    node_pool(
        "od-pool",
        CapacityType::OnDemand,
        0,
        4,
        &[SKU],
        &["eastus-1"],
    )
}

fn config(url: &str, cache: Duration) -> Result<AzureConfig, serde_json::Error> {
    let mut c = AzureConfig::from_settings(&serde_json::from_value(json!({
        "subscriptionID": SUB, "resourceGroup": RG, "region": "eastus", "vmScaleSets": {"od-pool": VMSS},
    }))?);
    c.endpoint = url.to_string();
    c.call_policy = CallPolicy::fast();
    c.cache_ttl = cache;
    Ok(c)
}

fn instances(fake: &Shared) -> Vec<CloudInstance> {
    fake.lock()
        .map(|f| {
            f.vms
                .iter()
                .filter(|vm| vm.state == "Succeeded")
                .map(|vm| CloudInstance {
                    provider_id: gpu_autoscaler_clouds::azure::provider_id(
                        SUB,
                        RG,
                        VMSS,
                        &vm.id.to_string(),
                    ),
                    instance_type: SKU.into(),
                    zone: Some("eastus-1".into()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn calls(metrics: &CloudMetrics, call: &str) -> u64 {
    metrics
        .call_counts()
        .iter()
        .filter(|((_, c), _)| *c == call)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn vmss_capacity_delete_and_list_with_both_lro_styles() -> TestResult {
    let fake: Shared = Arc::default();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let p = AzureProvider::new(
        config(&url, Duration::from_millis(1))?,
        Arc::new(FixedToken(TOKEN)),
        metrics.clone(),
    )?;

    assert_eq!(p.target_size(&pool()).await?, 0);
    let change = p.set_target_size(&pool(), 2, &[]).await?;
    assert_eq!((change.previous, change.target), (0, 2));
    assert!(
        calls(&metrics, "operations.get") >= 2,
        "Azure-AsyncOperation polled until Succeeded"
    );
    assert_eq!(p.set_target_size(&pool(), 2, &[]).await?.added(), 0);
    assert_eq!(
        calls(&metrics, "virtualMachineScaleSets.update"),
        1,
        "repeat is a no-op"
    );
    let vms = instances(&fake);
    assert_eq!(vms.len(), 2);
    assert!(p.in_flight(&pool()).await?.is_empty());

    let inst = p
        .instance_for_provider_id("od-pool", &vms[0].provider_id)
        .ok_or("providerID")?;
    // AKS writes the resource group segment in lower case.
    assert!(
        p.instance_for_provider_id(
            "od-pool",
            &vms[0]
                .provider_id
                .replace("resourceGroups", "resourcegroups")
        )
        .is_some()
    );
    let polls = calls(&metrics, "operations.get");
    p.delete_instances(&pool(), std::slice::from_ref(&inst))
        .await?;
    assert!(
        calls(&metrics, "operations.get") > polls,
        "Location polled until done"
    );
    let left = instances(&fake);
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].provider_id, vms[0].provider_id);
    assert_eq!(p.target_size(&pool()).await?, 1);
    let f = fake.lock().map_err(|_| "lock")?;
    assert!(f.bad_requests.is_empty(), "{:?}", f.bad_requests);
    Ok(())
}

#[tokio::test]
async fn throttling_auth_and_allocation_failures() -> TestResult {
    let fake: Shared = Arc::default();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let mut cfg = config(&url, Duration::from_millis(1))?;
    cfg.call_policy.operation_timeout = Duration::from_millis(300);
    let p = AzureProvider::new(cfg.clone(), Arc::new(FixedToken(TOKEN)), metrics.clone())?;

    fake.lock().map_err(|_| "lock")?.throttle = 2;
    let t = Instant::now();
    assert_eq!(p.target_size(&pool()).await?, 0);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(calls(&metrics, "virtualMachineScaleSets.get"), 3);

    // Allocation fails at the end of the operation, while we wait: the error comes back.
    fake.lock().map_err(|_| "lock")?.fail_with = Some("AllocationFailed");
    let e = p
        .set_target_size(&pool(), 1, &[])
        .await
        .err()
        .ok_or("expected capacity error")?;
    assert_eq!(e.kind, ProviderErrorKind::InsufficientCapacity, "{e}");
    assert_eq!(e.instance_type.as_deref(), Some(SKU));

    // ... and after we stopped waiting: launch_failures reports it, once.
    {
        let mut f = fake.lock().map_err(|_| "lock")?;
        f.fail_with = Some("SkuNotAvailable");
        f.hold = 1000;
    }
    p.set_target_size(&pool(), 2, &[]).await?;
    assert!(
        p.launch_failures(&pool()).await?.is_empty(),
        "still running"
    );
    if let Some(op) = fake.lock().map_err(|_| "lock")?.ops.values_mut().last() {
        op.0 = 0;
    }
    let failures = p.launch_failures(&pool()).await?;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].kind, ProviderErrorKind::InsufficientCapacity);
    assert!(
        p.launch_failures(&pool()).await?.is_empty(),
        "reported once"
    );

    // A rejected token: Auth, one request, actionable, token not echoed.
    let bad_metrics = CloudMetrics::new();
    let bad = AzureProvider::new(
        cfg,
        Arc::new(FixedToken("eyJ.wrong-token-value")),
        bad_metrics.clone(),
    )?;
    let e = bad
        .target_size(&pool())
        .await
        .err()
        .ok_or("expected auth error")?;
    assert_eq!(e.kind, ProviderErrorKind::Auth);
    assert_eq!(bad_metrics.total_calls(), 1);
    assert!(
        e.message.contains("Virtual Machine Contributor")
            && !e.message.contains("wrong-token-value"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn engine_scales_a_vmss_up_and_down() -> TestResult {
    let fake: Shared = Arc::default();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    // Scale from zero: the node shape comes from the Resource SKUs API, not from the test.
    let az = AzureProvider::new(
        config(&url, Duration::from_millis(300))?,
        Arc::new(FixedToken(TOKEN)),
        metrics.clone(),
    )?;
    az.load_vm_sizes().await?;
    let p: Arc<dyn CloudProvider> = Arc::new(az);
    let f2 = fake.clone();
    let list = move || {
        let f = f2.clone();
        async move { instances(&f) }.boxed()
    };
    let figures = common::scale_up_then_down(p, &metrics, &pool(), None, &list).await?;
    println!("azure calls per reconcile: {figures:?}");
    assert!(figures.steady_reconcile <= 2, "{figures:?}");
    let f = fake.lock().map_err(|_| "lock")?;
    assert!(f.bad_requests.is_empty(), "{:?}", f.bad_requests);
    Ok(())
}

#[tokio::test]
async fn vm_sizes_from_resource_skus_become_templates() -> TestResult {
    let fake: Shared = Arc::default();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let p = AzureProvider::new(
        config(&url, Duration::from_millis(300))?,
        Arc::new(FixedToken(TOKEN)),
        metrics.clone(),
    )?;
    let mut pool = pool();
    pool.instance_types = vec![
        "Standard_NC12s_v3".into(),
        "Standard_NC24ads_A100_v4".into(),
        SKU.into(),
        "Standard_D4s_v3".into(),
    ];
    // Before loading, the price-only catalogue gives no templates.
    assert!(p.templates(&pool).is_empty());
    // Both pages are read; only unrestricted GPU VM sizes are kept.
    assert_eq!(p.load_vm_sizes().await?, 2);
    assert_eq!(calls(&metrics, "resourceSkus.list"), 2);
    let t = p.templates(&pool);
    let names: Vec<&str> = t.iter().map(|t| t.instance_type.as_str()).collect();
    assert_eq!(
        names,
        ["Standard_NC12s_v3", SKU],
        "pool order, restricted and CPU sizes left out"
    );
    assert_eq!(t[0].gpus, 2);
    assert_eq!(t[0].cpu_millis, 12_000);
    assert_eq!(t[0].memory_bytes, 224 * 1024 * 1024 * 1024);
    assert_eq!(t[0].gpu_resource, "nvidia.com/gpu");
    assert_eq!(t[0].zones, vec!["eastus-1".to_string()]);
    // Prices come from the bundled Azure table (eastus, pay-as-you-go Linux).
    assert_eq!(t[0].price_per_hour, Some(6.12));
    assert_eq!(t[1].gpus, 1);
    assert_eq!(t[1].price_per_hour, Some(3.06));

    // An identity without skus/read: a clear Auth error, and what was loaded stays.
    fake.lock().map_err(|_| "lock")?.skus_forbidden = true;
    let e = p.load_vm_sizes().await.expect_err("forbidden");
    assert_eq!(e.kind, ProviderErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("skus/read"), "{e}");
    assert_eq!(p.templates(&pool).len(), 2);
    let f = fake.lock().map_err(|_| "lock")?;
    assert!(f.bad_requests.is_empty(), "{:?}", f.bad_requests);
    Ok(())
}
