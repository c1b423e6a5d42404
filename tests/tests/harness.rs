//! The control-plane harness itself, against real etcd + kube-apiserver + kube-scheduler 1.20.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gpu_autoscaler_api::keys;
use gpu_autoscaler_testkit::{
    Binaries, ControlPlane, ExtenderConfig, GpuNodeSpec, GpuPodSpec, SETUP_COMMAND,
    create_namespace, pid_alive, set_gpus_allocatable, wait_for, wait_for_pod_bound,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;

/// Children get SIGTERM, then SIGKILL after 2 s; reaping is synchronous, so by the time
/// `stop()` returns they must be gone. The short poll only covers PID-namespace lag.
async fn assert_all_gone(pids: &[u32]) -> Result<()> {
    wait_for(Duration::from_secs(5), || async {
        pids.iter().all(|pid| !pid_alive(*pid))
    })
    .await
    .with_context(|| {
        let alive: Vec<_> = pids.iter().filter(|p| pid_alive(**p)).collect();
        format!("processes still alive after stop: {alive:?}")
    })
}

#[tokio::test]
async fn start_create_gpu_node_and_stop_without_strays() -> Result<()> {
    let cp = ControlPlane::start().await?;
    // Visible with --nocapture; docs/ records this figure.
    println!(
        "control plane (etcd + kube-apiserver) startup: {:?}",
        cp.startup_time()
    );
    ensure!(cp.server_url().starts_with("https://127.0.0.1:"));
    ensure!(cp.kubeconfig_path().is_file());
    let client = cp.client();

    let created = GpuNodeSpec::new("gpu-node-1")
        .gpus(8)
        .capacity_type("spot")
        .pool("a100-spot")
        .instance_type("p4d.24xlarge")
        .zone("us-east-1a")
        .provider_id("aws:///us-east-1a/i-0123456789abcdef0")
        .spot_taint()
        .create(&client)
        .await?;
    ensure!(created.metadata.name.as_deref() == Some("gpu-node-1"));

    // Read it back fresh: this is what controllers will see.
    let node = Api::<Node>::all(client.clone()).get("gpu-node-1").await?;
    let status = node.status.clone().context("node has no status")?;
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .context("no Ready condition")?;
    ensure!(ready.status == "True", "Ready is {}", ready.status);
    ensure!(ready.last_heartbeat_time.is_some(), "no heartbeat");

    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    ensure!(
        !taints.iter().any(|t| t.key == keys::TAINT_NOT_READY),
        "not-ready taint still present: {taints:?}"
    );
    ensure!(
        taints.iter().any(|t| t.key == keys::TAINT_SPOT_KEY),
        "the spot taint we asked for is missing: {taints:?}"
    );

    let gpu = Quantity("8".to_string());
    ensure!(status.allocatable.unwrap_or_default().get("nvidia.com/gpu") == Some(&gpu));
    ensure!(status.capacity.unwrap_or_default().get("nvidia.com/gpu") == Some(&gpu));
    let labels = node.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get(keys::LABEL_CAPACITY_TYPE).map(String::as_str) == Some("spot"));
    ensure!(labels.get(keys::LABEL_NODE_POOL).map(String::as_str) == Some("a100-spot"));
    ensure!(
        node.spec.and_then(|s| s.provider_id).as_deref()
            == Some("aws:///us-east-1a/i-0123456789abcdef0")
    );

    let shrunk = set_gpus_allocatable(&client, "gpu-node-1", 6).await?;
    let alloc = shrunk
        .status
        .and_then(|s| s.allocatable)
        .unwrap_or_default();
    ensure!(alloc.get("nvidia.com/gpu") == Some(&Quantity("6".to_string())));

    let pids: Vec<u32> = cp.pids().iter().map(|p| p.pid).collect();
    ensure!(
        pids.len() == 2,
        "expected etcd and kube-apiserver, got {:?}",
        cp.pids()
    );
    ensure!(pids.iter().all(|p| pid_alive(*p)));
    let dir = cp.dir().to_path_buf();
    let stopping = std::time::Instant::now();
    cp.stop();
    println!("control plane teardown: {:?}", stopping.elapsed());
    assert_all_gone(&pids).await?;
    if std::env::var_os(gpu_autoscaler_testkit::KEEP_ENV).is_none() {
        ensure!(!dir.exists(), "temp dir {} was not removed", dir.display());
    }
    Ok(())
}

