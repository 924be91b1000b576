//! Connector configuration: the user's JSON parsed into typed sections (API and auth,
//! pacing and retries, sync, webhooks), every problem reported at once.
//!
//! Every key with a default or bounds is one [`IntKey`]/[`ChoiceKey`] constant in `keys`;
//! the parser reads them and a test checks `spec.json` states the same defaults and
//! bounds. A missing or malformed key produces a [`ConfigError`] that names the key and
//! says how to fix it; an unknown key is accepted (Airbyte adds its own) with a warning in
//! [`Config::warnings`] that suggests the key it looks like. Secrets are wrapped in
//! [`Secret`], whose `Debug`/`Display` never print the value. The environment
//! (`LOOP_WEBHOOK_SECRETS`) is merged by the front end that needs it, not here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loop_webhooks::ConnectionLimits;
use serde_json::{Map, Value};

/// How webhook signatures are encoded (Loop does not document hex vs base64).
pub use loop_webhooks::signature::Encoding as SignatureEncoding;
/// A value that must never be printed (API token, webhook secrets): `Debug` shows `***`.
pub use loop_webhooks::signature::Secret;

use loop_webhooks::server::{path_problem, secret_problem};

mod keys;
mod reader;

pub use keys::*;
pub use reader::did_you_mean;
/// A JSON value's kind in words ("a string", "an array"), for error messages.
pub(crate) use reader::kind;
use reader::{short, Reader};

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
    /// Loop's amounts are in major units ("5.39"): their digits are kept exactly.
    Major,
    /// Loop's amounts are integers in minor units (cents): converted to exact major-unit
    /// amounts using the currency's exponent. (How they go out: [`MoneyType`].)
    Minor,
}

/// How amounts go out (always exact: never a float on the way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyType {
    /// JSON numbers with the exact decimal digits (`5.39`), typed `number` in the schemas:
    /// destinations create numeric columns.
    Number,
    /// Decimal strings (`"5.39"`), typed `string`.
    String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

/// Where Loop is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub token: Secret,
    pub base_url: String,
    pub page_size: u32,
    pub request_timeout: Duration,
}

/// How fast to go and how to recover.
#[derive(Debug, Clone)]
pub struct PacingSettings {
    /// Loop's defaults for every known endpoint, plus the user's overrides.
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub rate_limit_fraction: f64,
    pub rate_limit_margin: f64,
    pub max_concurrent_streams: usize,
    pub retry: RetryPolicy,
}

/// What to read and how records come out.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub start_date: DateTime<Utc>,
    pub filter_bounds: FilterBounds,
    pub window_target_pages: u32,
    pub checkpoint_interval_records: u64,
    /// Record bytes one stream's window keeps in memory; the rest waits in `spill_dir`.
    pub held_memory_mb: u64,
    /// Where windows past `held_memory_mb` keep their records (None: the system's
    /// temporary directory).
    pub spill_dir: Option<PathBuf>,
    pub clock_skew: Duration,
    pub on_invalid_record: OnInvalidRecord,
    /// Validate records against the stream schemas (benchmarks turn it off).
    pub validate_records: bool,
    pub money_unit: MoneyUnit,
    pub money_type: MoneyType,
}

/// The webhook receiver's settings, and where its journal is (also read by `read`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub journal_path: Option<PathBuf>,
    pub secrets: Vec<Secret>,
    pub signature_encoding: SignatureEncoding,
    pub path: String,
    pub max_body_bytes: usize,
    /// The cap on open connections and the timeouts that free them.
    pub limits: ConnectionLimits,
}

/// What `reconcile` tolerates and when it compares.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Differences tolerated before `reconcile` exits 2 (the larger of the two applies).
    pub max_drift: u64,
    pub max_drift_fraction: f64,
    /// Changes younger than this are left to the next run.
    pub settle: Duration,
}

