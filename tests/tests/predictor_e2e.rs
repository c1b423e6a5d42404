//! Predictive scaling in the live controller against a real kube-apiserver 1.20 (no scheduler
//! needed): the predictor's state ConfigMap is created by the controller (with the lead time it
//! measured on a node the `kube` provider boots), and a restarted controller continues from the
//! history stored there: the policy status' `predictive` block and the prediction metrics show
//! the restored model's confidence instead of a cold start's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use chrono::{Datelike, Timelike, Utc, Weekday};
use gpu_autoscaler_api::AutoscalingPolicy;
use gpu_autoscaler_api::policy::PredictiveSettings;
use gpu_autoscaler_scaler::controller::predictor::{
    DEFAULT_LEAD, LEAD_KEY, STATE_KEY, STEP_MINUTES, configmap_name,
};
use gpu_autoscaler_scaler::controller::{NoUtilization, Scaler, ScalerConfig, ScalerHandle};
use gpu_autoscaler_scaler::forecast::DemandForecaster;
use gpu_autoscaler_scaler::provider::CloudProvider;
use gpu_autoscaler_scaler::provider::kube::{KubeProvider, KubeProviderConfig};
use gpu_autoscaler_testkit::{ControlPlane, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

const NS: &str = "kube-system";
const POLICY: &str = "pred";

struct Replica {
    handle: ScalerHandle,
    task: JoinHandle<()>,
    sim: JoinHandle<()>,
}

impl Replica {
    /// A crash: nothing is flushed or released.
    fn kill(self) {
        self.task.abort();
        self.sim.abort();
    }
}

fn replica(client: &Client) -> Result<Replica> {
    let provider = Arc::new(
        KubeProvider::new(
            client.clone(),
            KubeProviderConfig {
                namespace: NS.into(),
                boot_delay: Duration::from_secs(1),
                driver_delay: Duration::from_secs(1),
                tick: Duration::from_millis(250),
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mut config = ScalerConfig::new(POLICY);
    config.interval = Duration::from_secs(1);
    config.debounce = Duration::from_millis(100);
    config.state_namespace = NS.into();
    config.forecast_persist_every = Duration::from_secs(1);
    let scaler = Scaler::new(
        client.clone(),
        config,
        provider.clone() as Arc<dyn CloudProvider>,
        Arc::new(NoUtilization),
    );
    let handle = scaler.handle();
    let task = tokio::spawn(async move {
        if let Err(e) = scaler.run(std::future::pending()).await {
            eprintln!("scaler stopped: {e}");
        }
    });
    let sim = tokio::spawn(provider.run_simulation(std::future::pending()));
    Ok(Replica { handle, task, sim })
}

async fn predictive_status(
    client: &Client,
) -> Option<gpu_autoscaler_api::policy::PredictiveStatus> {
    Api::<AutoscalingPolicy>::all(client.clone())
        .get(POLICY)
        .await
        .ok()?
        .status?
        .predictive
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Two weeks and a day of a weekday 09:00-17:00 UTC peak of 32 GPUs, up to now.
fn learned_history() -> Result<DemandForecaster> {
    let settings = PredictiveSettings::default();
    let utc = chrono::FixedOffset::east_opt(0).context("offset")?;
    let mut f = DemandForecaster::new(&settings, STEP_MINUTES, utc)?;
    let step = chrono::Duration::minutes(i64::from(STEP_MINUTES));
    let now = Utc::now();
    let mut t = now - chrono::Duration::days(15);
    while t < now - step {
        let busy =
            !matches!(t.weekday(), Weekday::Sat | Weekday::Sun) && (9..17).contains(&t.hour());
        f.observe(t, if busy { 32.0 } else { 0.0 });
        t += step;
    }
    Ok(f)
}

#[tokio::test]
async fn a_restarted_scaler_continues_from_the_stored_forecast_history() -> Result<()> {
    let cp = ControlPlane::builder().start().await?;
    let client = cp.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &AutoscalingPolicy::crd())
        .await?;
    let policies: Api<AutoscalingPolicy> = Api::all(client.clone());
    wait_for(Duration::from_secs(30), || {
        let p = policies.clone();
        async move { p.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await?;
    // One node by minimum, so the controller sees a node boot and measures the lead time.
    let policy: AutoscalingPolicy = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy",
        "metadata": { "name": POLICY },
        "spec": {
            "enablePredictiveScaling": true,
            "maxNodes": 10,
            "nodePools": [{ "name": "od", "minSize": 1, "maxSize": 10,
                            "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" }],
        },
    }))?;
    policies.create(&PostParams::default(), &policy).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let name = configmap_name(POLICY);

    // 1. A cold start: the controller creates the state ConfigMap, with the lead time it measured.
    let first = replica(&client)?;
    let stored = wait_for(Duration::from_secs(60), || async {
        let cm = cms.get_opt(&name).await.ok()??;
        let data = cm.data.clone()?;
        (data.contains_key(STATE_KEY) && data.contains_key(LEAD_KEY)).then_some(cm)
    })
    .await
    .context("the controller persists its predictor state and measured lead time")?;
    let data = stored.data.clone().unwrap_or_default();
    let lead: i64 = data[LEAD_KEY].parse()?;
    ensure!(
        (0..=30).contains(&lead) && lead < DEFAULT_LEAD.num_seconds(),
        "measured lead {lead}s (1 s boot + 1 s driver)"
    );
    let cold = wait_for(Duration::from_secs(30), || async {
        predictive_status(&client).await?.confidence
    })
    .await
    .context("status.predictive appears")?;
    ensure!(cold < 0.5, "no history yet, confidence {cold}");
    first.kill();

    // 2. History: two weeks of a weekday pattern, stored as a previous leader would have.
    let history = learned_history()?;
    let expected = history
        .view(
            Utc::now(),
            32.0,
            &PredictiveSettings::default(),
            DEFAULT_LEAD,
        )
        .confidence;
    ensure!(
        expected >= 0.7,
        "the test's own model is confident: {expected}"
    );
    let mut cm = cms.get(&name).await?;
    cm.data
        .get_or_insert_with(Default::default)
        .insert(STATE_KEY.into(), history.state().to_json()?);
    cms.replace(&name, &PostParams::default(), &cm).await?;

    // 3. A restarted controller continues from it: status and metrics show its confidence.
    let second = replica(&client)?;
    let restored = wait_for(Duration::from_secs(60), || async {
        let c = predictive_status(&client).await?.confidence?;
        (c >= 0.7).then_some(c)
    })
    .await
    .context("the restarted controller restores the stored history")?;
    ensure!(
        (restored - expected).abs() < 0.15,
        "restored confidence {restored} vs {expected} from the same state"
    );
    let text = second.handle.metrics.encode();
    let gauge = metric(&text, "gpu_autoscaler_prediction_confidence")
        .context("gpu_autoscaler_prediction_confidence exported")?;
    ensure!(gauge >= 0.7, "metric {gauge}");
    let predicted = metric(&text, "gpu_autoscaler_predicted_utilization")
        .context("gpu_autoscaler_predicted_utilization exported")?;
    ensure!(predicted.is_finite() && predicted >= 0.0, "{predicted}");
    // The measured lead time survived the restart too.
    let after = cms.get(&name).await?.data.unwrap_or_default();
    ensure!(
        after
            .get(LEAD_KEY)
            .is_some_and(|l| l.parse::<i64>().ok() == Some(lead))
    );
    second.kill();
    Ok(())
}