#[tokio::test]
async fn scheduler_binds_gpu_pod_to_the_gpu_node() -> Result<()> {
    // The extender points at a closed port and is ignorable: this checks both that our
    // extender section is accepted by kube-scheduler 1.20 and that scheduling proceeds
    // when the extender is down.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let extender = ExtenderConfig::new(format!("http://127.0.0.1:{closed_port}"))
        .http_timeout(Duration::from_secs(1));
    let cp = ControlPlane::builder()
        .with_scheduler(extender)
        .start()
        .await?;
    println!(
        "control plane with kube-scheduler startup: {:?}",
        cp.startup_time()
    );
    ensure!(cp.has_scheduler());
    let client = cp.client();

    GpuNodeSpec::new("cpu-only").gpus(0).create(&client).await?;
    GpuNodeSpec::new("gpu-a")
        .gpus(4)
        .pool("a100")
        .create(&client)
        .await?;
    create_namespace(&client, "ml").await?;
    GpuPodSpec::new("trainer", 1)
        .namespace("ml")
        .label(keys::LABEL_WORKLOAD_TYPE, "training")
        .annotation(keys::ANNOTATION_EVICTION_PRIORITY, "low")
        .create(&client)
        .await?;

    let node = wait_for_pod_bound(&client, "ml", "trainer", Duration::from_secs(30))
        .await
        .with_context(|| {
            format!(
                "pod not bound; scheduler log:\n{}",
                cp.log_tail(gpu_autoscaler_testkit::Component::KubeScheduler, 30)
            )
        })?;
    ensure!(node == "gpu-a", "bound to {node}, expected gpu-a");

    let pod = Api::<Pod>::namespaced(client, "ml").get("trainer").await?;
    ensure!(
        pod.metadata
            .annotations
            .unwrap_or_default()
            .get(keys::ANNOTATION_EVICTION_PRIORITY)
            .map(String::as_str)
            == Some("low")
    );

    // Its HTTP healthz port is a private loopback one, not 1.20's default 0.0.0.0:10251 that
    // parallel tests would fight over.
    let sched_log = std::fs::read_to_string(
        cp.log_path(gpu_autoscaler_testkit::Component::KubeScheduler)
            .context("no scheduler log")?,
    )?;
    let serving: Vec<&str> = sched_log
        .lines()
        .filter(|l| l.contains("insecurely on"))
        .collect();
    ensure!(
        !serving.is_empty()
            && serving
                .iter()
                .all(|l| l.contains("insecurely on 127.0.0.1:") && !l.contains(":10251")),
        "kube-scheduler listens beyond a private loopback port: {serving:?}"
    );

    let pids: Vec<u32> = cp.pids().iter().map(|p| p.pid).collect();
    ensure!(
        pids.len() == 3,
        "expected three processes, got {:?}",
        cp.pids()
    );
    cp.stop();
    assert_all_gone(&pids).await
}

#[tokio::test]
async fn two_control_planes_run_side_by_side() -> Result<()> {
    let (a, b) = tokio::join!(ControlPlane::start(), ControlPlane::start());
    let (a, b) = (a?, b?);
    ensure!(a.server_url() != b.server_url());
    ensure!(a.etcd_url() != b.etcd_url());
    ensure!(a.dir() != b.dir());

    // Same node name in both: they must be independent clusters.
    GpuNodeSpec::new("twin").gpus(2).create(&a.client()).await?;
    GpuNodeSpec::new("twin").gpus(4).create(&b.client()).await?;
    let gpus = |node: Node| {
        node.status
            .and_then(|s| s.allocatable)
            .and_then(|a| a.get("nvidia.com/gpu").cloned())
    };
    let in_a = Api::<Node>::all(a.client()).get("twin").await?;
    let in_b = Api::<Node>::all(b.client()).get("twin").await?;
    ensure!(gpus(in_a) == Some(Quantity("2".to_string())));
    ensure!(gpus(in_b) == Some(Quantity("4".to_string())));

    let pids: Vec<u32> = a
        .pids()
        .iter()
        .chain(b.pids().iter())
        .map(|p| p.pid)
        .collect();
    drop(a);
    drop(b);
    assert_all_gone(&pids).await
}

#[tokio::test]
async fn a_panicking_test_still_tears_down() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u32>>();
    // Own thread and runtime, so the panic unwinds through the ControlPlane's owner exactly
    // as it would in a failing #[tokio::test].
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cp = ControlPlane::start().await.expect("control plane starts");
            tx.send(cp.pids().iter().map(|p| p.pid).collect())
                .expect("receiver alive");
            panic!("deliberate test failure with a live control plane");
        })
    })
    .join();
    ensure!(outcome.is_err(), "the thread was supposed to panic");
    let pids = rx.recv().context("no PIDs were sent before the panic")?;
    ensure!(!pids.is_empty());
    assert_all_gone(&pids).await
}

