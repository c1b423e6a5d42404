//! Spot-interruption notices from the cloud's instance metadata service.
//!
//! Each cloud announces a reclaim differently; [`CloudWatcher::poll`] turns all of them into
//! one [`Notice`]. A poll never decides what to do with the node: that is [`crate::node`].

pub mod aws;
pub mod azure;
pub mod gcp;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::http::HttpError;

/// Which metadata service to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
    /// No watcher (on-demand nodes, clouds we do not know): utilization only.
    None,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
            Cloud::None => "none",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aws" => Ok(Cloud::Aws),
            "gcp" => Ok(Cloud::Gcp),
            "azure" => Ok(Cloud::Azure),
            "none" => Ok(Cloud::None),
            other => Err(format!(
                "unknown cloud {other:?}: expected aws, gcp, azure or none"
            )),
        }
    }
}

/// What the cloud announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// The instance will be reclaimed at `termination_time`.
    Termination,
    /// AWS rebalance recommendation: elevated risk, no reclaim scheduled yet.
    Rebalance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub cloud: Cloud,
    pub kind: NoticeKind,
    /// The cloud's own word for it: `terminate`, `stop`, `hibernate`, `preempted`, `Preempt`,
    /// `rebalance`.
    pub action: String,
    /// When the instance goes away (termination), or when the recommendation was issued
    /// (rebalance).
    pub time: DateTime<Utc>,
    /// Azure's EventId, needed to acknowledge the event.
    pub event_id: Option<String>,
}

impl Notice {
    /// Identity across polls, so a notice is counted once however often it is seen.
    pub fn key(&self) -> String {
        let kind = match self.kind {
            NoticeKind::Termination => "termination",
            NoticeKind::Rebalance => "rebalance",
        };
        format!(
            "{}/{kind}/{}/{}",
            self.cloud,
            self.event_id.as_deref().unwrap_or(""),
            self.time.to_rfc3339()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url}: unexpected status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: undecodable answer: {reason}")]
    Decode { url: String, reason: String },
}

/// Per-request timeout towards the metadata service; the services answer in milliseconds, and
/// a poll must end well before the next one is due.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The watcher of one cloud.
#[derive(Debug)]
pub enum CloudWatcher {
    Aws(aws::AwsImds),
    Gcp(gcp::GcpMetadata),
    Azure(azure::AzureScheduledEvents),
    None,
}

impl CloudWatcher {
    pub fn cloud(&self) -> Cloud {
        match self {
            CloudWatcher::Aws(_) => Cloud::Aws,
            CloudWatcher::Gcp(_) => Cloud::Gcp,
            CloudWatcher::Azure(_) => Cloud::Azure,
            CloudWatcher::None => Cloud::None,
        }
    }

    /// Asks the metadata service once. A termination wins over a rebalance recommendation.
    /// `now` is the detection time, used where the cloud gives no timestamp.
    pub async fn poll(&mut self, now: DateTime<Utc>) -> Result<Option<Notice>, PollError> {
        match self {
            CloudWatcher::Aws(w) => w.poll().await,
            CloudWatcher::Gcp(w) => w.poll(now).await,
            CloudWatcher::Azure(w) => w.poll(now).await,
            CloudWatcher::None => Ok(None),
        }
    }
}

/// Parses an RFC 3339 timestamp into UTC.
pub(crate) fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
