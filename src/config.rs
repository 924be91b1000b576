//! Connector configuration: parsed from the user's JSON, every problem reported at once.
//!
//! Unknown keys are ignored (Airbyte adds its own); a missing or malformed key produces a
//! [`ConfigError`] that names the key and says how to fix it. Secrets are wrapped in
//! [`Secret`], whose `Debug`/`Display` never print the value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub const DEFAULT_BASE_URL: &str = "https://api.loopsubscriptions.com/admin/2023-10";
pub const MAX_PAGE_SIZE: u32 = 50;
pub const DEFAULT_START_DATE: &str = "2015-01-01T00:00:00Z";

/// How webhook signatures are encoded (Loop does not document hex vs base64).
pub use loop_webhooks::signature::Encoding as SignatureEncoding;
/// A value that must never be printed (API token, webhook secrets): `Debug` shows `***`.
pub use loop_webhooks::signature::Secret;

/// One endpoint's pace: `requests` every `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: f64,
}

impl RateLimit {
    /// Even spacing between two requests at this limit.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.per_seconds / f64::from(self.requests.max(1)))
    }
}

/// Loop's documented per-endpoint limits; unknown ones are paced like `/subscription`.
pub fn default_rate_limits() -> BTreeMap<String, RateLimit> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, requests, per_seconds| {
        m.insert(
            k.to_string(),
            RateLimit {
                requests,
                per_seconds,
            },
        );
    };
    put("subscription", 2, 3.0);
    put("order", 2, 3.0);
    put("activityLog", 2, 3.0);
    put("customer", 1, 1.0);
    put("product", 6, 1.0);
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterBounds {
    /// Inclusivity of Loop's epoch filters is undocumented: widen every request by one
    /// second on each side and filter by instant on our side (safe default).
    Unknown,
    /// Trust the filters to be inclusive on whole seconds.
    Inclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalidRecord {
    Emit,
    Skip,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyUnit {
    /// Loop's amounts are decimal strings in major units ("5.39"): passed through verbatim.
    Major,
    /// Loop's amounts are integers in minor units (cents): converted to exact decimal
    /// strings in major units using the currency's exponent.
    Minor,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub api_token: Secret,
    pub start_date: DateTime<Utc>,
    pub base_url: String,
    pub page_size: u32,
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub rate_limit_fraction: f64,
    pub max_concurrent_streams: usize,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    pub filter_bounds: FilterBounds,
    pub window_target_pages: u32,
    pub clock_skew: Duration,
    pub on_invalid_record: OnInvalidRecord,
    /// Validate records against the stream schemas (benchmarks turn it off).
    pub validate_records: bool,
    pub money_unit: MoneyUnit,
    pub journal_path: Option<PathBuf>,
    pub webhook_secrets: Vec<Secret>,
    pub webhook_signature_encoding: SignatureEncoding,
    pub webhook_path: String,
    pub webhook_max_body_bytes: usize,
}

/// Everything wrong with a config, each entry naming the key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, key: &str, hint: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problems.push(format!(
                    "`{key}` must be a string, got {}; {hint}",
                    kind(other)
                ));
                None
            }
        }
    }

    fn number(&mut self, key: &str, min: f64, max: f64, hint: &str) -> Option<f64> {
        let v = self.get(key)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= min && n <= max => Some(n),
            _ => {
                self.problems.push(format!(
                    "`{key}` must be a number between {min} and {max}, got {}; {hint}",
                    short(v)
                ));
                None
            }
        }
    }

    fn integer(&mut self, key: &str, min: u64, max: u64, hint: &str) -> Option<u64> {
        let v = self.get(key)?;
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= min && n <= max => Some(n),
            _ => {
                self.problems.push(format!(
                    "`{key}` must be a whole number between {min} and {max}, got {}; {hint}",
                    short(v)
                ));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> T {
        let Some(s) = self.string(key, "") else {
            return default;
        };
        match options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&s))
        {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.problems.push(format!(
                    "`{key}` must be one of {}, got {:?}",
                    names.join(", "),
                    s
                ));
                default
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

/// `start_date` and cursors in state: RFC 3339, or a bare date (`2024-01-31`, midnight UTC).
pub use loop_time::parse_instant;

fn parse_json(text: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!(
            "the config file is not valid JSON ({e}); it must be a JSON object such as {{\"api_token\": \"...\"}}"
        )],
    })
}

