//! AWS EC2 instance metadata, IMDSv2.
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` yields a session
//!   token; every read carries it as `X-aws-ec2-metadata-token`. A 401 means the token
//!   expired or was rejected: fetch a new one and retry once.
//! - `GET /latest/meta-data/spot/instance-action`: 404 while nothing is scheduled, otherwise
//!   `{"action": "terminate"|"stop"|"hibernate", "time": "2026-01-01T12:00:00Z"}` about two
//!   minutes ahead.
//! - `GET /latest/meta-data/events/recommendations/rebalance`: 404, or
//!   `{"noticeTime": "..."}` when the instance is at elevated risk.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde::Deserialize;

use super::{Cloud, Notice, NoticeKind, PollError, rfc3339};
use crate::http::{HttpClient, Response, join};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_PATH: &str = "/latest/api/token";
const INSTANCE_ACTION_PATH: &str = "/latest/meta-data/spot/instance-action";
const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, the maximum IMDS allows; renewed a minute before it runs out.
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rebalance {
    notice_time: String,
}

#[derive(Debug)]
pub struct AwsImds {
    http: HttpClient,
    endpoint: String,
    timeout: Duration,
    token: Option<(String, Instant)>,
    watch_rebalance: bool,
}

impl AwsImds {
    pub fn new(http: HttpClient, endpoint: impl Into<String>, timeout: Duration) -> Self {
        AwsImds {
            http,
            endpoint: endpoint.into(),
            timeout,
            token: None,
            watch_rebalance: true,
        }
    }

    /// Whether to read rebalance recommendations at all.
    pub fn watch_rebalance(mut self, yes: bool) -> Self {
        self.watch_rebalance = yes;
        self
    }

    async fn token(&mut self) -> Result<String, PollError> {
        if let Some((token, expires)) = &self.token
            && Instant::now() + TOKEN_RENEW_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let url = join(&self.endpoint, TOKEN_PATH);
        let ttl = TOKEN_TTL.as_secs().to_string();
        let response = self
            .http
            .send(
                Method::PUT,
                &url,
                &[(TOKEN_TTL_HEADER, ttl.as_str())],
                None,
                self.timeout,
            )
            .await?;
        if response.status != StatusCode::OK {
            return Err(status_error(url, &response));
        }
        let token = response.text().trim().to_string();
        if token.is_empty() {
            return Err(PollError::Decode {
                url,
                reason: "empty token".to_string(),
            });
        }
        self.token = Some((token.clone(), Instant::now() + TOKEN_TTL));
        Ok(token)
    }

    /// GET with the session token; on 401 the token is renewed and the read retried once.
    async fn read(&mut self, path: &str) -> Result<Response, PollError> {
        let url = join(&self.endpoint, path);
        for attempt in 0..2 {
            let token = self.token().await?;
            let response = self
                .http
                .get(&url, &[(TOKEN_HEADER, token.as_str())], self.timeout)
                .await?;
            if response.status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token = None;
                continue;
            }
            return Ok(response);
        }
        Err(PollError::Status {
            url,
            status: 401,
            body: "token rejected twice".to_string(),
        })
    }

    pub async fn poll(&mut self) -> Result<Option<Notice>, PollError> {
        let response = self.read(INSTANCE_ACTION_PATH).await?;
        match response.status {
            StatusCode::OK => {
                let url = join(&self.endpoint, INSTANCE_ACTION_PATH);
                let action: InstanceAction =
                    serde_json::from_slice(&response.body).map_err(|e| PollError::Decode {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                let time = rfc3339(&action.time).ok_or_else(|| PollError::Decode {
                    url,
                    reason: format!("time {:?} is not RFC 3339", action.time),
                })?;
                return Ok(Some(Notice {
                    cloud: Cloud::Aws,
                    kind: NoticeKind::Termination,
                    action: action.action,
                    time,
                    event_id: None,
                }));
            }
            StatusCode::NOT_FOUND => {}
            _ => {
                return Err(status_error(
                    join(&self.endpoint, INSTANCE_ACTION_PATH),
                    &response,
                ));
            }
        }
        if !self.watch_rebalance {
            return Ok(None);
        }
        let response = self.read(REBALANCE_PATH).await?;
        let url = join(&self.endpoint, REBALANCE_PATH);
        match response.status {
            StatusCode::OK => {
                let rebalance: Rebalance =
                    serde_json::from_slice(&response.body).map_err(|e| PollError::Decode {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                let time = rfc3339(&rebalance.notice_time).ok_or_else(|| PollError::Decode {
                    url,
                    reason: format!("noticeTime {:?} is not RFC 3339", rebalance.notice_time),
                })?;
                Ok(Some(Notice {
                    cloud: Cloud::Aws,
                    kind: NoticeKind::Rebalance,
                    action: "rebalance".to_string(),
                    time,
                    event_id: None,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(url, &response)),
        }
    }
}

pub(crate) fn status_error(url: String, response: &Response) -> PollError {
    let mut body = response.text();
    body.truncate(200);
    PollError::Status {
        url,
        status: response.status.as_u16(),
        body,
    }
}