#[test]
fn a_missing_binary_names_the_setup_command() -> Result<()> {
    let empty = tempfile::tempdir()?;
    let err = Binaries::locate_in(empty.path(), true).expect_err("nothing is installed there");
    let message = err.to_string();
    ensure!(message.contains("kube-apiserver"), "{message}");
    ensure!(message.contains(SETUP_COMMAND), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_control_plane_outlives_the_thread_that_started_it() -> Result<()> {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; a control plane shared between
    // tests must survive the test thread that happened to start it.
    let cp = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| Ok(rt.block_on(ControlPlane::start())?))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("starter thread panicked"))??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids: Vec<u32> = cp.pids().iter().map(|p| p.pid).collect();
    ensure!(
        pids.iter().all(|p| pid_alive(*p)),
        "children died with their starter thread: {:?}",
        cp.pids()
    );
    // cp.client() belongs to the starter's (now gone) runtime; build one for this runtime.
    let client = kube::Client::try_from(cp.kube_config())?;
    let default = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .get("default")
        .await?;
    ensure!(default.metadata.name.as_deref() == Some("default"));
    drop(cp);
    assert_all_gone(&pids).await
}

#[tokio::test]
async fn a_failed_start_reports_the_log_and_leaves_nothing() -> Result<()> {
    let err = ControlPlane::builder()
        .apiserver_arg("--no-such-flag=1")
        .start()
        .await
        .expect_err("kube-apiserver rejects unknown flags");
    let message = err.to_string();
    ensure!(
        message.contains("kube-apiserver failed to start"),
        "{message}"
    );
    // The tail of the apiserver's own log names the culprit.
    ensure!(message.contains("no-such-flag"), "{message}");

    // etcd was already running when the apiserver failed: it must be gone, and the temp dir
    // (<root>/apiserver/<log>) with it. Every child names the root dir on its command line.
    let gpu_autoscaler_testkit::Error::StartFailed { log, .. } = &err else {
        anyhow::bail!("unexpected error kind: {err:?}");
    };
    let root = log
        .parent()
        .and_then(|p| p.parent())
        .context("log path has no root dir")?
        .to_string_lossy()
        .into_owned();
    ensure!(
        !std::path::Path::new(&root).exists(),
        "{root} was left behind"
    );
    let strays: Vec<String> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&root))
        .collect();
    ensure!(strays.is_empty(), "processes left behind: {strays:?}");
    Ok(())
}

#[tokio::test]
async fn evictions_under_a_pdb_need_its_status_written() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    GpuNodeSpec::new("gpu-e").gpus(2).create(&client).await?;
    GpuPodSpec::new("victim", 1)
        .label("app", "victim")
        .node_name("gpu-e")
        .create(&client)
        .await?;
    // 1.20 evicts pending pods without consulting PDBs; a kubelet would have started it.
    gpu_autoscaler_testkit::mark_pod_running(&client, "default", "victim").await?;
    let pdb = serde_json::json!({
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": "victim", "namespace": "default" },
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "app": "victim" } } },
    });
    let create =
        http::Request::post("/apis/policy/v1beta1/namespaces/default/poddisruptionbudgets")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&pdb)?)?;
    let _: serde_json::Value = client.request(create).await?;

    let evict = || -> Result<http::Request<Vec<u8>>> {
        let body = serde_json::json!({
            "apiVersion": "policy/v1beta1",
            "kind": "Eviction",
            "metadata": { "name": "victim", "namespace": "default" },
        });
        Ok(
            http::Request::post("/api/v1/namespaces/default/pods/victim/eviction")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body)?)?,
        )
    };
    // No disruption controller has looked at the PDB yet: the apiserver answers 429, which
    // kube's client retries with backoff for minutes, so give it a few seconds only.
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        client.request::<serde_json::Value>(evict()?),
    )
    .await;
    match refused {
        Err(_elapsed) => {}
        Ok(Err(kube::Error::Api(status))) if status.code == 429 => {}
        Ok(other) => {
            anyhow::bail!("expected a refusal before the PDB status is written, got {other:?}")
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ensure!(
        pods.get_opt("victim").await?.is_some(),
        "pod was evicted despite the PDB"
    );

    gpu_autoscaler_testkit::set_pdb_disruptions_allowed(&client, "default", "victim", 1).await?;
    let _: serde_json::Value = client.request(evict()?).await?;
    wait_for(Duration::from_secs(10), || async {
        matches!(pods.get_opt("victim").await, Ok(None))
    })
    .await
    .context("evicted pod was not deleted")?;
    Ok(())
}
