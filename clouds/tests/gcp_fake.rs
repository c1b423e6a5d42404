//! The GCP provider against a loopback fake of exactly the Compute Engine v1 endpoints it uses
//! (instanceGroupManagers get / resize / deleteInstances / listManagedInstances, zonal and
//! regional, and zone/region operations) and of the metadata server's token endpoint. The fake
//! checks the bearer token and the request shapes, so a wrong call fails the test.

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
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_clouds::gcp::{GcpConfig, GcpProvider};
use gpu_autoscaler_clouds::{CallPolicy, CloudMetrics};
use gpu_autoscaler_scaler::engine::testing::node_pool;
use gpu_autoscaler_scaler::provider::{CloudProvider, ProviderErrorKind};
use serde_json::{Value, json};

const PROJECT: &str = "gpu-proj";
const TOKEN: &str = "ya29.fake-metadata-token";

#[derive(Debug, Clone)]
struct Member {
    name: String,
    zone: String,
    action: &'static str,
    errors: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Mig {
    target: u32,
    members: Vec<Member>,
    next: u32,
}

#[derive(Debug, Default)]
struct Fake {
    migs: BTreeMap<String, Mig>,
    /// op name -> (polls left before DONE, error code)
    ops: BTreeMap<String, (u32, Option<String>)>,
    next_op: u32,
    throttle: u32,
    stockout: bool,
    bad_requests: Vec<String>,
    token_requests: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    (status, [("retry-after", "1")], Json(body)).into_response()
}

/// Auth and throttling, checked before every Compute request.
fn gate(fake: &Shared, headers: &HeaderMap) -> Option<Response> {
    let mut f = fake.lock().ok()?;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") {
        return Some(google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        ));
    }
    if f.throttle > 0 {
        f.throttle -= 1;
        return Some(google_error(
            StatusCode::FORBIDDEN,
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ));
    }
    None
}

fn key(scope: &str, loc: &str, name: &str) -> String {
    format!("{scope}/{loc}/{name}")
}

fn zone_of(scope: &str, loc: &str, n: u32) -> String {
    if scope == "zones" {
        loc.to_string()
    } else {
        format!("{loc}-{}", ["a", "b", "c"][(n % 3) as usize])
    }
}

fn new_op(f: &mut Fake, scope: &str, loc: &str, kind: &str, error: Option<String>) -> Value {
    f.next_op += 1;
    let name = format!("operation-{}", f.next_op);
    f.ops.insert(name.clone(), (1, error));
    let mut op = json!({"kind": "compute#operation", "name": name, "operationType": kind, "status": "RUNNING", "progress": 0});
    op[if scope == "zones" { "zone" } else { "region" }] = json!(format!(
        "https://www.googleapis.com/compute/v1/projects/{PROJECT}/{scope}/{loc}"
    ));
    op
}

