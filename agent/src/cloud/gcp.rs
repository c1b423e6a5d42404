//! GCP metadata server: `GET /computeMetadata/v1/instance/preempted` with
//! `Metadata-Flavor: Google` answers `TRUE` once the VM is being preempted (Spot and
//! preemptible VMs get about 30 s) and `FALSE` otherwise.
//!
//! GCP gives no termination time, so the time is the first detection plus the notice length,
//! kept fixed for as long as the flag stays up so the node annotation does not move.
//!
//! With `wait_for_change`, each poll after the first is a hanging GET that returns as soon as
//! the value changes (`last_etag` pins the value we already saw), which cuts detection latency
//! from up to one poll interval to the metadata server's propagation delay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::StatusCode;

use super::aws::status_error;
use super::{Cloud, Notice, NoticeKind, PollError};
use crate::http::{HttpClient, join};

pub const DEFAULT_ENDPOINT: &str = "http://metadata.google.internal";
const PREEMPTED_PATH: &str = "/computeMetadata/v1/instance/preempted";
/// GCP's documented preemption notice for Spot and preemptible VMs.
pub const DEFAULT_NOTICE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct GcpMetadata {
    http: HttpClient,
    endpoint: String,
    timeout: Duration,
    notice: Duration,
    /// Some(hang time): long-poll with `wait_for_change`.
    wait_for_change: Option<Duration>,
    etag: Option<String>,
    /// A long poll has been made since the agent started.
    hung: bool,
    first_seen: Option<DateTime<Utc>>,
}

impl GcpMetadata {
    pub fn new(http: HttpClient, endpoint: impl Into<String>, timeout: Duration) -> Self {
        GcpMetadata {
            http,
            endpoint: endpoint.into(),
            timeout,
            notice: DEFAULT_NOTICE,
            wait_for_change: None,
            etag: None,
            hung: false,
            first_seen: None,
        }
    }

    pub fn notice(mut self, notice: Duration) -> Self {
        self.notice = notice;
        self
    }

    /// Long-poll, each hanging request lasting at most `hang` (whole seconds, at least 1).
    pub fn wait_for_change(mut self, hang: Option<Duration>) -> Self {
        self.wait_for_change = hang;
        self
    }

    pub async fn poll(&mut self, now: DateTime<Utc>) -> Result<Option<Notice>, PollError> {
        let first = self.poll_request(now).await?;
        // Long-polling needs the value's ETag; the very first poll had none, so it goes
        // straight on to hang instead of leaving a whole poll interval unwatched.
        if first.is_none() && self.wait_for_change.is_some() && !self.hung {
            self.hung = true;
            return self.poll_request(now).await;
        }
        Ok(first)
    }

    async fn poll_request(&mut self, now: DateTime<Utc>) -> Result<Option<Notice>, PollError> {
        let base = join(&self.endpoint, PREEMPTED_PATH);
        let (url, timeout) = match (&self.wait_for_change, &self.etag) {
            (Some(hang), Some(etag)) => {
                self.hung = true;
                let secs = hang.as_secs().max(1);
                (
                    format!("{base}?wait_for_change=true&last_etag={etag}&timeout_sec={secs}"),
                    Duration::from_secs(secs) + self.timeout,
                )
            }
            _ => (base.clone(), self.timeout),
        };
        let response = self
            .http
            .get(&url, &[("Metadata-Flavor", "Google")], timeout)
            .await?;
        if response.status != StatusCode::OK {
            return Err(status_error(base, &response));
        }
        self.etag = response
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // The detection time of a long poll is when it returned, not when it started.
        let detected = if self.wait_for_change.is_some() {
            Utc::now()
        } else {
            now
        };
        match response.text().trim() {
            "TRUE" => {
                let first = *self.first_seen.get_or_insert(detected);
                let notice = chrono::Duration::from_std(self.notice)
                    .unwrap_or(chrono::Duration::seconds(30));
                Ok(Some(Notice {
                    cloud: Cloud::Gcp,
                    kind: NoticeKind::Termination,
                    action: "preempted".to_string(),
                    time: first + notice,
                    event_id: None,
                }))
            }
            "FALSE" => {
                self.first_seen = None;
                Ok(None)
            }
            other => Err(PollError::Decode {
                url: base,
                reason: format!("expected TRUE or FALSE, got {other:?}"),
            }),
        }
    }
}
