//! The agent's HTTP surface driven by the fake GPU reader, and the scaler-side scraper against
//! real agents on loopback: one healthy, one slow, one gone, one without GPUs, one misrouted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use gpu_autoscaler_agent::gpu::{FakeGpuReader, RawGpu, ReadError, Sampler, Status};
use gpu_autoscaler_agent::http::HttpClient;
use gpu_autoscaler_agent::metrics::Metrics;
use gpu_autoscaler_agent::scrape::UtilizationScraper;
use gpu_autoscaler_agent::server::{self, AgentState, SamplingConfig};
use gpu_autoscaler_agent::{GpuReader, UtilizationReport};
use tokio::net::TcpListener;

const GIB: u64 = 1 << 30;

fn a100(index: u32, util: u32, used_gib: u64) -> RawGpu {
    RawGpu {
        index,
        uuid: format!("GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd"),
        model: "NVIDIA A100-SXM4-80GB".to_string(),
        utilization_gpu: Some(util),
        memory_used_bytes: Some(used_gib * GIB),
        memory_total_bytes: Some(80 * GIB),
        pids: vec![4242],
    }
}

struct TestAgent {
    base: String,
    state: Arc<AgentState>,
    config: SamplingConfig,
    sampler: Sampler,
    fake: Arc<FakeGpuReader>,
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

async fn agent(node: &str, answer: Result<Vec<RawGpu>, ReadError>) -> TestAgent {
    let fake = Arc::new(FakeGpuReader::new(answer));
    let sampler = Sampler::new(node, Duration::from_secs(300));
    let state = AgentState::new(sampler.empty_report(), Arc::new(Metrics::new()));
    let base = serve(server::router(state.clone())).await;
    let config = SamplingConfig {
        reader: fake.clone() as Arc<dyn GpuReader>,
        interval: Duration::from_secs(1),
        pod_resources_socket: None,
        gpu_resource: Arc::new(|r: &str| r == "nvidia.com/gpu"),
    };
    TestAgent {
        base,
        state,
        config,
        sampler,
        fake,
    }
}

impl TestAgent {
    async fn sample(&mut self) -> UtilizationReport {
        server::sample_once(&self.config, &mut self.sampler, &self.state).await
    }
}

async fn get_text(url: &str) -> (u16, String) {
    let r = HttpClient::new()
        .get(url, &[], Duration::from_secs(5))
        .await
        .expect("get");
    (r.status.as_u16(), r.text())
}

#[tokio::test]
async fn fake_gpus_drive_json_and_dcgm_metrics() {
    let mut agent = agent(
        "gpu-node-1",
        Ok(vec![
            a100(0, 37, 20),
            // A sentinel reading, as NVML/DCGM report it for a GPU in a bad state.
            RawGpu {
                utilization_gpu: Some(u32::MAX),
                ..a100(1, 0, 10)
            },
        ]),
    )
    .await;
    assert_eq!(get_text(&format!("{}/readyz", agent.base)).await.0, 503);
    assert_eq!(get_text(&format!("{}/healthz", agent.base)).await.0, 200);

    agent.sample().await;
    assert_eq!(get_text(&format!("{}/readyz", agent.base)).await.0, 200);
    let (status, body) = get_text(&format!("{}/v1/utilization", agent.base)).await;
    assert_eq!(status, 200);
    let report: UtilizationReport = serde_json::from_str(&body).expect("report");
    assert_eq!(report.node, "gpu-node-1");
    assert_eq!(report.status, Status::Ok);
    assert_eq!(report.gpus.len(), 2);
    assert_eq!(
        report.gpus[1].utilization, None,
        "garbage must not be served"
    );
    // The mean is over the one valid GPU, not dragged to 0 or to 4294967295 by the other.
    assert!(report.average.is_some_and(|v| (v - 0.37).abs() < 1e-9));
    let raw: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(raw["status"], "ok");
    assert!(raw["sampled_at"].is_string());

    let (_, metrics) = get_text(&format!("{}/metrics", agent.base)).await;
    let dcgm_util = r#"DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-node-1"} 37.0"#;
    assert!(metrics.contains(dcgm_util), "{metrics}");
    assert!(
        !metrics.contains(r#"DCGM_FI_DEV_GPU_UTIL{gpu="1""#),
        "rejected reading exported: {metrics}"
    );
    assert!(metrics.contains(r#"DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-node-1"} 20480.0"#), "{metrics}");
    assert!(metrics.contains(r#"DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-node-1"} 61440.0"#), "{metrics}");
    assert!(
        metrics.contains(r#"gpu_autoscaler_agent_rejected_readings_total{field="utilization"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpu_autoscaler_agent_gpu_status{node="gpu-node-1",status="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpu_autoscaler_agent_node_utilization_ratio{node="gpu-node-1"} 0.37"#),
        "{metrics}"
    );

    // The driver goes away: "no-gpu", GPU series gone, average withheld; nothing crashes.
    agent.fake.set(Err(ReadError::NoGpu(
        "libnvidia-ml.so: cannot open shared object file".to_string(),
    )));
    let report = agent.sample().await;
    assert_eq!(report.status, Status::NoGpu);
    let (_, body) = get_text(&format!("{}/v1/utilization", agent.base)).await;
    let raw: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(raw["status"], "no-gpu");
    assert!(raw["average"].is_null());
    assert_eq!(raw["gpus"], serde_json::json!([]));
    let (_, metrics) = get_text(&format!("{}/metrics", agent.base)).await;
    assert!(!metrics.contains("DCGM_FI_DEV_GPU_UTIL{"), "{metrics}");
    assert!(
        metrics.contains(r#"gpu_autoscaler_agent_gpu_status{node="gpu-node-1",status="no-gpu"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpu_autoscaler_agent_gpus{node="gpu-node-1"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn scraper_reports_unknown_for_slow_missing_and_gpu_less_agents() {
    let mut up = agent("up", Ok(vec![a100(0, 40, 1), a100(1, 60, 1)])).await;
    up.sample().await;
    let mut no_gpu = agent("cpu-only", Err(ReadError::NoGpu("no driver".to_string()))).await;
    no_gpu.sample().await;
    let mut misrouted = agent("someone-else", Ok(vec![a100(0, 90, 1)])).await;
    misrouted.sample().await;
    let slow = serve(Router::new().route(
        "/v1/utilization",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "{}"
        }),
    ))
    .await;
    let missing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    };
    let garbage = serve(Router::new().route("/v1/utilization", get(|| async { "not json" }))).await;

    let endpoints = BTreeMap::from([
        ("up".to_string(), up.base.clone()),
        ("slow".to_string(), slow),
        ("missing".to_string(), missing),
        ("cpu-only".to_string(), no_gpu.base.clone()),
        ("misrouted".to_string(), misrouted.base.clone()),
        ("garbage".to_string(), garbage),
    ]);
    let scraper = UtilizationScraper::new(Duration::from_millis(500));
    let started = Instant::now();
    let got = scraper.scrape(&endpoints).await;
    let took = started.elapsed();
    assert_eq!(
        got.len(),
        endpoints.len(),
        "every node must be answered: {got:?}"
    );
    assert!(got["up"].is_some_and(|v| (v - 0.5).abs() < 1e-9), "{got:?}");
    for unknown in ["slow", "missing", "cpu-only", "misrouted", "garbage"] {
        assert_eq!(
            got[unknown], None,
            "{unknown} must be unknown, not 0: {got:?}"
        );
    }
    // Concurrent: the slow agent costs one timeout, not one per agent.
    assert!(took < Duration::from_millis(1500), "scrape took {took:?}");

    let reports = scraper.scrape_reports(&endpoints).await;
    assert!(matches!(
        reports["slow"],
        Err(gpu_autoscaler_agent::scrape::ScrapeError::Http(
            gpu_autoscaler_agent::http::HttpError::Timeout { .. }
        ))
    ));
    assert!(matches!(
        reports["misrouted"],
        Err(gpu_autoscaler_agent::scrape::ScrapeError::WrongNode { .. })
    ));
    assert_eq!(
        reports["cpu-only"].as_ref().map(|r| r.status).ok(),
        Some(Status::NoGpu)
    );
}
