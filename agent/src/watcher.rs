//! The interruption watcher: poll the metadata service on an interval, and on a notice bring
//! the Node in line at once (see [`crate::node`]); on Azure, approve the event once the node
//! is drained or the deadline is near.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::cloud::{CloudWatcher, Notice, NoticeKind};
use crate::metrics::{CloudLabels, Metrics, NoticeLabels, ResultLabels};
use crate::node::{Applied, NodeActions};

/// AWS recommends polling every 5 s; the notice is 2 min (AWS) or 30 s (GCP, Azure).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How long before Azure's NotBefore the agent approves the event even if pods remain:
/// approving lets Azure proceed on its own schedule rather than on a timer we do not see.
pub const DEFAULT_AZURE_ACK_MARGIN: Duration = Duration::from_secs(5);

/// Whether to send Azure's StartRequest now. Pure: `evictable` is the number of pods a drain
/// still has to move (`None`: unknown, e.g. the pod list failed).
pub fn azure_ack_due(
    now: DateTime<Utc>,
    not_before: DateTime<Utc>,
    margin: Duration,
    evictable: Option<usize>,
) -> bool {
    let margin = chrono::Duration::from_std(margin).unwrap_or_default();
    evictable == Some(0) || now + margin >= not_before
}

/// What one poll did (for logs and tests).
#[derive(Debug, Clone, Default)]
pub struct PollOutcome {
    pub notice: Option<Notice>,
    /// First time this notice was seen.
    pub new_notice: bool,
    pub applied: Option<Applied>,
    pub acknowledged: bool,
    /// Detection (poll answer) to accepted cordon, when this poll cordoned.
    pub detection_to_cordon: Option<Duration>,
    pub error: Option<String>,
}

pub struct Watcher {
    cloud: CloudWatcher,
    actions: NodeActions,
    metrics: Arc<Metrics>,
    poll_interval: Duration,
    azure_ack_margin: Duration,
    seen: HashSet<String>,
    acknowledged: HashSet<String>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("cloud", &self.cloud.cloud())
            .field("node", &self.actions.node())
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// Bounds the memory of seen-notice keys; a node sees a handful of notices in its life.
const MAX_REMEMBERED: usize = 256;

impl Watcher {
    pub fn new(cloud: CloudWatcher, actions: NodeActions, metrics: Arc<Metrics>) -> Self {
        Watcher {
            cloud,
            actions,
            metrics,
            poll_interval: DEFAULT_POLL_INTERVAL,
            azure_ack_margin: DEFAULT_AZURE_ACK_MARGIN,
            seen: HashSet::new(),
            acknowledged: HashSet::new(),
        }
    }

    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    pub fn azure_ack_margin(mut self, margin: Duration) -> Self {
        self.azure_ack_margin = margin;
        self
    }

    /// One poll and its consequences.
    pub async fn poll_once(&mut self) -> PollOutcome {
        let cloud = self.cloud.cloud().as_str();
        let mut outcome = PollOutcome::default();
        let notice = match self.cloud.poll(Utc::now()).await {
            Ok(Some(notice)) => notice,
            Ok(None) => return outcome,
            Err(e) => {
                self.metrics
                    .poll_errors
                    .get_or_create(&CloudLabels { cloud })
                    .inc();
                tracing::warn!(cloud, error = %e, "metadata poll failed");
                outcome.error = Some(e.to_string());
                return outcome;
            }
        };
        let detected = Instant::now();
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        if self.seen.insert(notice.key()) {
            outcome.new_notice = true;
            let kind = match notice.kind {
                NoticeKind::Termination => "termination",
                NoticeKind::Rebalance => "rebalance",
            };
            self.metrics
                .notices
                .get_or_create(&NoticeLabels { cloud, kind })
                .inc();
            tracing::warn!(
                cloud,
                kind,
                action = %notice.action,
                time = %notice.time,
                node = %self.actions.node(),
                "spot interruption notice"
            );
        }
        match self.actions.apply(&notice).await {
            Ok(applied) => {
                if let Some(cordoned_at) = applied.cordoned_at {
                    let latency = cordoned_at.saturating_duration_since(detected);
                    self.metrics
                        .detection_to_cordon
                        .get_or_create(&CloudLabels { cloud })
                        .observe(latency.as_secs_f64());
                    outcome.detection_to_cordon = Some(latency);
                    tracing::info!(node = %self.actions.node(), ?latency, "node cordoned");
                }
                outcome.applied = Some(applied);
            }
            Err(e) => {
                self.metrics.node_update_errors.inc();
                tracing::error!(error = %e, "updating the node after a notice");
                outcome.error = Some(e.to_string());
            }
        }
        if let (CloudWatcher::Azure(azure), Some(event_id)) = (&self.cloud, &notice.event_id)
            && !self.acknowledged.contains(event_id)
        {
            let evictable = match self.actions.evictable_pods().await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "listing pods for the Azure acknowledgement");
                    None
                }
            };
            if azure_ack_due(Utc::now(), notice.time, self.azure_ack_margin, evictable) {
                let result = match azure.acknowledge(event_id).await {
                    Ok(()) => {
                        self.acknowledged.insert(event_id.clone());
                        outcome.acknowledged = true;
                        tracing::info!(event_id, ?evictable, "approved the Azure Preempt event");
                        "ok"
                    }
                    Err(e) => {
                        tracing::warn!(event_id, error = %e, "approving the Azure event");
                        "error"
                    }
                };
                self.metrics
                    .azure_acks
                    .get_or_create(&ResultLabels { result })
                    .inc();
            }
        }
        outcome.notice = Some(notice);
        outcome
    }

    /// Polls until `shutdown` resolves. Ticks that a slow poll overran are skipped, not
    /// bunched up.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        if matches!(self.cloud, CloudWatcher::None) {
            shutdown.await;
            return;
        }
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    self.poll_once().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_ack_waits_for_drain_or_deadline() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let margin = Duration::from_secs(5);
        // 30 s ahead, 3 pods left: wait.
        assert!(!azure_ack_due(t(0), t(30), margin, Some(3)));
        // Unknown pod count: wait too.
        assert!(!azure_ack_due(t(0), t(30), margin, None));
        // Drained: approve at once.
        assert!(azure_ack_due(t(0), t(30), margin, Some(0)));
        // Within the margin: approve whatever is left.
        assert!(azure_ack_due(t(25), t(30), margin, Some(3)));
        assert!(azure_ack_due(t(40), t(30), margin, None));
    }
}
