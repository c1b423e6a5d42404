//! A small plain-HTTP client for metadata services and agent scrapes.
//!
//! Everything the agent talks to over HTTP is unencrypted and local or in-cluster (link-local
//! metadata endpoints, agents on node IPs), so one hyper client without TLS is enough. Every
//! request carries its own timeout: a hung metadata server must never stall the poll loop.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Bodies larger than this are refused: metadata answers are tiny, and a runaway answer must
/// not grow the agent's memory.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
}

/// A response with its body read completely.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Connection setup counts against the request timeout too, but a separate bound keeps
        // a black-holed address from holding a pooled slot.
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpClient { inner }
    }

    /// Sends one request and reads the whole answer within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let mut builder = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| HttpError::Request {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| HttpError::Transport {
                    url: url.to_string(),
                    reason: error_chain(&e),
                })?;
            let (parts, body) = response.into_parts();
            let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
            let body = limited
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge {
                            url: url.to_string(),
                        }
                    } else {
                        HttpError::Transport {
                            url: url.to_string(),
                            reason: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_string(),
                timeout,
            })?
    }

    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        self.send(Method::GET, url, headers, None, timeout).await
    }
}

/// hyper's errors hide the interesting part (connection refused, ...) in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Joins a base URL (with or without a trailing slash) and an absolute path.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}
