//! The Loop Admin API client: auth, envelope, pacing, retries and error classes.
//!
//! Every endpoint is paced on its own (`pacing`): a request waits a window after the
//! response to the request `n` places before it (Loop's limit of n per window times the
//! configured share of the store-wide pool, plus a margin), and requests are evenly
//! spaced at that limit. A 429 blocks the endpoint
//! for `Retry-After` (or until its own last requests leave the limit's window) and slows
//! it down; successes speed it back up, never to the pace that was refused.
//!
//! The client writes nothing into the engine's output: it returns typed results, keeps
//! per-endpoint stats, and tells a [`RetryObserver`] about each retry it is about to make.

mod pacing;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;

use crate::config::{Config, RetryPolicy};
use crate::event::FailureType;

pub use pacing::RequestStats;
use pacing::{Counters, Endpoint, Reservation};

/// The longest `Retry-After` honoured as given (a larger one is capped to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A retry the client is about to make (after `wait`).
#[derive(Debug, Clone)]
pub struct RetryNotice {
    /// The request's path (no host, no query).
    pub path: String,
    pub page: u32,
    pub reason: String,
    /// This retry's number, from 1.
    pub attempt: u32,
    pub max_retries: u32,
    pub wait: Duration,
}

impl std::fmt::Display for RetryNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} page {}: {}; retry {}/{} in {:.1}s",
            self.path,
            self.page,
            self.reason,
            self.attempt,
            self.max_retries,
            self.wait.as_secs_f64()
        )
    }
}

/// Told about every retry, before its wait (the engine turns them into LOG lines).
pub trait RetryObserver: Sync {
    fn retrying(&self, notice: RetryNotice);
}

/// Nobody listening (e.g. `check`).
impl RetryObserver for () {
    fn retrying(&self, _: RetryNotice) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Loop rejected the API token (HTTP {status} on {path}): check `api_token` — create or copy a token in Loop admin → Settings → API tokens with read access to this resource")]
    Unauthorized { status: u16, path: String },
    #[error("HTTP 404 on {path}: this endpoint does not exist at the configured `base_url`{hint}")]
    NotFound { path: String, hint: String },
    #[error("Loop refused the request to {path} as invalid (HTTP {status}: {message})")]
    Rejected {
        status: u16,
        path: String,
        message: String,
    },
    #[error("gave up on {path} page {page} after {attempts} attempts over {elapsed_s:.1}s; last problem: {last}. {hint}")]
    Exhausted {
        path: String,
        page: u32,
        attempts: u32,
        elapsed_s: f64,
        last: String,
        hint: GiveUpHint,
    },
}

impl ApiError {
    pub fn failure_type(&self) -> FailureType {
        match self {
            ApiError::Unauthorized { .. } | ApiError::NotFound { .. } => FailureType::Config,
            ApiError::Rejected { .. } => FailureType::System,
            ApiError::Exhausted { .. } => FailureType::Transient,
        }
    }
}

/// What to do about retries that ran out, from the last problem's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUpHint {
    /// Nothing answered at all: most likely a wrong `base_url`.
    Unreachable {
        base_url: String,
    },
    RateLimited,
    Outage,
}

impl std::fmt::Display for GiveUpHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUpHint::Unreachable { base_url } => write!(
                f,
                "Nothing answered at {base_url}: check `base_url` (host, port and API version), and that this machine can reach it"
            ),
            GiveUpHint::RateLimited => write!(
                f,
                "Loop kept rate limiting this store (its limits are shared with the merchant's other apps): try again later, or lower `rate_limit_fraction`"
            ),
            GiveUpHint::Outage => write!(f, "Loop may be down: try again later"),
        }
    }
}

/// One page of a list endpoint.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Value>,
    pub has_next: bool,
    /// The server's clock at the response (HTTP `Date`), to reason about skew.
    pub server_date: Option<DateTime<Utc>>,
}

enum Attempt {
    Retry {
        reason: String,
        /// HTTP 429: the endpoint is paused and its pace slowed.
        rate_limited: bool,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// No connection could be made (nothing answered).
        unreachable: bool,
    },
    Fatal(ApiError),
}

impl Attempt {
    /// A transient failure with no instructions from the server: back off and retry.
    fn retry(reason: impl Into<String>) -> Self {
        Attempt::Retry {
            reason: reason.into(),
            rate_limited: false,
            retry_after: None,
            unreachable: false,
        }
    }
}