async fn igm_get(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path((project, scope, loc, name)): Path<(String, String, String, String)>,
) -> Response {
    if let Some(r) = gate(&fake, &headers) {
        return r;
    }
    let Ok(f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(m) = f
        .migs
        .get(&key(&scope, &loc, &name))
        .filter(|_| project == PROJECT)
    else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "The resource was not found",
        );
    };
    let creating = m.members.iter().filter(|x| x.action == "CREATING").count();
    let none = m.members.iter().filter(|x| x.action == "NONE").count();
    let deleting = m.members.iter().filter(|x| x.action == "DELETING").count();
    Json(json!({
        "kind": "compute#instanceGroupManager", "name": name, "targetSize": m.target,
        "currentActions": {"creating": creating, "none": none, "deleting": deleting, "recreating": 0, "verifying": 0,
            "abandoning": 0, "refreshing": 0, "restarting": 0, "creatingWithoutRetries": 0},
        "status": {"isStable": creating == 0 && deleting == 0},
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct SizeQuery {
    size: Option<String>,
}

async fn igm_action(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path((project, scope, loc, name, action)): Path<(String, String, String, String, String)>,
    Query(q): Query<SizeQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = gate(&fake, &headers) {
        return r;
    }
    let Ok(mut guard) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let f = &mut *guard;
    let k = key(&scope, &loc, &name);
    if project != PROJECT || !f.migs.contains_key(&k) {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "The resource was not found",
        );
    }
    let stockout = f.stockout;
    match action.as_str() {
        "resize" => {
            let Some(size) = q.size.and_then(|s| s.parse::<u32>().ok()) else {
                f.bad_requests.push("resize without a size".into());
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "Required parameter: size",
                );
            };
            let Some(m) = f.migs.get_mut(&k) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            m.target = size;
            while (m.members.len() as u32) < size {
                m.next += 1;
                let zone = zone_of(&scope, &loc, m.next);
                let errors = if stockout {
                    vec![(
                        "ZONE_RESOURCE_POOL_EXHAUSTED".to_string(),
                        format!(
                            "The zone '{zone}' does not have enough resources available to fulfill the request."
                        ),
                    )]
                } else {
                    Vec::new()
                };
                m.members.push(Member {
                    name: format!("{name}-{:04}", m.next),
                    zone,
                    action: if stockout { "CREATING" } else { "NONE" },
                    errors,
                });
            }
            while (m.members.len() as u32) > size {
                m.members.pop();
            }
            Json(new_op(
                f,
                &scope,
                &loc,
                "compute.instanceGroupManagers.resize",
                None,
            ))
            .into_response()
        }
        "deleteInstances" => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                f.bad_requests.push("deleteInstances body not JSON".into());
                return StatusCode::BAD_REQUEST.into_response();
            };
            let urls: Vec<String> = v["instances"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if urls.is_empty()
                || v["skipInstancesOnValidationError"] != json!(true)
                || urls.iter().any(|u| !u.starts_with("zones/"))
            {
                f.bad_requests.push(format!("deleteInstances body {v}"));
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "Invalid value for field 'instances'",
                );
            }
            let Some(m) = f.migs.get_mut(&k) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            for u in &urls {
                if let Some(pos) = m
                    .members
                    .iter()
                    .position(|x| u == &format!("zones/{}/instances/{}", x.zone, x.name))
                {
                    m.members.remove(pos);
                    m.target = m.target.saturating_sub(1);
                }
            }
            Json(new_op(
                f,
                &scope,
                &loc,
                "compute.instanceGroupManagers.deleteInstances",
                None,
            ))
            .into_response()
        }
        "listManagedInstances" => {
            let Some(m) = f.migs.get(&k) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let items: Vec<Value> = m
                .members
                .iter()
                .map(|x| {
                    let mut v = json!({
                        "instance": format!("https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{}/instances/{}", x.zone, x.name),
                        "name": x.name, "currentAction": x.action,
                        "instanceStatus": if x.action == "NONE" { "RUNNING" } else { "PROVISIONING" },
                    });
                    if !x.errors.is_empty() {
                        v["lastAttempt"] = json!({"errors": {"errors": x.errors.iter().map(|(c, m)| json!({"code": c, "message": m})).collect::<Vec<_>>()}});
                    }
                    v
                })
                .collect();
            Json(json!({"managedInstances": items})).into_response()
        }
        other => {
            f.bad_requests.push(format!("unexpected action {other}"));
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

async fn op_get(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path((_project, scope, loc, op)): Path<(String, String, String, String)>,
) -> Response {
    if let Some(r) = gate(&fake, &headers) {
        return r;
    }
    let Ok(mut f) = fake.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(entry) = f.ops.get_mut(&op) else {
        return google_error(StatusCode::NOT_FOUND, "notFound", "operation not found");
    };
    let done = entry.0 == 0;
    entry.0 = entry.0.saturating_sub(1);
    let mut v = json!({"kind": "compute#operation", "name": op, "status": if done { "DONE" } else { "RUNNING" }});
    v[if scope == "zones" { "zone" } else { "region" }] = json!(loc);
    if done && let Some(code) = &entry.1 {
        v["error"] = json!({"errors": [{"code": code, "message": "failed"}]});
    }
    Json(v).into_response()
}

async fn mds_token(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return StatusCode::FORBIDDEN.into_response();
    }
    if let Ok(mut f) = fake.lock() {
        f.token_requests += 1;
    }
    Json(json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

async fn start_fake(fake: Shared) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let app = axum::Router::new()
        .route(
            "/compute/v1/projects/{project}/{scope}/{loc}/instanceGroupManagers/{name}",
            get(igm_get),
        )
        .route(
            "/compute/v1/projects/{project}/{scope}/{loc}/instanceGroupManagers/{name}/{action}",
            post(igm_action),
        )
        .route(
            "/compute/v1/projects/{project}/{scope}/{loc}/operations/{op}",
            get(op_get),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(mds_token),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

fn fake_with_migs() -> Shared {
    let mut f = Fake::default();
    f.migs
        .insert(key("zones", "us-central1-a", "gpu-zonal"), Mig::default());
    f.migs.insert(
        key("regions", "us-central1", "gpu-regional"),
        Mig::default(),
    );
    Arc::new(Mutex::new(f))
}

fn zonal_pool() -> NodePool {
    node_pool(
        "zonal",
        CapacityType::OnDemand,
        0,
        4,
        &["a2-highgpu-1g"],
        &["us-central1-a"],
    )
}

fn regional_pool() -> NodePool {
    node_pool(
        "regional",
        CapacityType::Spot,
        0,
        4,
        &["a2-highgpu-1g"],
        &["us-central1-a", "us-central1-b"],
    )
}

async fn provider(
    url: &str,
    metrics: &CloudMetrics,
    cache: Duration,
) -> Result<GcpProvider, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = GcpConfig::from_settings(&serde_json::from_value(json!({
        "projectID": PROJECT, "region": "us-central1",
        "instanceGroups": {"zonal": "gpu-zonal", "regional": "gpu-regional"},
    }))?);
    c.endpoint = Some(url.to_string());
    c.metadata_endpoint = Some(url.to_string());
    c.call_policy = CallPolicy::fast();
    c.cache_ttl = cache;
    Ok(GcpProvider::new(c, metrics.clone()).await?)
}

fn members(fake: &Shared, k: &str) -> Vec<CloudInstance> {
    fake.lock()
        .map(|f| {
            f.migs
                .get(k)
                .map(|m| {
                    m.members
                        .iter()
                        .filter(|x| x.action == "NONE")
                        .map(|x| CloudInstance {
                            provider_id: gpu_autoscaler_clouds::gcp::provider_id(
                                PROJECT, &x.zone, &x.name,
                            ),
                            instance_type: "a2-highgpu-1g".into(),
                            zone: Some(x.zone.clone()),
                        })
                        .collect()
                })
                .unwrap_or_default()
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
async fn zonal_and_regional_migs_resize_list_and_delete() -> TestResult {
    let fake = fake_with_migs();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let p = provider(&url, &metrics, Duration::from_secs(2)).await?;

    for (pool, k) in [
        (zonal_pool(), "zones/us-central1-a/gpu-zonal"),
        (regional_pool(), "regions/us-central1/gpu-regional"),
    ] {
        assert_eq!(p.target_size(&pool).await?, 0);
        let change = p.set_target_size(&pool, 3, &[]).await?;
        assert_eq!((change.previous, change.target), (0, 3));
        let resizes = calls(&metrics, "instanceGroupManagers.resize");
        assert_eq!(
            p.set_target_size(&pool, 3, &[]).await?.added(),
            0,
            "repeat is a no-op"
        );
        assert_eq!(calls(&metrics, "instanceGroupManagers.resize"), resizes);
        let list = members(&fake, k);
        assert_eq!(list.len(), 3);
        let inst = p
            .instance_for_provider_id(&pool.name, &list[1].provider_id)
            .ok_or("providerID")?;
        p.delete_instances(&pool, std::slice::from_ref(&inst))
            .await?;
        let left = members(&fake, k);
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|i| i.provider_id != list[1].provider_id));
        assert_eq!(p.target_size(&pool).await?, 2);
        assert!(p.in_flight(&pool).await?.is_empty());
    }
    // Operations were awaited (one poll each until DONE).
    assert!(calls(&metrics, "operations.get") >= 4);
    let f = fake.lock().map_err(|_| "lock")?;
    assert!(f.bad_requests.is_empty(), "{:?}", f.bad_requests);
    assert!(
        f.token_requests >= 1,
        "the token came from the metadata server"
    );
    Ok(())
}

#[tokio::test]
async fn throttling_auth_and_stockouts_are_classified() -> TestResult {
    let fake = fake_with_migs();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let p = provider(&url, &metrics, Duration::from_millis(1)).await?;

    fake.lock().map_err(|_| "lock")?.throttle = 2;
    let t = Instant::now();
    assert_eq!(p.target_size(&zonal_pool()).await?, 0);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(calls(&metrics, "instanceGroupManagers.get"), 3);

    // Stockout: the resize succeeds, the instances stay CREATING with the zone's error.
    fake.lock().map_err(|_| "lock")?.stockout = true;
    p.set_target_size(&zonal_pool(), 2, &[]).await?;
    let flying = p.in_flight(&zonal_pool()).await?;
    assert_eq!(flying.len(), 2);
    assert_eq!(flying[0].zone.as_deref(), Some("us-central1-a"));
    let failures = p.launch_failures(&zonal_pool()).await?;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|e| e.kind == ProviderErrorKind::InsufficientCapacity
                && e.zone.as_deref() == Some("us-central1-a"))
    );
    assert!(
        p.launch_failures(&zonal_pool()).await?.is_empty(),
        "reported once"
    );

    // A MIG that does not exist.
    let mut ghost = zonal_pool();
    ghost.name = "regional".into();
    ghost.availability_zones = vec!["us-central1-a".into()];
    fake.lock()
        .map_err(|_| "lock")?
        .migs
        .remove("zones/us-central1-a/gpu-regional");
    let e = p
        .target_size(&ghost)
        .await
        .err()
        .ok_or("expected not found")?;
    assert_eq!(e.kind, ProviderErrorKind::NotFound);

    // A wrong token (metadata server handing out something the API rejects): Auth, not retried.
    let mut c = GcpConfig::from_settings(&serde_json::from_value(
        json!({"projectID": PROJECT, "instanceGroups": {"zonal": "gpu-zonal"}}),
    )?);
    c.endpoint = Some(url.clone());
    c.metadata_endpoint = Some(format!("{url}/nowhere"));
    c.call_policy = CallPolicy::fast();
    let bad_metrics = CloudMetrics::new();
    let bad = GcpProvider::new(c, bad_metrics.clone()).await?;
    let e = bad
        .target_size(&zonal_pool())
        .await
        .err()
        .ok_or("expected auth error")?;
    assert_eq!(e.kind, ProviderErrorKind::Auth, "{e}");
    assert_eq!(bad_metrics.total_calls(), 1, "no retry storm");
    assert!(e.message.contains("Workload"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn engine_scales_a_mig_up_and_down() -> TestResult {
    let fake = fake_with_migs();
    let url = start_fake(fake.clone()).await?;
    let metrics = CloudMetrics::new();
    let p: Arc<dyn CloudProvider> =
        Arc::new(provider(&url, &metrics, Duration::from_millis(300)).await?);
    let f2 = fake.clone();
    let list = move || {
        let f = f2.clone();
        async move { members(&f, "zones/us-central1-a/gpu-zonal") }.boxed()
    };
    let figures = common::scale_up_then_down(p, &metrics, &zonal_pool(), None, &list).await?;
    println!("gcp calls per reconcile: {figures:?}");
    assert_eq!(figures.steady_reconcile, 1, "{figures:?}");
    let f = fake.lock().map_err(|_| "lock")?;
    assert!(f.bad_requests.is_empty(), "{:?}", f.bad_requests);
    Ok(())
}
