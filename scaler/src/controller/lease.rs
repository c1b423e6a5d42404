//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica runs [`run`]; the one holding the Lease acts, the others only watch and
//! report ready. Writes are resourceVersion-guarded replaces, so two replicas racing for an
//! expired Lease can't both win. A Lease counts as expired when its `renewTime` plus its
//! duration is in the past, or when this replica has seen it unchanged for a whole duration
//! (that second rule keeps takeover working when clocks disagree). A leader that fails to
//! renew for `renew_deadline` steps down before any standby may take over.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Lease settings (defaults: 15 s lease, renew every 5 s, step down after 10 s without renewal).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (pod name in a cluster).
    pub identity: String,
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// A leader that couldn't renew for this long stops acting.
    pub renew_deadline: Duration,
    /// How often a standby looks at the Lease.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// The decision, as a pure function of the Lease, the wall clock and how long this replica
/// has seen the Lease unchanged.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    now: DateTime<Utc>,
    unchanged_for: Duration,
) -> LeaseAction {
    let Some(spec) = lease else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return LeaseAction::Acquire;
    }
    if holder == identity {
        return LeaseAction::Renew;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0));
    let expired_by_clock =
        renewed.is_none_or(|r| r + chrono::Duration::from_std(duration).unwrap_or_default() < now);
    if expired_by_clock || unchanged_for >= duration {
        LeaseAction::Acquire
    } else {
        LeaseAction::Follow { holder }
    }
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A handle on the election: who leads right now.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when leadership changes.
    pub async fn changed(&mut self) -> bool {
        let _ = self.rx.changed().await;
        *self.rx.borrow()
    }
}

/// Leadership for a single replica that never contends (tests, `--leader-elect=false`).
pub fn always_leader() -> (watch::Sender<bool>, Leadership) {
    let (tx, rx) = watch::channel(true);
    (tx, Leadership { rx })
}

pub fn channel() -> (watch::Sender<bool>, Leadership) {
    let (tx, rx) = watch::channel(false);
    (tx, Leadership { rx })
}

/// Observed record: when we first saw this exact holder + renew time.
struct Observed {
    key: (Option<String>, Option<MicroTime>),
    since: Instant,
}

/// Runs the election until `shutdown` resolves, publishing leadership on `tx`. On shutdown a
/// leader releases the Lease so a standby takes over at once.
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    tx: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut observed: Option<Observed> = None;
    let mut last_renew: Option<Instant> = None;
    loop {
        let leading = step(&api, &config, &mut observed, &mut last_renew).await;
        let leading = leading && last_renew.is_some_and(|t| t.elapsed() < config.renew_deadline);
        if *tx.borrow() != leading {
            tracing::info!(identity = %config.identity, leading, lease = %config.name, "leadership changed");
            let _ = tx.send(leading);
        }
        let wait = if leading {
            config.renew_every
        } else {
            config.retry_every
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if *tx.borrow() {
        let _ = tx.send(false);
        release(&api, &config).await;
    }
}

/// One read-decide-write round; true when we hold the Lease afterwards.
async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
    last_renew: &mut Option<Instant>,
) -> bool {
    let current = match api.get_opt(&config.name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading the leader Lease failed");
            // Keep leading only while the last renewal is fresh (checked by the caller).
            return last_renew.is_some();
        }
    };
    let spec = current.as_ref().and_then(|l| l.spec.clone());
    let key = (
        spec.as_ref().and_then(|s| s.holder_identity.clone()),
        spec.as_ref().and_then(|s| s.renew_time.clone()),
    );
    let unchanged_for = match observed {
        Some(o) if o.key == key => o.since.elapsed(),
        _ => {
            *observed = Some(Observed {
                key,
                since: Instant::now(),
            });
            Duration::ZERO
        }
    };
    let action = decide(spec.as_ref(), &config.identity, Utc::now(), unchanged_for);
    let lease_seconds = config.duration.as_secs().clamp(1, i32::MAX as u64) as i32;
    let result = match (&action, current) {
        (LeaseAction::Create, _) => {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (LeaseAction::Renew | LeaseAction::Acquire, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if action == LeaseAction::Acquire {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(micro_now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(lease_seconds);
            spec.renew_time = Some(micro_now());
            // The object carries its resourceVersion: a concurrent writer makes this a 409.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (LeaseAction::Follow { holder }, _) => {
            tracing::trace!(%holder, "standing by");
            *last_renew = None;
            return false;
        }
        (_, None) => return false,
    };
    match result {
        Ok(()) => {
            *last_renew = Some(Instant::now());
            true
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Lost a race: someone else wrote first. Re-read next round.
            *last_renew = None;
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "writing the leader Lease failed");
            last_renew.is_some()
        }
    }
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(micro_now());
    if let Err(e) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(error = %e, "releasing the leader Lease failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, now: DateTime<Utc>) -> LeaseSpec {
        let t = now - chrono::Duration::seconds(renewed_secs_ago);
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).expect("valid time"),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_creates_it() {
        assert_eq!(
            decide(None, "a", Utc::now(), Duration::ZERO),
            LeaseAction::Create
        );
    }

    #[test]
    fn holder_renews_and_others_follow_a_live_lease() {
        let now = Utc::now();
        let s = spec(Some("a"), 3, now);
        assert_eq!(
            decide(Some(&s), "a", now, Duration::ZERO),
            LeaseAction::Renew
        );
        assert_eq!(
            decide(Some(&s), "b", now, Duration::from_secs(3)),
            LeaseAction::Follow { holder: "a".into() }
        );
    }

    #[test]
    fn expired_or_released_leases_are_taken_over() {
        let now = Utc::now();
        assert_eq!(
            decide(Some(&spec(Some("a"), 16, now)), "b", now, Duration::ZERO),
            LeaseAction::Acquire
        );
        assert_eq!(
            decide(Some(&spec(None, 1, now)), "b", now, Duration::ZERO),
            LeaseAction::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 1, now)), "b", now, Duration::ZERO),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn a_lease_unchanged_for_its_duration_expires_despite_clock_skew() {
        let now = Utc::now();
        // The holder's clock runs 60 s ahead: by the wall clock it looks fresh for a minute.
        let s = spec(Some("a"), -60, now);
        assert_eq!(
            decide(Some(&s), "b", now, Duration::from_secs(14)),
            LeaseAction::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&s), "b", now, Duration::from_secs(15)),
            LeaseAction::Acquire
        );
    }
}