/// The connector's configuration (`check`, `discover`, `read`, `reconcile`).
#[derive(Debug, Clone)]
pub struct Config {
    pub api: ApiSettings,
    pub pacing: PacingSettings,
    pub sync: SyncSettings,
    pub webhooks: WebhookSettings,
    pub reconcile: ReconcileSettings,
    /// What did not stop parsing but is probably a mistake (unknown keys, with the key
    /// they look like): the front end shows them.
    pub warnings: Vec<String>,
}

/// Everything wrong with a config, each entry naming the key and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// `start_date` and cursors in state: RFC 3339, or a bare date (`2024-01-31`, midnight UTC).
pub use loop_time::parse_instant;

const TOKEN_HINT: &str =
    "create a token in Loop admin → Settings → API tokens and put it in `api_token`";

fn read_token(r: &mut Reader, required: bool) -> Option<Secret> {
    match r.string("api_token", &format!("; {TOKEN_HINT}")) {
        Some(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
        Some(_) => {
            r.problem(format!("`api_token` is empty; {TOKEN_HINT}"));
            None
        }
        None => {
            if required && r.get("api_token").is_none() {
                r.problem(format!("`api_token` is missing; {TOKEN_HINT}"));
            }
            None
        }
    }
}

fn read_base_url(r: &mut Reader) -> String {
    let Some(s) = r.string(
        "base_url",
        "; e.g. https://api.loopsubscriptions.com/admin/2023-10",
    ) else {
        return DEFAULT_BASE_URL.to_string();
    };
    let s = s.trim().trim_end_matches('/').to_string();
    match reqwest::Url::parse(&s) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => s,
        _ => {
            r.problem(format!(
                "`base_url` {s:?} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}"
            ));
            String::new()
        }
    }
}

fn read_api(r: &mut Reader, token: Option<Secret>) -> Option<ApiSettings> {
    let base_url = read_base_url(r);
    let page_size = r.integer(&PAGE_SIZE) as u32;
    let request_timeout = Duration::from_secs(r.integer(&REQUEST_TIMEOUT_SECONDS));
    Some(ApiSettings {
        token: token?,
        base_url,
        page_size,
        request_timeout,
    })
}

fn read_rate_limits(r: &mut Reader) -> BTreeMap<String, RateLimit> {
    let mut limits: BTreeMap<String, RateLimit> = DEFAULT_RATE_LIMITS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    match r.get("rate_limits") {
        None => {}
        Some(Value::Object(m)) => {
            for (endpoint, limit) in m {
                let key = endpoint.trim_start_matches('/');
                if !limits.contains_key(key) {
                    let names = DEFAULT_RATE_LIMITS.iter().map(|(k, _)| *k);
                    let hint = did_you_mean(key, names.clone())
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    r.problem(format!(
                        "`rate_limits.{endpoint}` is not one of Loop's endpoints: {hint}the keys are endpoint paths: {}",
                        names.collect::<Vec<_>>().join(", ")
                    ));
                    continue;
                }
                let requests = limit.get("requests").and_then(Value::as_u64);
                let per = limit.get("per_seconds").and_then(Value::as_f64);
                let q = RATE_LIMIT_REQUESTS;
                match (requests, per) {
                    (Some(n), Some(p))
                        if (q.min..=q.max).contains(&n)
                            && p > 0.0
                            && p <= RATE_LIMIT_MAX_PER_SECONDS =>
                    {
                        limits.insert(
                            endpoint.trim_start_matches('/').to_string(),
                            RateLimit {
                                requests: n as u32,
                                per_seconds: p,
                            },
                        );
                    }
                    _ => r.problem(format!(
                        "`rate_limits.{endpoint}` must be {{\"requests\": N, \"per_seconds\": S}} with N a whole number from {} to {} and 0 < S ≤ {RATE_LIMIT_MAX_PER_SECONDS}, got {}",
                        q.min,
                        q.max,
                        short(limit)
                    )),
                }
            }
        }
        Some(other) => r.problem(format!(
            "`rate_limits` must be an object keyed by endpoint, e.g. {{\"subscription\": {{\"requests\": 2, \"per_seconds\": 3}}}}, got {}",
            kind(other)
        )),
    }
    limits
}

