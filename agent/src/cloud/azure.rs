//! Azure Scheduled Events:
//! `GET /metadata/scheduledevents?api-version=2020-07-01` with `Metadata: true` answers
//! `{"DocumentIncarnation": n, "Events": [{"EventId", "EventType", "ResourceType",
//! "Resources": [vm names], "EventStatus", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", ...}]}`.
//! A Spot eviction is `EventType: "Preempt"` (at least 30 s ahead). Approving an event early
//! (`POST` the same URL with `{"StartRequests": [{"EventId": "..."}]}`) lets Azure proceed
//! at once; the agent does so only once the node is drained or the deadline is close, see
//! [`crate::watcher::azure_ack_due`].

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::aws::status_error;
use super::{Cloud, Notice, NoticeKind, PollError};
use crate::http::{HttpClient, join};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const EVENTS_PATH: &str = "/metadata/scheduledevents?api-version=2020-07-01";
/// Azure's minimum notice for a Spot eviction; used when NotBefore is empty (event started).
pub const DEFAULT_NOTICE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvents {
    #[serde(default)]
    pub document_incarnation: i64,
    #[serde(default)]
    pub events: Vec<ScheduledEvent>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    pub event_id: String,
    pub event_type: String,
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub event_status: String,
    #[serde(default)]
    pub not_before: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub event_source: String,
    #[serde(default)]
    pub duration_in_seconds: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StartRequests {
    pub start_requests: Vec<StartRequest>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StartRequest {
    pub event_id: String,
}

/// The Preempt event that concerns `vm_name`, if any. Pure.
pub fn preempt_for<'a>(events: &'a ScheduledEvents, vm_name: &str) -> Option<&'a ScheduledEvent> {
    events.events.iter().find(|e| {
        e.event_type.eq_ignore_ascii_case("Preempt")
            && (e.resources.is_empty()
                || e.resources.iter().any(|r| r.eq_ignore_ascii_case(vm_name)))
    })
}

/// `NotBefore` is RFC 1123 (`Mon, 19 Sep 2016 18:29:47 GMT`); empty once the event started.
pub fn parse_not_before(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[derive(Debug)]
pub struct AzureScheduledEvents {
    http: HttpClient,
    endpoint: String,
    timeout: Duration,
    vm_name: String,
    /// (EventId, first seen) of the current Preempt event, for a stable time when NotBefore
    /// is empty.
    first_seen: Option<(String, DateTime<Utc>)>,
}

impl AzureScheduledEvents {
    pub fn new(
        http: HttpClient,
        endpoint: impl Into<String>,
        timeout: Duration,
        vm_name: impl Into<String>,
    ) -> Self {
        AzureScheduledEvents {
            http,
            endpoint: endpoint.into(),
            timeout,
            vm_name: vm_name.into(),
            first_seen: None,
        }
    }

    pub async fn poll(&mut self, now: DateTime<Utc>) -> Result<Option<Notice>, PollError> {
        let url = join(&self.endpoint, EVENTS_PATH);
        let response = self
            .http
            .get(&url, &[("Metadata", "true")], self.timeout)
            .await?;
        if response.status != StatusCode::OK {
            return Err(status_error(url, &response));
        }
        let events: ScheduledEvents =
            serde_json::from_slice(&response.body).map_err(|e| PollError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let Some(event) = preempt_for(&events, &self.vm_name) else {
            self.first_seen = None;
            return Ok(None);
        };
        let first = match &self.first_seen {
            Some((id, t)) if *id == event.event_id => *t,
            _ => {
                self.first_seen = Some((event.event_id.clone(), now));
                now
            }
        };
        let time = parse_not_before(&event.not_before).unwrap_or_else(|| {
            first + chrono::Duration::from_std(DEFAULT_NOTICE).unwrap_or_default()
        });
        Ok(Some(Notice {
            cloud: Cloud::Azure,
            kind: NoticeKind::Termination,
            action: event.event_type.clone(),
            time,
            event_id: Some(event.event_id.clone()),
        }))
    }

    /// Approves the event so Azure may go ahead now.
    pub async fn acknowledge(&self, event_id: &str) -> Result<(), PollError> {
        let url = join(&self.endpoint, EVENTS_PATH);
        let body = StartRequests {
            start_requests: vec![StartRequest {
                event_id: event_id.to_string(),
            }],
        };
        let body = serde_json::to_vec(&body).map_err(|e| PollError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let response = self
            .http
            .send(
                Method::POST,
                &url,
                &[("Metadata", "true"), ("Content-Type", "application/json")],
                Some(Bytes::from(body)),
                self.timeout,
            )
            .await?;
        if !response.status.is_success() {
            return Err(status_error(url, &response));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example document of the Scheduled Events documentation, with a Preempt event.
    const DOC: &str = r#"{
        "DocumentIncarnation": 2,
        "Events": [
            {
                "EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
                "EventStatus": "Scheduled",
                "EventType": "Freeze",
                "ResourceType": "VirtualMachine",
                "Resources": ["WestNO_0", "WestNO_1"],
                "NotBefore": "Mon, 11 Apr 2022 22:26:58 GMT",
                "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
                "EventSource": "Platform",
                "DurationInSeconds": 5
            },
            {
                "EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
                "EventStatus": "Scheduled",
                "EventType": "Preempt",
                "ResourceType": "VirtualMachine",
                "Resources": ["WestNO_2"],
                "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
                "Description": "",
                "EventSource": "Platform",
                "DurationInSeconds": -1
            }
        ]
    }"#;

    #[test]
    fn finds_the_preempt_event_for_this_vm_only() {
        let events: ScheduledEvents = serde_json::from_str(DOC).expect("doc");
        assert!(preempt_for(&events, "WestNO_0").is_none());
        let event = preempt_for(&events, "westno_2").expect("preempt");
        assert_eq!(event.event_id, "602d9444-d2cd-49c7-8624-8643e7171297");
        assert_eq!(
            parse_not_before(&event.not_before).map(|t| t.to_rfc3339()),
            Some("2016-09-19T18:29:47+00:00".to_string())
        );
        assert_eq!(parse_not_before(""), None);
    }

    #[test]
    fn start_request_body_has_the_documented_shape() {
        let body = StartRequests {
            start_requests: vec![StartRequest {
                event_id: "abc".to_string(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"StartRequests":[{"EventId":"abc"}]}"#
        );
    }
}
