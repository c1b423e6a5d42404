//! Forecasts in the live controller: one [`DemandForecaster`] per policy, fed the GPU demand on
//! every reconcile, persisted in a ConfigMap so a restart or a leader change keeps what it
//! learned, and turned into the snapshot's [`ForecastView`].
//!
//! # Persistence
//! ConfigMap `gpu-autoscaler-predictor-<policy>` in the scaler's namespace
//! ([`ScalerConfig::state_namespace`](super::ScalerConfig)), written by the leader at most every
//! [`ScalerConfig::forecast_persist_every`](super::ScalerConfig) (3 min by default):
//! - `state.json`: the model's compact per-slot aggregates ([`ModelState`]; about 15 KiB for
//!   the default configuration, under 64 KiB for the largest, far below a ConfigMap's 1 MiB);
//! - `leadSeconds`: the measured node lead time (see below), once measured.
//!
//! Writes carry the resourceVersion last read or written. A conflict means another replica
//! wrote after we loaded (it was leader meanwhile): its state wins, we reload it and drop the
//! few minutes we observed since, rather than overwrite newer learning with older.
//! A state that doesn't parse or doesn't fit the policy's settings (lookback, horizon changed)
//! is replaced by a fresh model, with a warning.
//!
//! # Observations
//! Demand ([`forecast::demand_gpus`]) is averaged over each [`STEP_MINUTES`] window of the
//! wall clock and observed once per window, so the model's cadence doesn't depend on how
//! often the controller reconciles.
//!
//! # Lead time
//! Pre-warming must start early by the time a new node takes to become useful. It is measured
//! on the nodes of the policy's pools that the controller sees register: from the Node's
//! creation to its GPUs being allocatable (the median of the last [`LEAD_SAMPLES`]). Until a
//! node has been measured, [`DEFAULT_LEAD`] (5 min) is used.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use gpu_autoscaler_api::policy::{AutoscalingPolicySpec, PredictiveSettings};
use gpu_autoscaler_predictor::model::ModelState;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::engine::{ForecastView, NodeView, PodView};
use crate::forecast::{self, DemandForecaster};

/// Name prefix of the per-policy state ConfigMap.
pub const CONFIGMAP_PREFIX: &str = "gpu-autoscaler-predictor-";
/// ConfigMap key of the model state.
pub const STATE_KEY: &str = "state.json";
/// ConfigMap key of the measured lead time (whole seconds).
pub const LEAD_KEY: &str = "leadSeconds";
/// Observation cadence of the model.
pub const STEP_MINUTES: u32 = 5;
/// Lead time used until one has been measured.
pub const DEFAULT_LEAD: Duration = Duration::minutes(5);
/// Lead-time samples kept (median of these).
pub const LEAD_SAMPLES: usize = 10;
/// Nodes older than this when first seen without GPUs are not measured (a node stuck for an
/// hour says nothing about normal boots).
const LEAD_WATCH_MAX: Duration = Duration::hours(1);

/// The ConfigMap name for `policy`.
pub fn configmap_name(policy: &str) -> String {
    format!("{CONFIGMAP_PREFIX}{policy}")
}

/// What the store holds for one policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub data: BTreeMap<String, String>,
    pub resource_version: Option<String>,
}

/// Why a write was not done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone wrote since our last read (or created it first).
    #[error("conflict: the stored state changed since it was read")]
    Conflict,
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Where predictor state is kept: a ConfigMap in the cluster, or memory (tests, dry runs).
#[derive(Clone)]
pub enum StateStore {
    ConfigMap(Box<Api<ConfigMap>>),
    Memory(Arc<Mutex<HashMap<String, Stored>>>),
}

impl StateStore {
    /// An in-memory store (each write bumps a numeric resourceVersion, like the apiserver).
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    pub async fn load(&self, name: &str) -> Result<Option<Stored>, StoreError> {
        match self {
            Self::ConfigMap(api) => Ok(api.get_opt(name).await?.map(|cm| Stored {
                data: cm.data.unwrap_or_default(),
                resource_version: cm.metadata.resource_version,
            })),
            Self::Memory(m) => Ok(m.lock().ok().and_then(|m| m.get(name).cloned())),
        }
    }