fn read_retry(r: &mut Reader) -> RetryPolicy {
    let empty = Map::new();
    let obj = match r.get("retry") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => {
            r.problem(format!(
                "`retry` must be an object such as {{\"max_attempts\": 8}}, got {}",
                kind(other)
            ));
            &empty
        }
    };
    let mut sub = Reader::new(obj, "retry.");
    let policy = RetryPolicy {
        max_attempts: sub.integer(&RETRY_MAX_ATTEMPTS) as u32,
        initial_backoff: Duration::from_millis(sub.integer(&RETRY_INITIAL_BACKOFF_MS)),
        max_backoff: Duration::from_millis(sub.integer(&RETRY_MAX_BACKOFF_MS)),
        max_elapsed: Duration::from_secs(sub.integer(&RETRY_MAX_ELAPSED_SECONDS)),
    };
    r.problems.extend(std::mem::take(&mut sub.problems));
    r.nested_unknown.extend(sub.unknown_keys());
    policy
}

fn read_pacing(r: &mut Reader) -> PacingSettings {
    PacingSettings {
        rate_limits: read_rate_limits(r),
        rate_limit_fraction: r.number_in(
            "rate_limit_fraction",
            RATE_LIMIT_FRACTION_MIN,
            1.0,
            RATE_LIMIT_FRACTION_DEFAULT,
            "; the share of Loop's store-wide rate limit this connector may use (1 = all of it)",
        ),
        rate_limit_margin: r.number_in(
            "rate_limit_margin",
            0.0,
            RATE_LIMIT_MARGIN_MAX,
            RATE_LIMIT_MARGIN_DEFAULT,
            "; how much wider than the limit requests are spaced (0.05 = 5 %)",
        ),
        max_concurrent_streams: r.integer(&MAX_CONCURRENT_STREAMS) as usize,
        retry: read_retry(r),
    }
}

fn read_start_date(r: &mut Reader) -> Option<DateTime<Utc>> {
    let Some(s) = r.string(
        "start_date",
        "; use RFC 3339, e.g. 2024-01-01T00:00:00Z, or a date such as 2024-01-01",
    ) else {
        return parse_instant(DEFAULT_START_DATE);
    };
    match parse_instant(&s) {
        Some(t) if t <= loop_time::now() => Some(t),
        Some(_) => {
            r.problem(format!(
                "`start_date` {s:?} is in the future; use a past date such as 2024-01-01T00:00:00Z"
            ));
            None
        }
        None => {
            r.problem(format!(
                "`start_date` {s:?} is neither an RFC 3339 date-time nor a date; use e.g. 2024-01-01T00:00:00Z or 2024-01-01"
            ));
            None
        }
    }
}

fn read_sync(r: &mut Reader) -> Option<SyncSettings> {
    let start_date = read_start_date(r);
    let filter_bounds = r.choice(&EPOCH_FILTER_BOUNDS);
    let window_target_pages = r.integer(&WINDOW_TARGET_PAGES) as u32;
    let checkpoint_interval_records = r.integer(&CHECKPOINT_INTERVAL_RECORDS);
    let held_memory_mb = r.integer(&HELD_MEMORY_MB);
    let spill_dir = read_spill_dir(r);
    let clock_skew = Duration::from_secs(r.integer(&CLOCK_SKEW_SECONDS));
    let on_invalid_record = r.choice(&ON_INVALID_RECORD);
    let validate_records = r.boolean("validate_records", true);
    let money_unit = r.choice(&MONEY_UNIT);
    let money_type = r.choice(&MONEY_TYPE);
    Some(SyncSettings {
        start_date: start_date?,
        filter_bounds,
        window_target_pages,
        checkpoint_interval_records,
        held_memory_mb,
        spill_dir,
        clock_skew,
        on_invalid_record,
        validate_records,
        money_unit,
        money_type,
    })
}