impl Config {
    /// Parse the config file's text. Errors never contain the token.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_value(&parse_json(text)?)
    }

    /// The config for `serve`, which never calls the API: `api_token` may be absent.
    pub fn for_receiver(text: &str) -> Result<Config, ConfigError> {
        let mut value = parse_json(text)?;
        if let Some(m) = value.as_object_mut() {
            m.entry("api_token")
                .or_insert_with(|| Value::String("unused-by-serve".into()));
        }
        Config::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigError {
                problems: vec![format!(
                    "the config must be a JSON object, got {}",
                    kind(value)
                )],
            });
        };
        let mut r = Reader {
            obj,
            problems: Vec::new(),
        };

        let token_hint =
            "create a token in Loop admin → Settings → API tokens and put it in `api_token`";
        let api_token = match r.string("api_token", token_hint) {
            Some(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
            Some(_) => {
                r.problems
                    .push(format!("`api_token` is empty; {token_hint}"));
                None
            }
            None => {
                if r.get("api_token").is_none() {
                    r.problems
                        .push(format!("`api_token` is missing; {token_hint}"));
                }
                None
            }
        };

        let start_date = match r.string("start_date", "use RFC 3339, e.g. 2024-01-01T00:00:00Z") {
            None => parse_instant(DEFAULT_START_DATE),
            Some(s) => match parse_instant(&s) {
                Some(t) if t <= Utc::now() => Some(t),
                Some(_) => {
                    r.problems.push(format!(
                        "`start_date` {s:?} is in the future; use a past date such as 2024-01-01T00:00:00Z"
                    ));
                    None
                }
                None => {
                    r.problems.push(format!(
                        "`start_date` {s:?} is not an RFC 3339 date-time; use e.g. 2024-01-01T00:00:00Z"
                    ));
                    None
                }
            },
        };

        let base_url = match r.string(
            "base_url",
            "e.g. https://api.loopsubscriptions.com/admin/2023-10",
        ) {
            None => DEFAULT_BASE_URL.to_string(),
            Some(s) => {
                let s = s.trim().trim_end_matches('/').to_string();
                match reqwest::Url::parse(&s) {
                    Ok(u)
                        if (u.scheme() == "https" || u.scheme() == "http")
                            && u.host().is_some() =>
                    {
                        s
                    }
                    _ => {
                        r.problems.push(format!(
                            "`base_url` {s:?} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}"
                        ));
                        String::new()
                    }
                }
            }
        };

        let page_size = r
            .integer(
                "page_size",
                1,
                u64::from(MAX_PAGE_SIZE),
                "Loop allows at most 50 records per page",
            )
            .unwrap_or(u64::from(MAX_PAGE_SIZE)) as u32;

        let mut rate_limits = default_rate_limits();
        if let Some(v) = r.get("rate_limits") {
            match v {
                Value::Object(m) => {
                    for (endpoint, limit) in m {
                        let ep = endpoint.trim_start_matches('/').to_string();
                        let requests = limit.get("requests").and_then(Value::as_u64);
                        let per = limit.get("per_seconds").and_then(Value::as_f64);
                        match (requests, per) {
                            (Some(q), Some(p)) if (1..=10_000).contains(&q) && p > 0.0 && p <= 3600.0 => {
                                rate_limits.insert(
                                    ep,
                                    RateLimit {
                                        requests: q as u32,
                                        per_seconds: p,
                                    },
                                );
                            }
                            _ => r.problems.push(format!(
                                "`rate_limits.{endpoint}` must be {{\"requests\": N ≥ 1, \"per_seconds\": S > 0}}, got {}",
                                short(limit)
                            )),
                        }
                    }
                }
                other => r.problems.push(format!(
                    "`rate_limits` must be an object keyed by endpoint, e.g. {{\"subscription\": {{\"requests\": 2, \"per_seconds\": 3}}}}, got {}",
                    kind(other)
                )),
            }
        }
        let rate_limit_fraction = r
            .number(
                "rate_limit_fraction",
                0.01,
                1.0,
                "the share of Loop's store-wide rate limit this connector may use (1 = all of it)",
            )
            .unwrap_or(1.0);
        let max_concurrent_streams =
            r.integer("max_concurrent_streams", 1, 16, "").unwrap_or(5) as usize;

        let mut retry = RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(1000),
            max_backoff: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(900),
        };
        if let Some(v) = r.get("retry") {
            match v.as_object() {
                Some(m) => {
                    let mut sub = Reader {
                        obj: m,
                        problems: Vec::new(),
                    };
                    if let Some(n) = sub.integer("max_attempts", 1, 100, "") {
                        retry.max_attempts = n as u32;
                    }
                    if let Some(n) = sub.integer("initial_backoff_ms", 1, 600_000, "") {
                        retry.initial_backoff = Duration::from_millis(n);
                    }
                    if let Some(n) = sub.integer("max_backoff_ms", 1, 3_600_000, "") {
                        retry.max_backoff = Duration::from_millis(n);
                    }
                    if let Some(n) = sub.integer("max_elapsed_seconds", 1, 86_400, "") {
                        retry.max_elapsed = Duration::from_secs(n);
                    }
                    r.problems
                        .extend(sub.problems.into_iter().map(|p| format!("in `retry`: {p}")));
                }
                None => r.problems.push(format!(
                    "`retry` must be an object such as {{\"max_attempts\": 8}}, got {}",
                    kind(v)
                )),
            }
        }
        let request_timeout = Duration::from_secs(
            r.integer("request_timeout_seconds", 1, 3600, "")
                .unwrap_or(60),
        );
        let filter_bounds = r.choice(
            "epoch_filter_bounds",
            &[
                ("unknown", FilterBounds::Unknown),
                ("inclusive", FilterBounds::Inclusive),
            ],
            FilterBounds::Unknown,
        );
        let window_target_pages =
            r.integer("window_target_pages", 1, 1000, "").unwrap_or(50) as u32;
        let clock_skew = Duration::from_secs(
            r.integer("clock_skew_seconds", 0, 86_400, "")
                .unwrap_or(300),
        );
        let on_invalid_record = r.choice(
            "on_invalid_record",
            &[
                ("emit", OnInvalidRecord::Emit),
                ("skip", OnInvalidRecord::Skip),
                ("fail", OnInvalidRecord::Fail),
            ],
            OnInvalidRecord::Emit,
        );
        let validate_records = match r.get("validate_records") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                r.problems.push(format!(
                    "`validate_records` must be true or false, got {}",
                    short(other)
                ));
                true
            }
        };
        let money_unit = r.choice(
            "money_unit",
            &[("major", MoneyUnit::Major), ("minor", MoneyUnit::Minor)],
            MoneyUnit::Major,
        );
        let journal_path = r
            .string(
                "journal_path",
                "a file path for the webhook journal (SQLite)",
            )
            .map(PathBuf::from);
        let mut webhook_secrets = Vec::new();
        match r.get("webhook_secrets") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, s) in items.iter().enumerate() {
                    match s.as_str() {
                        Some(s) if !s.is_empty() => webhook_secrets.push(Secret::new(s)),
                        _ => r.problems.push(format!(
                            "`webhook_secrets[{i}]` must be a non-empty string (the secret Loop shows for the webhook)"
                        )),
                    }
                }
            }
            Some(Value::String(s)) if !s.is_empty() => webhook_secrets.push(Secret::new(s.clone())),
            Some(other) => r.problems.push(format!(
                "`webhook_secrets` must be a list of strings, got {}",
                kind(other)
            )),
        }
        if let Ok(env) = std::env::var("LOOP_WEBHOOK_SECRETS") {
            webhook_secrets.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Secret::new),
            );
        }
        let webhook_signature_encoding = r.choice(
            "webhook_signature_encoding",
            &[
                ("auto", SignatureEncoding::Auto),
                ("hex", SignatureEncoding::Hex),
                ("base64", SignatureEncoding::Base64),
            ],
            SignatureEncoding::Auto,
        );
        let webhook_path = r
            .string("webhook_path", "e.g. /webhooks/loop")
            .unwrap_or_else(|| "/webhooks/loop".to_string());
        if !webhook_path.starts_with('/') {
            r.problems.push(format!(
                "`webhook_path` {webhook_path:?} must start with '/'"
            ));
        }
        let webhook_max_body_bytes = r
            .integer("webhook_max_body_bytes", 1024, 64 * 1024 * 1024, "")
            .unwrap_or(1024 * 1024) as usize;

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Config {
            api_token: api_token.expect("checked"),
            start_date: start_date.expect("checked"),
            base_url,
            page_size,
            rate_limits,
            rate_limit_fraction,
            max_concurrent_streams,
            retry,
            request_timeout,
            filter_bounds,
            window_target_pages,
            clock_skew,
            on_invalid_record,
            validate_records,
            money_unit,
            journal_path,
            webhook_secrets,
            webhook_signature_encoding,
            webhook_path,
            webhook_max_body_bytes,
        })
    }

    /// The pace for an endpoint, after the configured share of the pool.
    pub fn rate_limit(&self, endpoint: &str) -> RateLimit {
        let base = self
            .rate_limits
            .get(endpoint)
            .copied()
            .unwrap_or(RateLimit {
                requests: 2,
                per_seconds: 3.0,
            });
        RateLimit {
            requests: base.requests,
            per_seconds: base.per_seconds / self.rate_limit_fraction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_value(&json!({"api_token": "tok"})).unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.page_size, 50);
        assert_eq!(c.rate_limit("subscription").requests, 2);
        assert_eq!(c.on_invalid_record, OnInvalidRecord::Emit);
    }

    #[test]
    fn every_problem_is_reported_and_names_its_key() {
        let err = Config::from_value(&json!({
            "start_date": "yesterday", "page_size": 100, "base_url": "ftp://x",
            "rate_limits": {"order": {"requests": 0}}, "on_invalid_record": "explode"
        }))
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "api_token",
            "start_date",
            "page_size",
            "base_url",
            "rate_limits.order",
            "on_invalid_record",
        ] {
            assert!(text.contains(key), "{key} not named in: {text}");
        }
        assert_eq!(err.problems.len(), 6);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::from_value(
            &json!({"api_token": "s3cr3t-token", "webhook_secrets": ["whsec-1"]}),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"));
        assert!(!dbg.contains("whsec-1"));
    }

    #[test]
    fn rate_limit_overrides_and_fraction() {
        let c = Config::from_value(&json!({"api_token": "t", "rate_limit_fraction": 0.5,
            "rate_limits": {"/customer": {"requests": 4, "per_seconds": 2}}}))
        .unwrap();
        let l = c.rate_limit("customer");
        assert_eq!(l.requests, 4);
        assert!((l.interval().as_secs_f64() - 1.0).abs() < 1e-9);
        assert_eq!(c.rate_limit("subscription").per_seconds, 6.0);
    }
}