    /// Writes `data` if the stored version is still `version` (`None`: create, must not exist).
    /// Returns the new resourceVersion.
    pub async fn save(
        &self,
        name: &str,
        data: BTreeMap<String, String>,
        version: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Self::ConfigMap(api) => {
                let mut cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        resource_version: version.map(str::to_string),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "gpu-autoscaler".to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                let pp = PostParams::default();
                let r = match version {
                    Some(_) => api.replace(name, &pp, &cm).await,
                    None => {
                        cm.metadata.resource_version = None;
                        api.create(&pp, &cm).await
                    }
                };
                match r {
                    Ok(cm) => Ok(cm.metadata.resource_version),
                    Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
                    Err(e) => Err(e.into()),
                }
            }
            Self::Memory(m) => {
                let mut m = m.lock().map_err(|_| StoreError::Conflict)?;
                let current = m.get(name).and_then(|s| s.resource_version.clone());
                if current.as_deref() != version {
                    return Err(StoreError::Conflict);
                }
                let next = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
                let rv = Some(next.to_string());
                m.insert(
                    name.to_string(),
                    Stored {
                        data,
                        resource_version: rv.clone(),
                    },
                );
                Ok(rv)
            }
        }
    }
}

/// Lead-time measurement: Node creation → GPUs allocatable.
#[derive(Debug, Default)]
struct LeadTimer {
    /// Nodes seen registered without allocatable GPUs: their creation time.
    booting: HashMap<String, DateTime<Utc>>,
    samples: VecDeque<i64>,
    /// Restored from the store until new samples arrive.
    restored: Option<i64>,
}

impl LeadTimer {
    fn observe(&mut self, now: DateTime<Utc>, nodes: &[NodeView]) -> bool {
        let mut measured = false;
        let mut present = std::collections::HashSet::new();
        for n in nodes.iter().filter(|n| n.pool.is_some()) {
            present.insert(n.name.as_str());
            let gpu_ready = n.ready && n.gpus_allocatable > 0;
            if !gpu_ready {
                if now - n.created <= LEAD_WATCH_MAX && n.interruption.is_none() {
                    self.booting.entry(n.name.clone()).or_insert(n.created);
                }
                continue;
            }
            if let Some(created) = self.booting.remove(&n.name) {
                let secs = (now - created).num_seconds();
                if secs >= 0 {
                    self.samples.push_back(secs);
                    while self.samples.len() > LEAD_SAMPLES {
                        self.samples.pop_front();
                    }
                    measured = true;
                }
            }
        }
        self.booting.retain(|k, _| present.contains(k.as_str()));
        measured
    }

    fn seconds(&self) -> Option<i64> {
        if self.samples.is_empty() {
            return self.restored;
        }
        let mut v: Vec<i64> = self.samples.iter().copied().collect();
        v.sort_unstable();
        Some(v[v.len() / 2])
    }

    fn lead(&self) -> Duration {
        self.seconds().map_or(DEFAULT_LEAD, Duration::seconds)
    }
}

/// The controller's predictor for one policy.
pub struct Predictor {
    store: StateStore,
    name: String,
    clock: ForecastClock,
    persist_every: Duration,
    forecaster: Option<DemandForecaster>,
    /// The settings the forecaster was built for (a change rebuilds it).
    built_for: Option<(u32, u32)>,
    /// Whether the store has been read since (re)gaining leadership.
    loaded: bool,
    resource_version: Option<String>,
    last_persist: Option<DateTime<Utc>>,
    dirty: bool,
    /// The current observation window: (window index, demand sum, samples).
    window: Option<(i64, f64, u32)>,
    lead: LeadTimer,
}

impl Predictor {
    pub fn new(
        store: StateStore,
        policy: &str,
        clock: impl Into<ForecastClock>,
        persist_every: std::time::Duration,
    ) -> Self {
        Self {
            store,
            name: configmap_name(policy),
            clock: clock.into(),
            persist_every: Duration::from_std(persist_every).unwrap_or(Duration::minutes(3)),
            forecaster: None,
            built_for: None,
            loaded: false,
            resource_version: None,
            last_persist: None,
            dirty: false,
            window: None,
            lead: LeadTimer::default(),
        }
    }

    /// Forget in-process state; the next tick reloads from the store (a new leadership must
    /// continue from what the previous leader persisted, not from our stale copy).
    pub fn reset(&mut self) {
        self.forecaster = None;
        self.built_for = None;
        self.loaded = false;
        self.resource_version = None;
        self.last_persist = None;
        self.dirty = false;
        self.window = None;
    }

    /// The measured (or default) lead time.
    pub fn lead(&self) -> Duration {
        self.lead.lead()
    }