/// `spill_dir` must be a directory now, not when the first large window needs it.
fn read_spill_dir(r: &mut Reader) -> Option<PathBuf> {
    let s = r.string(
        "spill_dir",
        "; a directory for the temporary file of windows past `held_memory_mb`",
    )?;
    let dir = PathBuf::from(&s);
    if dir.is_dir() {
        Some(dir)
    } else {
        r.problem(format!(
            "`spill_dir` {s:?} is not a directory; create it, or leave `spill_dir` out to use the system's temporary directory"
        ));
        None
    }
}

fn read_webhooks(r: &mut Reader) -> WebhookSettings {
    let journal_path = r
        .string(
            "journal_path",
            "; a file path for the webhook journal (SQLite)",
        )
        .map(PathBuf::from);
    let mut secrets = Vec::new();
    match r.get("webhook_secrets") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                match s.as_str().map(Secret::new) {
                    Some(s) => match secret_problem(&s) {
                        None => secrets.push(s),
                        Some(p) => r.problem(format!("`webhook_secrets[{i}]` {p}")),
                    },
                    None => r.problem(format!(
                        "`webhook_secrets[{i}]` must be a string (the secret Loop shows for the webhook)"
                    )),
                }
            }
        }
        Some(Value::String(s)) if secret_problem(&Secret::new(s.as_str())).is_none() => {
            secrets.push(Secret::new(s.clone()))
        }
        Some(other) => r.problem(format!(
            "`webhook_secrets` must be a list of strings, got {}",
            kind(other)
        )),
    }
    let signature_encoding = r.choice(&WEBHOOK_SIGNATURE_ENCODING);
    let path = r
        .string("webhook_path", "; e.g. /webhooks/loop")
        .unwrap_or_else(|| DEFAULT_WEBHOOK_PATH.to_string());
    if let Some(p) = path_problem(&path) {
        r.problem(format!("`webhook_path`: {p}"));
    }
    let max_body_bytes = r.integer(&WEBHOOK_MAX_BODY_BYTES) as usize;
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(r.integer(&WEBHOOK_HEADER_READ_TIMEOUT_SECONDS)),
        body_read_timeout: Duration::from_secs(r.integer(&WEBHOOK_BODY_READ_TIMEOUT_SECONDS)),
        idle_timeout: Duration::from_secs(r.integer(&WEBHOOK_IDLE_TIMEOUT_SECONDS)),
        max_connections: r.integer(&WEBHOOK_MAX_CONNECTIONS) as usize,
    };
    WebhookSettings {
        journal_path,
        secrets,
        signature_encoding,
        path,
        max_body_bytes,
        limits,
    }
}

fn read_reconcile(r: &mut Reader) -> ReconcileSettings {
    ReconcileSettings {
        max_drift: r.integer(&RECONCILE_MAX_DRIFT),
        max_drift_fraction: r.number_in(
            "reconcile_max_drift_fraction",
            0.0,
            RECONCILE_MAX_DRIFT_FRACTION_MAX,
            RECONCILE_MAX_DRIFT_FRACTION_DEFAULT,
            "; the share of checked entities that may differ, e.g. 0.01 for 1 %",
        ),
        settle: Duration::from_secs(r.integer(&RECONCILE_SETTLE_SECONDS)),
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!(
            "the config file is not valid JSON ({e}); it must be a JSON object such as {{\"api_token\": \"...\"}}"
        )],
    })?;
    match value {
        Value::Object(m) => Ok(m),
        other => Err(ConfigError {
            problems: vec![format!(
                "the config must be a JSON object, got {}",
                kind(&other)
            )],
        }),
    }
}

/// Every section of a config file, checked together so that all problems show at once.
/// `api` is None only when the token is absent and was not required.
struct Sections {
    api: Option<ApiSettings>,
    pacing: PacingSettings,
    sync: SyncSettings,
    webhooks: WebhookSettings,
    reconcile: ReconcileSettings,
    warnings: Vec<String>,
}