pub struct LoopClient {
    http: reqwest::Client,
    base_url: String,
    page_size: u32,
    retry: RetryPolicy,
    /// The path part of `base_url`, for messages (no host, no query).
    base_path: String,
    endpoints: HashMap<String, Endpoint>,
    /// Pace for an endpoint without a configured limit (paced like `/subscription`).
    fallback: Endpoint,
    stats: Counters,
}

impl LoopClient {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        let mut token = HeaderValue::from_str(config.api.token.expose())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-token-characters"));
        token.set_sensitive(true);
        headers.insert("X-Loop-Token", token);
        headers.insert("Accept", HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("source-loop/", env!("CARGO_PKG_VERSION")))
            .timeout(config.api.request_timeout)
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        // `rate_limits` holds Loop's defaults for every endpoint plus the user's overrides
        let endpoints = config
            .pacing
            .rate_limits
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    Endpoint::new(config.rate_limit(name), config.pacing.rate_limit_margin),
                )
            })
            .collect();
        let base_path = reqwest::Url::parse(&config.api.base_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Ok(LoopClient {
            http,
            base_url: config.api.base_url.clone(),
            page_size: config.api.page_size,
            retry: config.pacing.retry.clone(),
            base_path,
            endpoints,
            fallback: Endpoint::new(
                crate::config::FALLBACK_RATE_LIMIT,
                config.pacing.rate_limit_margin,
            ),
            stats: Counters::default(),
        })
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Requests, retries, 429s and pacing waits for one endpoint.
    pub fn endpoint_stats(&self, endpoint: &str) -> RequestStats {
        self.endpoints
            .get(endpoint)
            .map(|e| e.stats.snapshot())
            .unwrap_or_default()
    }

    /// Requests, retries and 429s over every endpoint.
    pub fn stats(&self) -> RequestStats {
        self.stats.snapshot()
    }

    /// GET one page, retrying what is transient. `params` are extra query parameters.
    pub async fn get_page(
        &self,
        endpoint: &str,
        params: &[(&str, String)],
        page_no: u32,
        observer: &dyn RetryObserver,
    ) -> Result<Page, ApiError> {
        let ep = self.endpoints.get(endpoint).unwrap_or(&self.fallback);
        let url = format!("{}/{}", self.base_url, endpoint);
        let path = format!("{}/{endpoint}", self.base_path);
        let mut query: Vec<(&str, String)> = vec![
            ("pageNo", page_no.to_string()),
            ("pageSize", self.page_size.to_string()),
        ];
        query.extend(params.iter().cloned());

        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut limited_before = false;
        loop {
            attempt += 1;
            let slot = ep.acquire().await;
            ep.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = self.attempt(&url, &path, &query, slot).await;
            let (reason, rate_limited, retry_after, unreachable) = match outcome {
                Ok(page) => {
                    ep.on_success();
                    return Ok(page);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry {
                    reason,
                    rate_limited,
                    retry_after,
                    unreachable,
                }) => (reason, rate_limited, retry_after, unreachable),
            };
            // The server's word when it gave one. Else, for a first 429: until our own
            // recent requests leave the limit's window; for anything else (or a 429
            // again): exponential backoff with jitter.
            let wait = match retry_after {
                Some(w) => w.min(MAX_RETRY_AFTER),
                None if rate_limited && !limited_before => ep.window_wait(),
                None => self.backoff(attempt),
            };
            limited_before |= rate_limited;
            if rate_limited {
                ep.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                ep.on_rate_limited(wait);
            }
            let elapsed = started.elapsed();
            if attempt >= self.retry.max_attempts || elapsed + wait > self.retry.max_elapsed {
                return Err(ApiError::Exhausted {
                    path,
                    page: page_no,
                    attempts: attempt,
                    elapsed_s: elapsed.as_secs_f64(),
                    last: reason,
                    hint: if unreachable {
                        GiveUpHint::Unreachable {
                            base_url: self.base_url.clone(),
                        }
                    } else if rate_limited {
                        GiveUpHint::RateLimited
                    } else {
                        GiveUpHint::Outage
                    },
                });
            }
            ep.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            observer.retrying(RetryNotice {
                path: path.clone(),
                page: page_no,
                reason,
                attempt,
                max_retries: self.retry.max_attempts - 1,
                wait,
            });
            if !rate_limited {
                tokio::time::sleep(wait).await;
            }
            // a 429 blocks the whole endpoint until `wait` has passed (acquire() waits)
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .initial_backoff
            .saturating_mul(1u32 << (attempt - 1).min(20));
        let capped = exp.min(self.retry.max_backoff);
        // full jitter between 50% and 100%
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        capped.mul_f64(jitter)
    }

    async fn attempt(
        &self,
        url: &str,
        path: &str,
        query: &[(&str, String)],
        slot: Reservation<'_>,
    ) -> Result<Page, Attempt> {
        let sent = self.http.get(url).query(query).send().await;
        // The server counted the request before its headers came back (the body may take
        // a while longer): this is the earliest safe anchor for the window.
        slot.answered();
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(Attempt::Retry {
                    reason: describe_reqwest(&e),
                    rate_limited: false,
                    retry_after: None,
                    unreachable: e.is_connect(),
                })
            }
        };
        let status = resp.status();
        let server_date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let is_html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("html"));
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(Attempt::retry(format!(
                    "HTTP {}: body cut short ({})",
                    status.as_u16(),
                    describe_reqwest(&e)
                )))
            }
        };
        let message = || error_message(&body);
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Attempt::Fatal(ApiError::Unauthorized {
                    status: status.as_u16(),
                    path: path.to_string(),
                }))
            }
            StatusCode::NOT_FOUND => {
                let hint = if path.contains("2026-04") && path.ends_with("/order") {
                    "; `/order` is not available on API version 2026-04 — use a 2023-10 `base_url` (…/admin/2023-10) or deselect the `orders` stream".to_string()
                } else {
                    "; check the API version in `base_url` (…/admin/2023-10) or deselect this stream".to_string()
                };
                return Err(Attempt::Fatal(ApiError::NotFound {
                    path: path.to_string(),
                    hint,
                }));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(Attempt::Retry {
                    reason: "HTTP 429 rate limited".to_string(),
                    rate_limited: true,
                    retry_after,
                    unreachable: false,
                })
            }
            StatusCode::REQUEST_TIMEOUT => return Err(Attempt::retry("HTTP 408 request timeout")),
            s if s.is_server_error() => {
                return Err(Attempt::retry(format!(
                    "HTTP {}{}",
                    s.as_u16(),
                    if is_html {
                        " (HTML error page)".to_string()
                    } else {
                        format!(": {}", message())
                    }
                )))
            }
            s => {
                return Err(Attempt::Fatal(ApiError::Rejected {
                    status: s.as_u16(),
                    path: path.to_string(),
                    message: message(),
                }))
            }
        }
        let mut value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Err(Attempt::retry(if is_html {
                    "HTTP 200 with an HTML page instead of JSON".to_string()
                } else {
                    format!("malformed JSON page ({e})")
                }))
            }
        };
        if value.get("success").and_then(Value::as_bool) == Some(false) {
            // (checked before `data` is taken out)
            return Err(Attempt::retry(format!(
                "Loop answered success=false: {}",
                message()
            )));
        }
        let records = match value.get_mut("data").map(Value::take) {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Attempt::retry(
                    "malformed page: `data` is not a list".to_string(),
                ))
            }
        };
        let has_next = match value.pointer("/pageInfo/hasNextPage") {
            Some(Value::Bool(b)) => *b,
            None if records.is_empty() => false,
            _ => {
                return Err(Attempt::retry(
                    "malformed page: `pageInfo.hasNextPage` is missing".to_string(),
                ))
            }
        };
        if let Some(i) = records.iter().position(|r| !r.is_object()) {
            return Err(Attempt::retry(format!(
                "malformed page: record {i} is not a JSON object"
            )));
        }
        Ok(Page {
            records,
            has_next,
            server_date,
        })
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    // never include the URL (no secrets there, but keep messages short and stable)
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the body"
    } else {
        "network error"
    };
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    // "Connection refused (os error 111)": the OS code helps nobody
    if let Some(i) = detail.find(" (os error ") {
        detail.truncate(i);
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({detail})")
    }
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(&body[..body.len().min(120)]).to_string();
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        })
}

/// `Retry-After` as seconds (possibly fractional) or an HTTP date.
pub fn parse_retry_after(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when = DateTime::parse_from_rfc2822(s).ok()?.with_timezone(&Utc);
    let delta = when - loop_time::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
    }
}