    /// The model's persisted form, if a model exists.
    pub fn state(&self) -> Option<ModelState> {
        self.forecaster.as_ref().map(DemandForecaster::state)
    }

    fn settings_key(s: &PredictiveSettings) -> (u32, u32) {
        (s.lookback_days, s.horizon_minutes)
    }

    async fn load(&mut self, settings: &PredictiveSettings) {
        self.loaded = true;
        let stored = match self.store.load(&self.name).await {
            Ok(s) => s,
            Err(e) => {
                // Try again next tick rather than start from scratch over a stored history.
                tracing::warn!(configmap = %self.name, error = %e, "reading predictor state failed");
                self.loaded = false;
                return;
            }
        };
        let Some(stored) = stored else {
            self.forecaster = self.fresh(settings);
            return;
        };
        self.resource_version = stored.resource_version.clone();
        if let Some(l) = stored
            .data
            .get(LEAD_KEY)
            .and_then(|s| s.trim().parse().ok())
        {
            self.lead.restored = Some(l);
        }
        let restored = stored
            .data
            .get(STATE_KEY)
            .and_then(|json| match ModelState::from_json(json) {
                Ok(state) => Some(state),
                Err(e) => {
                    tracing::warn!(configmap = %self.name, error = %e, "stored predictor state does not parse; starting fresh");
                    None
                }
            })
            .and_then(|state| {
                let fresh = DemandForecaster::new(settings, STEP_MINUTES, self.clock).ok()?;
                let want = fresh.state().config;
                if state.config != want {
                    tracing::warn!(configmap = %self.name, "predictor settings changed since the state was stored; starting fresh");
                    return None;
                }
                match DemandForecaster::restore(state, self.clock) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(configmap = %self.name, error = %e, "stored predictor state is unusable; starting fresh");
                        None
                    }
                }
            });
        match restored {
            Some(f) => {
                tracing::info!(configmap = %self.name, "predictor state restored");
                self.forecaster = Some(f);
            }
            None => self.forecaster = self.fresh(settings),
        }
    }

    fn fresh(&self, settings: &PredictiveSettings) -> Option<DemandForecaster> {
        match DemandForecaster::new(settings, STEP_MINUTES, self.clock) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "predictor settings rejected; no forecasts");
                None
            }
        }
    }

    /// One reconcile: measure lead times, observe demand, and return the forecast for the
    /// snapshot (`None` when predictive scaling is off or no model could be built).
    /// `capacity_gpus` is [`forecast::capacity_gpus`] of the snapshot being planned.
    pub async fn tick(
        &mut self,
        now: DateTime<Utc>,
        policy: &AutoscalingPolicySpec,
        nodes: &[NodeView],
        pods: &[PodView],
        capacity_gpus: f64,
    ) -> Option<ForecastView> {
        if !policy.enable_predictive_scaling {
            return None;
        }
        if self.lead.observe(now, nodes) {
            self.dirty = true;
        }
        let settings = &policy.predictive;
        let key = Self::settings_key(settings);
        if !self.loaded {
            self.load(settings).await;
            self.built_for = Some(key);
        } else if self.built_for != Some(key) {
            tracing::info!("predictive settings changed; the forecaster starts over");
            self.forecaster = self.fresh(settings);
            self.built_for = Some(key);
            self.dirty = true;
        }
        let demand = forecast::demand_gpus(pods);
        self.observe(now, demand);
        let lead = self.lead();
        self.forecaster
            .as_ref()
            .map(|f| f.view(now, capacity_gpus, settings, lead))
    }

    /// Averages demand over the current step window; observes the mean when a window closes.
    fn observe(&mut self, now: DateTime<Utc>, demand: f64) {
        let step = i64::from(STEP_MINUTES) * 60;
        let index = now.timestamp().div_euclid(step);
        match &mut self.window {
            Some((i, sum, n)) if *i == index => {
                *sum += demand;
                *n += 1;
            }
            previous => {
                if let Some((i, sum, n)) = previous.take()
                    && n > 0
                    && let Some(f) = self.forecaster.as_mut()
                    && let Some(at) = DateTime::from_timestamp(i * step, 0)
                {
                    f.observe(at, sum / f64::from(n));
                    self.dirty = true;
                }
                *previous = Some((index, demand, 1));
            }
        }
    }

    /// Persists the state if it changed and the last write is old enough.
    pub async fn persist(&mut self, now: DateTime<Utc>) {
        if !self.loaded || !self.dirty {
            return;
        }
        if self
            .last_persist
            .is_some_and(|t| now - t < self.persist_every)
        {
            return;
        }
        let Some(f) = &self.forecaster else { return };
        let json = match f.state().to_json() {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "encoding predictor state failed");
                return;
            }
        };
        let mut data = BTreeMap::from([(STATE_KEY.to_string(), json)]);
        if let Some(l) = self.lead.seconds() {
            data.insert(LEAD_KEY.to_string(), l.to_string());
        }
        match self
            .store
            .save(&self.name, data, self.resource_version.as_deref())
            .await
        {
            Ok(rv) => {
                self.resource_version = rv;
                self.last_persist = Some(now);
                self.dirty = false;
            }
            Err(StoreError::Conflict) => {
                tracing::warn!(configmap = %self.name, "predictor state was written by another replica; reloading it");
                self.loaded = false;
                self.forecaster = None;
                self.window = None;
            }
            Err(e) => {
                tracing::warn!(configmap = %self.name, error = %e, "persisting predictor state failed")
            }
        }
    }
}