fn read_sections(obj: &Map<String, Value>, token_required: bool) -> Result<Sections, ConfigError> {
    let mut r = Reader::new(obj, "");
    let token = read_token(&mut r, token_required);
    let api = read_api(&mut r, token);
    let pacing = read_pacing(&mut r);
    let sync = read_sync(&mut r);
    let webhooks = read_webhooks(&mut r);
    let reconcile = read_reconcile(&mut r);
    let mut warnings = r.unknown_keys();
    warnings.append(&mut r.nested_unknown);
    match sync {
        Some(sync) if r.problems.is_empty() => Ok(Sections {
            api,
            pacing,
            sync,
            webhooks,
            reconcile,
            warnings,
        }),
        _ => Err(ConfigError {
            problems: r.problems,
        }),
    }
}

impl Config {
    /// Parse the config file's text. Errors never contain the token.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_object(&parse_object(text)?)
    }

    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        match value {
            Value::Object(m) => Config::from_object(m),
            other => Err(ConfigError {
                problems: vec![format!(
                    "the config must be a JSON object, got {}",
                    kind(other)
                )],
            }),
        }
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Config, ConfigError> {
        let s = read_sections(obj, true)?;
        let Some(api) = s.api else {
            // (read_sections reported it already; kept for the type)
            return Err(ConfigError {
                problems: vec![format!("`api_token` is missing; {TOKEN_HINT}")],
            });
        };
        Ok(Config {
            api,
            pacing: s.pacing,
            sync: s.sync,
            webhooks: s.webhooks,
            reconcile: s.reconcile,
            warnings: s.warnings,
        })
    }

    /// The pace for an endpoint, after the configured share of the pool.
    pub fn rate_limit(&self, endpoint: &str) -> RateLimit {
        let base = self
            .pacing
            .rate_limits
            .get(endpoint)
            .copied()
            .unwrap_or(FALLBACK_RATE_LIMIT);
        RateLimit {
            requests: base.requests,
            per_seconds: base.per_seconds / self.pacing.rate_limit_fraction,
        }
    }
}

/// What `serve` reads from the config file: the receiver's settings and how records are
/// normalized (`serve --into`), with the API token not required.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub webhooks: WebhookSettings,
    pub sync: SyncSettings,
    pub warnings: Vec<String>,
}

impl ReceiverConfig {
    pub fn from_value(value: &Value) -> Result<ReceiverConfig, ConfigError> {
        let Value::Object(m) = value else {
            return Err(ConfigError {
                problems: vec![format!(
                    "the config must be a JSON object, got {}",
                    kind(value)
                )],
            });
        };
        let s = read_sections(m, false)?;
        Ok(ReceiverConfig {
            webhooks: s.webhooks,
            sync: s.sync,
            warnings: s.warnings,
        })
    }
}

impl WebhookSettings {
    /// The receiver's settings from the same config file `read` uses, and the warnings
    /// about it. `serve` never calls the API, so `api_token` may be absent; every other
    /// key is still checked.
    pub fn from_json_str(text: &str) -> Result<(WebhookSettings, Vec<String>), ConfigError> {
        read_sections(&parse_object(text)?, false).map(|s| (s.webhooks, s.warnings))
    }

