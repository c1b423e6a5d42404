//! The AWS provider against moto (`moto_server` from scripts/install-python-deps.sh), with a
//! small fault-injecting proxy in front of it for throttling, auth and capacity failures.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::config::{Credentials, Region};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{CloudInstance, TestResult, free_port};
use futures::FutureExt;
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_api::{CapacityType, keys};
use gpu_autoscaler_clouds::aws::{AwsConfig, AwsProvider};
use gpu_autoscaler_clouds::{CallPolicy, CloudMetrics};
use gpu_autoscaler_scaler::engine::testing::node_pool;
use gpu_autoscaler_scaler::provider::{CloudProvider, InstanceRef, ProviderErrorKind};

const ASG: &str = "gpu-od-asg";
const SPOT_ASG: &str = "gpu-spot-asg";

fn venv() -> PathBuf {
    std::env::var_os("GPU_AUTOSCALER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/gpu-autoscaler/venv")
        })
}

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Result<Moto, Box<dyn std::error::Error + Send + Sync>> {
    let bin = venv().join("bin/moto_server");
    if !bin.exists() {
        return Err(format!(
            "{} missing: run scripts/install-python-deps.sh",
            bin.display()
        )
        .into());
    }
    let port = free_port()?;
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("moto_server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(moto)
}

/// Launch template and groups, made with boto3 (our crate has no EC2 client on purpose).
fn setup_groups(url: &str) -> TestResult {
    let script = format!(
        r#"
import boto3
kw = dict(endpoint_url="{url}", region_name="us-east-1", aws_access_key_id="AKIATESTTESTTESTTEST", aws_secret_access_key="s")
ec2 = boto3.client("ec2", **kw)
asg = boto3.client("autoscaling", **kw)
ami = ec2.describe_images()["Images"][0]["ImageId"]
ec2.create_launch_template(LaunchTemplateName="gpu-lt", LaunchTemplateData={{"ImageId": ami, "InstanceType": "p3.2xlarge"}})
asg.create_auto_scaling_group(AutoScalingGroupName="{ASG}", LaunchTemplate={{"LaunchTemplateName": "gpu-lt"}},
    MinSize=0, MaxSize=3, DesiredCapacity=0, AvailabilityZones=["us-east-1a"])
asg.create_auto_scaling_group(AutoScalingGroupName="{SPOT_ASG}", MinSize=0, MaxSize=4, DesiredCapacity=0,
    AvailabilityZones=["us-east-1b"],
    MixedInstancesPolicy={{"LaunchTemplate": {{"LaunchTemplateSpecification": {{"LaunchTemplateName": "gpu-lt"}},
        "Overrides": [{{"InstanceType": "p3.2xlarge"}}, {{"InstanceType": "g4dn.xlarge"}}]}},
        "InstancesDistribution": {{"OnDemandPercentageAboveBaseCapacity": 0}}}},
    Tags=[{{"Key": "k8s.io/cluster-autoscaler/enabled", "Value": "true", "PropagateAtLaunch": True}},
          {{"Key": "{pool_tag}", "Value": "spot-pool", "PropagateAtLaunch": True}}])
"#,
        pool_tag = keys::LABEL_NODE_POOL
    );
    let out = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .output()?;
    if !out.status.success() {
        return Err(format!("setup failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIATESTTESTTESTTEST",
            "not-a-real-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

fn od_pool() -> NodePool {
    node_pool(
        "od-pool",
        CapacityType::OnDemand,
        0,
        3,
        &["p3.2xlarge"],
        &["us-east-1a"],
    )
}

fn spot_pool() -> NodePool {
    node_pool(
        "spot-pool",
        CapacityType::Spot,
        0,
        4,
        &["p3.2xlarge", "g4dn.xlarge"],
        &["us-east-1b"],
    )
}

fn config(endpoint: &str) -> AwsConfig {
    let mut c = AwsConfig {
        region: Some("us-east-1".into()),
        call_policy: CallPolicy::fast(),
        cache_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    c.auto_scaling_groups.insert("od-pool".into(), ASG.into());
    c.auto_discovery_tags
        .insert("k8s.io/cluster-autoscaler/enabled".into(), "true".into());
    c.endpoint_url = Some(endpoint.into());
    c
}

async fn provider(endpoint: &str, metrics: &CloudMetrics) -> AwsProvider {
    AwsProvider::with_sdk_config(
        &sdk_config(endpoint).await,
        config(endpoint),
        metrics.clone(),
    )
}

/// The group's instances, read with a client of our own (not counted in the provider's metrics).
async fn instances(endpoint: &str, asg: &str) -> Vec<CloudInstance> {
    let client = aws_sdk_autoscaling::Client::new(&sdk_config(endpoint).await);
    let Ok(out) = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
    else {
        return Vec::new();
    };
    out.auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter(|i| {
            i.lifecycle_state()
                .is_some_and(|s| s.as_str() == "InService")
        })
        .filter_map(|i| {
            let zone = i.availability_zone()?.to_string();
            Some(CloudInstance {
                provider_id: gpu_autoscaler_clouds::aws::provider_id(&zone, i.instance_id()?),
                instance_type: i.instance_type().unwrap_or("p3.2xlarge").to_string(),
                zone: Some(zone),
            })
        })
        .collect()
}

fn count(metrics: &CloudMetrics, call: &str) -> u64 {
    metrics
        .call_counts()
        .iter()
        .filter(|((_, c), _)| *c == call)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn describe_scale_up_and_terminate_a_chosen_instance() -> TestResult {
    let moto = start_moto().await?;
    setup_groups(&moto.url)?;
    let metrics = CloudMetrics::new();
    let p = provider(&moto.url, &metrics).await;

    // Explicit mapping and tag discovery, in one DescribeAutoScalingGroups each.
    let groups = p.node_groups(&[od_pool(), spot_pool()]).await?;
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!((groups[0].id.as_str(), groups[0].max_size), (ASG, 3));
    assert_eq!((groups[1].id.as_str(), groups[1].max_size), (SPOT_ASG, 4));
    assert_eq!(p.target_size(&od_pool()).await?, 0);

    let change = p.set_target_size(&od_pool(), 2, &[]).await?;
    assert_eq!((change.previous, change.target), (0, 2));
    assert_eq!(count(&metrics, "SetDesiredCapacity"), 1);
    // Idempotent: the same absolute target again reads and does not write.
    let again = p.set_target_size(&od_pool(), 2, &[]).await?;
    assert_eq!(again.added(), 0);
    assert_eq!(count(&metrics, "SetDesiredCapacity"), 1);
    assert_eq!(p.target_size(&od_pool()).await?, 2);

    let members = instances(&moto.url, ASG).await;
    assert_eq!(members.len(), 2);
    let victim = &members[0];
    let inst = p
        .instance_for_provider_id("od-pool", &victim.provider_id)
        .ok_or("providerID")?;
    assert!(inst.id.starts_with("i-"));
    p.delete_instances(&od_pool(), std::slice::from_ref(&inst))
        .await?;
    let left = instances(&moto.url, ASG).await;
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].provider_id, victim.provider_id);
    assert_eq!(
        p.target_size(&od_pool()).await?,
        1,
        "desired decremented with the termination"
    );
    // Already gone: no error, no second terminate call.
    let calls = count(&metrics, "TerminateInstanceInAutoScalingGroup");
    p.delete_instances(&od_pool(), &[inst]).await?;
    assert_eq!(
        count(&metrics, "TerminateInstanceInAutoScalingGroup"),
        calls
    );
    // An instance of another group is never terminated through this pool.
    let stranger = InstanceRef {
        pool: "od-pool".into(),
        id: "i-0123456789abcdef0".into(),
        provider_id: "aws:///us-east-1a/i-0123456789abcdef0".into(),
    };
    p.delete_instances(&od_pool(), &[stranger]).await?;
    assert_eq!(instances(&moto.url, ASG).await.len(), 1);

    // Above the group's max: a quota error, no write.
    let e = p
        .set_target_size(&od_pool(), 9, &[])
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(e.kind, ProviderErrorKind::Quota);
    // Discovered group scales too.
    p.set_target_size(&spot_pool(), 1, &[]).await?;
    assert_eq!(instances(&moto.url, SPOT_ASG).await.len(), 1);
    assert!(p.in_flight(&od_pool()).await?.is_empty());
    assert!(p.launch_failures(&od_pool()).await?.is_empty());
    Ok(())
}

/// What the proxy does to the next requests.
#[derive(Debug, Default)]
struct Faults {
    throttle: u32,
    auth: bool,
    capacity: bool,
    seen: Vec<(String, Instant)>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    faults: Arc<Mutex<Faults>>,
}

fn action(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(t) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return t.rsplit('.').next().unwrap_or_default().to_string();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
        .unwrap_or_default()
}

fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-1</RequestId></ErrorResponse>"
    );
    (
        status,
        [("content-type", "text/xml"), ("retry-after", "1")],
        body,
    )
        .into_response()
}

const FAILED_ACTIVITY: &str = r#"<DescribeScalingActivitiesResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><DescribeScalingActivitiesResult><Activities><member><ActivityId>act-1</ActivityId><AutoScalingGroupName>gpu-od-asg</AutoScalingGroupName><Description>Launching a new EC2 instance.  Status Reason: We currently do not have sufficient p3.2xlarge capacity in the Availability Zone you requested (us-east-1a). Our system will be working on provisioning additional capacity. Launching EC2 instance failed.</Description><Cause>At 2025-06-01T12:00:00Z a user request update of AutoScalingGroup constraints to min: 0, max: 3, desired: 1 changing the desired capacity from 0 to 1.</Cause><StartTime>2025-06-01T12:00:01Z</StartTime><EndTime>2025-06-01T12:00:05Z</EndTime><StatusCode>Failed</StatusCode><StatusMessage>We currently do not have sufficient p3.2xlarge capacity in the Availability Zone you requested (us-east-1a). Our system will be working on provisioning additional capacity. You can currently get p3.2xlarge capacity by not specifying an Availability Zone in your request or choosing us-east-1b. Launching EC2 instance failed. InsufficientInstanceCapacity</StatusMessage><Progress>100</Progress></member></Activities></DescribeScalingActivitiesResult><ResponseMetadata><RequestId>fault-2</RequestId></ResponseMetadata></DescribeScalingActivitiesResponse>"#;

async fn forward(
    State(px): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = action(&headers, &body);
    let (throttle, auth, capacity) = {
        let Ok(mut f) = px.faults.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        f.seen.push((action.clone(), Instant::now()));
        let throttle = f.throttle > 0;
        if throttle {
            f.throttle -= 1;
        }
        (throttle, f.auth, f.capacity)
    };
    if throttle {
        return aws_error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded");
    }
    if auth {
        return aws_error(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        );
    }
    if capacity && action == "DescribeScalingActivities" {
        return (
            StatusCode::OK,
            [("content-type", "text/xml")],
            FAILED_ACTIVITY,
        )
            .into_response();
    }
    let url = format!(
        "{}{}",
        px.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = px.http.request(method, url).body(body.to_vec());
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| *k != "host" && *k != "content-length")
    {
        req = req.header(k, v);
    }
    let Ok(resp) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let ct = resp.headers().get("content-type").cloned();
    let mut text = resp.text().await.unwrap_or_default();
    if capacity && action == "DescribeAutoScalingGroups" {
        // No instance could be launched: the group keeps its desired capacity, without members.
        while let (Some(a), Some(b)) = (text.find("<Instances>"), text.find("</Instances>")) {
            if b < a {
                break;
            }
            text.replace_range(a..b + "</Instances>".len(), "<Instances/>");
        }
    }
    let mut out = (status, text).into_response();
    if let Some(ct) = ct {
        out.headers_mut().insert("content-type", ct);
    }
    out
}

async fn start_proxy(
    upstream: &str,
) -> Result<(String, Arc<Mutex<Faults>>), Box<dyn std::error::Error + Send + Sync>> {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let px = Proxy {
        upstream: upstream.to_string(),
        http: reqwest::Client::new(),
        faults: faults.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(px);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), faults))
}

#[tokio::test]
async fn throttling_auth_and_capacity_through_the_fault_proxy() -> TestResult {
    let moto = start_moto().await?;
    setup_groups(&moto.url)?;
    let (proxy, faults) = start_proxy(&moto.url).await?;
    let metrics = CloudMetrics::new();
    let p = provider(&proxy, &metrics).await;

    // Throttled twice with Retry-After: 1 -> retried after at least a second each, then fine.
    faults.lock().map_err(|_| "lock")?.throttle = 2;
    let started = Instant::now();
    assert_eq!(p.target_size(&od_pool()).await?, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After not honoured: {:?}",
        started.elapsed()
    );
    // Two throttled attempts and the successful one, then the tag-discovery request.
    assert_eq!(count(&metrics, "DescribeAutoScalingGroups"), 4);

    // Throttled past the attempt budget: a Throttled error the controller requeues on.
    faults.lock().map_err(|_| "lock")?.throttle = 10;
    let fresh = provider(&proxy, &metrics).await;
    let e = fresh
        .target_size(&od_pool())
        .await
        .err()
        .ok_or("expected throttling")?;
    assert_eq!(e.kind, ProviderErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    faults.lock().map_err(|_| "lock")?.throttle = 0;

    // Bad credentials: one request, no retries, an actionable message without the secret.
    faults.lock().map_err(|_| "lock")?.auth = true;
    let before = metrics.total_calls();
    let e = fresh
        .set_target_size(&od_pool(), 1, &[])
        .await
        .err()
        .ok_or("expected auth error")?;
    assert_eq!(e.kind, ProviderErrorKind::Auth);
    assert_eq!(
        metrics.total_calls() - before,
        1,
        "auth errors are not retried"
    );
    assert!(e.message.contains("IRSA"), "{}", e.message);
    assert!(
        !e.message.contains("not-a-real-secret") && !e.message.contains("AKIATESTTESTTESTTEST"),
        "{}",
        e.message
    );
    faults.lock().map_err(|_| "lock")?.auth = false;

    // Capacity: the group is asked for one instance, none launches, the activity says why.
    faults.lock().map_err(|_| "lock")?.capacity = true;
    let change = fresh.set_target_size(&od_pool(), 1, &[]).await?;
    assert_eq!(change.target, 1);
    let failures = fresh.launch_failures(&od_pool()).await?;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].kind, ProviderErrorKind::InsufficientCapacity);
    assert_eq!(failures[0].instance_type.as_deref(), Some("p3.2xlarge"));
    assert_eq!(failures[0].zone.as_deref(), Some("us-east-1a"));
    // Reported once.
    assert!(fresh.launch_failures(&od_pool()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn engine_scales_an_asg_up_and_down() -> TestResult {
    let moto = start_moto().await?;
    setup_groups(&moto.url)?;
    let metrics = CloudMetrics::new();
    let mut cfg = config(&moto.url);
    cfg.cache_ttl = Duration::from_millis(300);
    let p: Arc<dyn CloudProvider> = Arc::new(AwsProvider::with_sdk_config(
        &sdk_config(&moto.url).await,
        cfg,
        metrics.clone(),
    ));
    let url = moto.url.clone();
    let list = move || {
        let url = url.clone();
        async move { instances(&url, ASG).await }.boxed()
    };
    let figures = common::scale_up_then_down(p, &metrics, &od_pool(), None, &list).await?;
    println!("aws calls per reconcile: {figures:?}");
    // One DescribeAutoScalingGroups for the named groups, one for tag discovery, for all pools.
    assert_eq!(figures.steady_reconcile, 2, "{figures:?}");
    Ok(())
}