/// The forecaster's business-hours clock (re-exported for the CLI).
pub use crate::forecast::{ForecastClock, parse_utc_offset};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{gpu_pod, node_pool};
    use chrono::FixedOffset;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};
    use gpu_autoscaler_api::CapacityType;

    fn policy() -> AutoscalingPolicySpec {
        AutoscalingPolicySpec {
            enable_predictive_scaling: true,
            node_pools: vec![node_pool(
                "od",
                CapacityType::OnDemand,
                0,
                10,
                &["p3.16xlarge"],
                &[],
            )],
            ..Default::default()
        }
    }

    /// Weekdays 09-17 UTC: 32 GPUs of running pods; nothing otherwise.
    fn pods_at(t: DateTime<Utc>) -> Vec<PodView> {
        let busy =
            !matches!(t.weekday(), Weekday::Sat | Weekday::Sun) && (9..17).contains(&t.hour());
        if !busy {
            return Vec::new();
        }
        (0..4)
            .map(|i| {
                let mut p = gpu_pod(&format!("p{i}"), 8);
                p.node = Some("n".into());
                p
            })
            .collect()
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    /// Runs `p` every five minutes from `from` for `days`.
    async fn feed(p: &mut Predictor, from: DateTime<Utc>, days: i64) -> Option<ForecastView> {
        let policy = policy();
        let mut t = from;
        let mut last = None;
        while t < from + Duration::days(days) {
            last = p.tick(t, &policy, &[], &pods_at(t), 32.0).await;
            p.persist(t).await;
            t += Duration::minutes(5);
        }
        last
    }

    #[tokio::test]
    async fn state_survives_a_restart_through_the_store() {
        let store = StateStore::memory();
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();
        let mut a = Predictor::new(
            store.clone(),
            "p",
            utc(),
            std::time::Duration::from_secs(180),
        );
        let before = feed(&mut a, start, 15).await.expect("forecast");
        // Force the last write (persist_every has passed by then).
        let end = start + Duration::days(15);
        a.persist(end + Duration::minutes(10)).await;
        let written = a.state().expect("model");
        let stored = store
            .load(&configmap_name("p"))
            .await
            .unwrap()
            .expect("stored");
        assert!(stored.data[STATE_KEY].len() < 64 * 1024, "bounded size");

        // A new replica (restart or new leader) continues from the stored state.
        let mut b = Predictor::new(
            store.clone(),
            "p",
            utc(),
            std::time::Duration::from_secs(180),
        );
        let policy = policy();
        let after = b
            .tick(end + Duration::minutes(10), &policy, &[], &[], 32.0)
            .await
            .expect("forecast");
        let restored = b.state().expect("model");
        assert_eq!(restored.config, written.config);
        assert_eq!(
            restored.to_json().unwrap(),
            written.to_json().unwrap(),
            "restored exactly"
        );
        assert!(before.confidence > 0.7, "learned: {}", before.confidence);
        assert!(
            (after.confidence - before.confidence).abs() < 0.2,
            "confidence kept across the restart: {} vs {}",
            after.confidence,
            before.confidence
        );

        // A fresh store knows nothing.
        let mut c = Predictor::new(
            StateStore::memory(),
            "p",
            utc(),
            std::time::Duration::from_secs(180),
        );
        let cold = c
            .tick(end + Duration::minutes(10), &policy, &[], &[], 32.0)
            .await
            .expect("forecast");
        assert!(cold.confidence < 0.3, "no history: {}", cold.confidence);
    }

    #[tokio::test]
    async fn a_newer_write_by_another_replica_wins() {
        let store = StateStore::memory();
        let start = Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap();
        let mut a = Predictor::new(
            store.clone(),
            "p",
            utc(),
            std::time::Duration::from_secs(60),
        );
        let mut b = Predictor::new(
            store.clone(),
            "p",
            utc(),
            std::time::Duration::from_secs(60),
        );
        feed(&mut a, start, 1).await;
        // b loads now, a writes again later: b's next write conflicts and b reloads a's state.
        let policy = policy();
        let t = start + Duration::days(1);
        b.tick(t, &policy, &[], &pods_at(t), 32.0).await;
        feed(&mut a, t, 1).await;
        let a_state = a.state().unwrap().to_json().unwrap();
        let t2 = t + Duration::days(1);
        b.tick(t2, &policy, &[], &[], 32.0).await;
        b.tick(t2 + Duration::minutes(6), &policy, &[], &[], 32.0)
            .await;
        b.persist(t2 + Duration::minutes(6)).await;
        let stored = store.load(&configmap_name("p")).await.unwrap().unwrap();
        assert_eq!(stored.data[STATE_KEY], a_state, "b did not overwrite a");
        b.tick(t2 + Duration::minutes(7), &policy, &[], &[], 32.0)
            .await;
        assert_eq!(b.state().unwrap().to_json().unwrap(), a_state, "b reloaded");
    }

    #[tokio::test]
    async fn lead_time_is_measured_from_creation_to_gpus_and_persisted() {
        let store = StateStore::memory();
        let t0 = Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap();
        let mut p = Predictor::new(store.clone(), "p", utc(), std::time::Duration::from_secs(0));
        assert_eq!(p.lead(), DEFAULT_LEAD);
        let mut node = crate::engine::NodeView {
            name: "n1".into(),
            pool: Some("od".into()),
            capacity_type: None,
            instance_type: None,
            zone: None,
            created: t0,
            ready: false,
            gpus_capacity: 0,
            gpus_allocatable: 0,
            gpu_resource: None,
            cpu_millis_allocatable: 0,
            memory_bytes_allocatable: 0,
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            interruption: None,
            provider_id: None,
        };
        let policy = policy();
        p.tick(
            t0 + Duration::seconds(5),
            &policy,
            std::slice::from_ref(&node),
            &[],
            0.0,
        )
        .await;
        node.ready = true;
        node.gpus_allocatable = 8;
        let f = p
            .tick(
                t0 + Duration::seconds(95),
                &policy,
                std::slice::from_ref(&node),
                &[],
                8.0,
            )
            .await
            .expect("forecast");
        assert_eq!(p.lead(), Duration::seconds(95));
        assert_eq!(f.lead_time_seconds, 95);
        p.persist(t0 + Duration::seconds(95)).await;
        let mut q = Predictor::new(store, "p", utc(), std::time::Duration::from_secs(0));
        q.tick(t0 + Duration::seconds(100), &policy, &[], &[], 8.0)
            .await;
        assert_eq!(q.lead(), Duration::seconds(95), "restored");
    }

    #[tokio::test]
    async fn predictive_scaling_off_means_no_forecast_and_no_writes() {
        let store = StateStore::memory();
        let mut p = Predictor::new(store.clone(), "p", utc(), std::time::Duration::from_secs(0));
        let mut off = policy();
        off.enable_predictive_scaling = false;
        let t = Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap();
        assert!(p.tick(t, &off, &[], &[], 0.0).await.is_none());
        p.persist(t).await;
        assert!(store.load(&configmap_name("p")).await.unwrap().is_none());
    }

    #[test]
    fn utc_offsets_parse() {
        let secs = |s: &str| parse_utc_offset(s).map(|o| o.local_minus_utc());
        assert_eq!(secs("+00:00"), Ok(0));
        assert_eq!(secs("+01:00"), Ok(3600));
        assert_eq!(secs("-05:30"), Ok(-19800));
        assert_eq!(secs("+0930"), Ok(34200));
        assert_eq!(secs("Z"), Ok(0));
        assert!(parse_utc_offset("01:00").is_err());
        assert!(parse_utc_offset("+25:00").is_err());
        assert!(parse_utc_offset("+1:0").is_err());
    }
}