    /// Add the secrets of a comma-separated list (the `LOOP_WEBHOOK_SECRETS` variable).
    pub fn add_secrets_from_list(&mut self, list: &str) {
        self.secrets.extend(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_value(&json!({"api_token": "tok"})).unwrap();
        assert_eq!(c.api.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.api.page_size, 50);
        assert_eq!(c.rate_limit("subscription").requests, 2);
        assert_eq!(c.sync.on_invalid_record, OnInvalidRecord::Emit);
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
        assert!(
            !text.contains("; ;"),
            "one separator between problems: {text}"
        );
    }

    #[test]
    fn a_rate_limit_over_its_bound_states_the_real_bounds() {
        let err = Config::from_value(&json!({"api_token": "t",
            "rate_limits": {"order": {"requests": 20000, "per_seconds": 1}}}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("from 1 to 10000"), "{err}");
        assert!(err.contains("0 < S ≤ 3600"), "{err}");
    }

    #[test]
    fn unknown_keys_warn_with_the_key_they_look_like() {
        let c = Config::from_value(&json!({"api_token": "t", "start_dat": "2024-01-01",
            "pagesize": 10, "airbyte_extra": true, "retry": {"max_attempt": 3}}))
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("`start_dat`: did you mean `start_date`?"), "{w}");
        assert!(w.contains("`pagesize`: did you mean `page_size`?"), "{w}");
        assert!(w.contains("`airbyte_extra`: it is ignored"), "{w}");
        assert!(
            w.contains("`retry.max_attempt`: did you mean `retry.max_attempts`?"),
            "{w}"
        );
        assert_eq!(c.warnings.len(), 4);
        let clean = Config::from_value(&json!({"api_token": "t", "page_size": 10})).unwrap();
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
    }

    #[test]
    fn an_unknown_rate_limits_endpoint_is_an_error_listing_the_endpoints() {
        let err = Config::from_value(&json!({"api_token": "t",
            "rate_limits": {"subscriptions": {"requests": 1, "per_seconds": 1}}}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("did you mean `subscription`?"), "{err}");
        assert!(
            err.contains("subscription, order, activityLog, customer, product"),
            "{err}"
        );
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
    fn the_receiver_needs_no_token_but_checks_everything_else() {
        let (w, _) = WebhookSettings::from_json_str(r#"{"webhook_secrets": ["a"]}"#).unwrap();
        assert_eq!(w.secrets.len(), 1);
        assert_eq!(w.path, DEFAULT_WEBHOOK_PATH);
        let err = WebhookSettings::from_json_str(r#"{"page_size": 0}"#).unwrap_err();
        assert!(err.to_string().contains("page_size"), "{err}");
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

    /// `spec.json` is what users and Airbyte's UI read: its defaults and bounds must be
    /// the ones the parser applies.
    #[test]
    fn spec_json_states_the_codes_defaults_and_bounds() {
        let spec: Value = serde_json::from_str(crate::airbyte::SPEC_JSON).unwrap();
        let props = &spec["properties"];
        let int_keys = [
            (&props["page_size"], PAGE_SIZE),
            (&props["request_timeout_seconds"], REQUEST_TIMEOUT_SECONDS),
            (&props["max_concurrent_streams"], MAX_CONCURRENT_STREAMS),
            (&props["window_target_pages"], WINDOW_TARGET_PAGES),
            (&props["held_memory_mb"], HELD_MEMORY_MB),
            (
                &props["checkpoint_interval_records"],
                CHECKPOINT_INTERVAL_RECORDS,
            ),
            (&props["clock_skew_seconds"], CLOCK_SKEW_SECONDS),
            (&props["webhook_max_body_bytes"], WEBHOOK_MAX_BODY_BYTES),
            (&props["reconcile_max_drift"], RECONCILE_MAX_DRIFT),
            (&props["reconcile_settle_seconds"], RECONCILE_SETTLE_SECONDS),
            (
                &props["webhook_header_read_timeout_seconds"],
                WEBHOOK_HEADER_READ_TIMEOUT_SECONDS,
            ),
            (
                &props["webhook_body_read_timeout_seconds"],
                WEBHOOK_BODY_READ_TIMEOUT_SECONDS,
            ),
            (
                &props["webhook_idle_timeout_seconds"],
                WEBHOOK_IDLE_TIMEOUT_SECONDS,
            ),
            (&props["webhook_max_connections"], WEBHOOK_MAX_CONNECTIONS),
            (
                &props["retry"]["properties"]["max_attempts"],
                RETRY_MAX_ATTEMPTS,
            ),
            (
                &props["retry"]["properties"]["initial_backoff_ms"],
                RETRY_INITIAL_BACKOFF_MS,
            ),
            (
                &props["retry"]["properties"]["max_backoff_ms"],
                RETRY_MAX_BACKOFF_MS,
            ),
            (
                &props["retry"]["properties"]["max_elapsed_seconds"],
                RETRY_MAX_ELAPSED_SECONDS,
            ),
        ];
        for (p, k) in int_keys {
            assert_eq!(p["default"], json!(k.default), "default of {}", k.key);
            assert_eq!(p["minimum"], json!(k.min), "minimum of {}", k.key);
            assert_eq!(p["maximum"], json!(k.max), "maximum of {}", k.key);
        }
        let requests = &props["rate_limits"]["additionalProperties"]["properties"];
        assert_eq!(
            requests["requests"]["minimum"],
            json!(RATE_LIMIT_REQUESTS.min)
        );
        assert_eq!(
            requests["requests"]["maximum"],
            json!(RATE_LIMIT_REQUESTS.max)
        );
        assert_eq!(
            requests["per_seconds"]["maximum"],
            json!(RATE_LIMIT_MAX_PER_SECONDS as u64)
        );
        for (key, default, names) in [
            (
                EPOCH_FILTER_BOUNDS.key,
                EPOCH_FILTER_BOUNDS.default_name(),
                EPOCH_FILTER_BOUNDS
                    .options
                    .iter()
                    .map(|o| o.0)
                    .collect::<Vec<_>>(),
            ),
            (
                ON_INVALID_RECORD.key,
                ON_INVALID_RECORD.default_name(),
                ON_INVALID_RECORD.options.iter().map(|o| o.0).collect(),
            ),
            (
                MONEY_UNIT.key,
                MONEY_UNIT.default_name(),
                MONEY_UNIT.options.iter().map(|o| o.0).collect(),
            ),
            (
                MONEY_TYPE.key,
                MONEY_TYPE.default_name(),
                MONEY_TYPE.options.iter().map(|o| o.0).collect(),
            ),
            (
                WEBHOOK_SIGNATURE_ENCODING.key,
                WEBHOOK_SIGNATURE_ENCODING.default_name(),
                WEBHOOK_SIGNATURE_ENCODING
                    .options
                    .iter()
                    .map(|o| o.0)
                    .collect(),
            ),
        ] {
            assert_eq!(props[key]["default"], json!(default), "default of {key}");
            assert_eq!(props[key]["enum"], json!(names), "values of {key}");
        }
        assert_eq!(props["start_date"]["default"], json!(DEFAULT_START_DATE));
        assert_eq!(props["base_url"]["default"], json!(DEFAULT_BASE_URL));
        assert_eq!(
            props["webhook_path"]["default"],
            json!(DEFAULT_WEBHOOK_PATH)
        );
        assert_eq!(props["validate_records"]["default"], json!(true));
        assert_eq!(
            props["rate_limit_fraction"]["default"],
            json!(RATE_LIMIT_FRACTION_DEFAULT as u64)
        );
        assert_eq!(
            props["rate_limit_fraction"]["minimum"],
            json!(RATE_LIMIT_FRACTION_MIN)
        );
        assert_eq!(
            props["rate_limit_margin"]["default"],
            json!(RATE_LIMIT_MARGIN_DEFAULT)
        );
        assert_eq!(
            props["rate_limit_margin"]["maximum"],
            json!(RATE_LIMIT_MARGIN_MAX as u64)
        );
        let fraction = &props["reconcile_max_drift_fraction"];
        assert_eq!(
            fraction["default"].as_f64(),
            Some(RECONCILE_MAX_DRIFT_FRACTION_DEFAULT)
        );
        assert_eq!(
            fraction["maximum"].as_f64(),
            Some(RECONCILE_MAX_DRIFT_FRACTION_MAX)
        );
        assert_eq!(fraction["minimum"].as_f64(), Some(0.0));
    }
}
