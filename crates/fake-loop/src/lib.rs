//! A fake of the Loop Subscriptions Admin API (`/admin/2023-10`, `/admin/2026-04`),
//! served over real HTTP on 127.0.0.1 for integration tests, demos and benchmarks.
//!
//! Data is generated deterministically from a seed. Paging is offset based and computed
//! on the current data at request time, so records changed between page requests move
//! exactly like they do on the real API. Faults, rate limits and mid-sync mutations can
//! be injected through the Rust API or the `/_control/*` HTTP endpoints.
//!
//! What Loop does not document is chosen at start ([`FakeConfig`]), so the engine can be
//! tested and benchmarked under every plausible reading: how "n requests per W seconds"
//! is counted ([`LimiterKind`]: token bucket, sliding or fixed window), whether and how a
//! 429 carries `Retry-After` ([`RetryAfter`]), how the data is spread over time
//! ([`Distribution`]: the original skew with its hot second, uniform, a real store's
//! recency, or bulk-job bursts), filter bounds and page order. The defaults are the
//! original behaviour. [`Stats`] (`/_control/stats`) counts requests and 429s per
//! endpoint. A million subscriptions start in about a second and half a gigabyte.

mod data;
mod distribution;
mod limiter;
mod seed;
mod server;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use data::{Data, Stream};
pub use distribution::Distribution;
pub use limiter::{LimiterKind, ServerJitter};
pub use seed::{SeedData, SeedError};
pub use server::{FakeServer, StartError};
pub use webhooks::{
    sign, Delivery, DeliveryPlan, SignatureEncoding, WebhookOnly, WebhookStats, WebhookTarget,
    SHOP_DOMAIN,
};

/// Order in which list endpoints return records. Ties are broken by id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PageOrder {
    #[default]
    Id,
    UpdatedAsc,
    UpdatedDesc,
}

/// How `*StartEpoch` / `*EndEpoch` filters compare.
///
/// `Inclusive`: `floor(t_seconds)` in `[start, end]`.
/// `Exclusive`: `start*1000 < t_ms < end*1000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FilterBounds {
    #[default]
    Inclusive,
    Exclusive,
}

/// Whether and how a rate limiter's 429 carries a `Retry-After` header. The wait is
/// the real time until the limiter would accept a request. (An injected
/// [`FaultKind::RateLimited`] sends exactly the value it was given.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// Every 429 carries the exact wait in seconds, fractions allowed, rounded up to
    /// the millisecond: "0.15", "1", "2.5". (Until rounded-up was added, this sent
    /// whole seconds.)
    Always,
    /// No 429 carries it.
    Never,
    /// Every other 429 (the 1st, 3rd, ... counted over all endpoints) carries the wait
    /// rounded up to whole seconds, at least "1".
    #[default]
    Sometimes,
    /// Every 429 carries the wait rounded up to whole seconds, at least "1" (0.1 s →
    /// "1"), as servers that only speak integer `Retry-After` do.
    RoundedUp,
}

/// How many records of each stream to generate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub subscriptions: usize,
    pub orders: usize,
    pub customers: usize,
    pub products: usize,
    pub activity_logs: usize,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            subscriptions: 500,
            orders: 800,
            customers: 200,
            products: 30,
            activity_logs: 1000,
        }
    }
}

/// Configuration of a fake server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeConfig {
    pub seed: u64,
    pub counts: Counts,
    pub token: String,
    pub page_order: PageOrder,
    pub filter_bounds: FilterBounds,
    /// Per-endpoint limits as Loop: subscription 2 req/3 s, order 2/3 s, activityLog
    /// 2/3 s, customer 1/s, product 6/s (subscription detail 5/s).
    pub rate_limits: bool,
    /// How those limits are counted (only with `rate_limits`).
    pub limiter: LimiterKind,
    /// Multiplies every limit interval (0.01 = 100x faster).
    pub rate_scale: f64,
    pub retry_after: RetryAfter,
    /// Delay every API request before it is counted and answered (`None`: at once).
    pub jitter: Option<ServerJitter>,
    /// Where createdAt/updatedAt fall in the data range.
    pub distribution: Distribution,
    /// This many subscriptions AND this many orders share one updatedAt second (only
    /// with [`Distribution::Default`]).
    pub hot_second_records: usize,
    /// ~1 in 20 timestamps use other valid ISO 8601 forms.
    pub messy_timestamps: bool,
    /// Generated createdAt/updatedAt lie in the 2 years before this instant.
    pub data_end: DateTime<Utc>,
    /// Send signed webhooks for new subscription and order versions (module `webhooks`).
    pub webhooks: Option<WebhookTarget>,
    /// Serve these records instead of generated ones (`counts` and `seed` then only
    /// shape records created by mutations).
    pub data: Option<SeedData>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let now = Utc::now().timestamp_millis();
        let end = now - now.rem_euclid(1000) - data::HOUR_MS;
        FakeConfig {
            seed: 42,
            counts: Counts::default(),
            token: "fake-token".to_string(),
            page_order: PageOrder::Id,
            filter_bounds: FilterBounds::Inclusive,
            rate_limits: false,
            limiter: LimiterKind::Gcra,
            rate_scale: 1.0,
            retry_after: RetryAfter::Sometimes,
            jitter: None,
            distribution: Distribution::Default,
            hot_second_records: 70,
            messy_timestamps: false,
            data_end: DateTime::<Utc>::from_timestamp_millis(end).unwrap_or_else(Utc::now),
            webhooks: None,
            data: None,
        }
    }
}

/// A fault to inject; each matching API request consumes one of `times`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Endpoint path such as `/subscription` (a version prefix is ignored); `None` =
    /// any API path.
    #[serde(default)]
    pub path: Option<String>,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// That HTTP status with the error envelope.
    Status(u16),
    /// 429 with the error envelope, and `Retry-After` when given.
    RateLimited { retry_after_secs: Option<u64> },
    /// The TCP connection is reset without any response.
    ConnectionReset,
    /// `Content-Length` larger than the bytes sent, then the connection closes.
    TruncatedBody,
    /// Sleep, then answer normally.
    Slow { millis: u64 },
    /// 502 with a text/html body.
    HtmlErrorPage,
    /// 200 with `{"success":false,"message":"Internal error","data":{}}`.
    SuccessFalse,
    /// 200 with a JSON body cut in the middle (consistent Content-Length).
    MalformedJson,
}

/// A change to the data. Stream names: subscriptions, orders, customers, products,
/// activity_logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    /// `count` random existing records get a new version (updatedAt = now, a field
    /// changed). On activity_logs (append-only) this appends `count` new logs.
    Touch { stream: String, count: usize },
    /// Those records (by `id`; by `shopifyId` for products) get a new version.
    TouchIds { stream: String, ids: Vec<i64> },
    /// New records with createdAt = updatedAt = now.
    Create { stream: String, count: usize },
    /// Overwrite fields of one record (e.g. to serve data that breaks the schema); the
    /// record gets a new version (updatedAt = now) unless `fields` sets `updatedAt`.
    Patch {
        stream: String,
        id: i64,
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

impl Mutation {
    /// The stream it changes, and whether it creates records.
    fn target(&self) -> (&str, bool) {
        match self {
            Mutation::Touch { stream, .. }
            | Mutation::TouchIds { stream, .. }
            | Mutation::Patch { stream, .. } => (stream, false),
            Mutation::Create { stream, .. } => (stream, true),
        }
    }
}

/// Why a webhook-only request could not be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookOnlyError {
    #[error("the fake sends no webhooks: start it with a webhook URL (--webhook-url)")]
    NoTarget,
    #[error("no webhooks for stream {0:?}: only subscriptions and orders have them")]
    NoTopic(String),
    #[error("{stream} has no record {id} (newer_than_api needs an existing id)")]
    NoRecord { stream: String, id: i64 },
    #[error("{stream} already has record {id} (unknown_entity needs an id the API does not have)")]
    Exists { stream: String, id: i64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per API path (e.g. `/subscription`), whatever the answer.
    pub requests: BTreeMap<String, u64>,
    /// Successful list/detail responses.
    pub pages_served: u64,
    /// 429 answers (rate limiter and injected `RateLimited` faults).
    pub rate_limited: u64,
    /// The same 429 answers per API path (the keys of `requests`).
    #[serde(default)]
    pub rate_limited_by_path: BTreeMap<String, u64>,
    pub faults_served: u64,
    pub unauthorized: u64,
}

/// Normalises `/admin/2023-10/subscription`, `subscription` or `/subscription` to
/// `/subscription`.
pub(crate) fn norm_path(p: &str) -> String {
    let p = p.trim_end_matches('/');
    let p = match p
        .strip_prefix("/admin/")
        .or_else(|| p.strip_prefix("admin/"))
    {
        Some(rest) => rest.split_once('/').map_or("", |x| x.1),
        None => p.trim_start_matches('/'),
    };
    format!("/{p}")
}

pub(crate) struct Scheduled {
    path: String,
    at: u64,
    m: Mutation,
}

pub(crate) struct Recurring {
    path: String,
    base: u64,
    every: u64,
    m: Mutation,
}

pub(crate) struct Control {
    token: String,
    faults: Vec<Fault>,
    scheduled: Vec<Scheduled>,
    recurring: Vec<Recurring>,
    stats: Stats,
    limiters: limiter::Limiters,
    /// 429s from the limiter so far, for `RetryAfter::Sometimes`.
    limited_count: u64,
}

pub(crate) struct Shared {
    cfg: FakeConfig,
    outbox: Option<std::sync::Arc<webhooks::Outbox>>,
    clock: limiter::EpochClock,
    /// "Now" for every instant the fake stamps (`updatedAt`, webhook times, `Date`);
    /// tests move it forward instead of sleeping ([`FakeServer::advance_clock`]).
    time: loop_time::Clock,
    data: RwLock<Data>,
    ctl: Mutex<Control>,
}

impl Shared {
    fn new(cfg: FakeConfig, time: loop_time::Clock) -> Shared {
        let data = match &cfg.data {
            Some(seed) => Data::from_seed(&cfg, seed),
            None => Data::generate(&cfg),
        };
        Shared {
            ctl: Mutex::new(Control {
                token: cfg.token.clone(),
                faults: Vec::new(),
                scheduled: Vec::new(),
                recurring: Vec::new(),
                stats: Stats::default(),
                limiters: limiter::Limiters::new(cfg.limiter),
                limited_count: 0,
            }),
            data: RwLock::new(data),
            clock: limiter::EpochClock::start(),
            outbox: cfg
                .webhooks
                .clone()
                .map(|t| std::sync::Arc::new(webhooks::Outbox::new(t, time.clone()))),
            time,
            cfg,
        }
    }

    fn ctl(&self) -> std::sync::MutexGuard<'_, Control> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn data_write(&self) -> std::sync::RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    fn records(&self, stream: &str) -> Option<Vec<serde_json::Value>> {
        let s = Stream::from_name(stream)?;
        Some(self.data_read().records(s))
    }

    fn mutate(&self, m: &Mutation) -> Vec<serde_json::Value> {
        self.mutate_with(m, Delivery::Plan)
    }

    /// Applies `m`, then sends the webhooks of its new versions as `how` says.
    fn mutate_with(&self, m: &Mutation, how: Delivery) -> Vec<serde_json::Value> {
        let now = self.time.now_ms();
        let versions = self.data_write().apply(m, now);
        if let Some(outbox) = &self.outbox {
            let (stream, created) = m.target();
            outbox.versions(stream, created, &versions, how);
        }
        versions
    }

    fn webhook_only(&self, w: &WebhookOnly) -> Result<serde_json::Value, WebhookOnlyError> {
        let outbox = self.outbox.as_ref().ok_or(WebhookOnlyError::NoTarget)?;
        let now = self.time.now_ms();
        let (stream, id) = match w {
            WebhookOnly::NewerThanApi { stream, id }
            | WebhookOnly::UnknownEntity { stream, id } => (stream, *id),
        };
        let topic = webhooks::topic(stream, false)
            .ok_or_else(|| WebhookOnlyError::NoTopic(stream.clone()))?;
        let s =
            Stream::from_name(stream).ok_or_else(|| WebhookOnlyError::NoTopic(stream.clone()))?;
        let data = self.data_read();
        let payload = match w {
            WebhookOnly::NewerThanApi { .. } => {
                data.version_not_stored(s, id, now)
                    .ok_or(WebhookOnlyError::NoRecord {
                        stream: stream.clone(),
                        id,
                    })?
            }
            WebhookOnly::UnknownEntity { .. } => {
                data.entity_not_stored(s, id, now)
                    .ok_or(WebhookOnlyError::Exists {
                        stream: stream.clone(),
                        id,
                    })?
            }
        };
        drop(data);
        outbox.send(topic, &payload, Delivery::Plan);
        Ok(payload)
    }

    fn release_webhooks(&self) {
        if let Some(o) = &self.outbox {
            o.release();
        }
    }

    fn webhook_stats(&self) -> WebhookStats {
        self.outbox.as_ref().map(|o| o.stats()).unwrap_or_default()
    }

    fn schedule(&self, after_requests: u64, path: &str, m: Mutation) {
        let path = norm_path(path);
        let mut c = self.ctl();
        let cur = c.stats.requests.get(&path).copied().unwrap_or(0);
        c.scheduled.push(Scheduled {
            path,
            at: cur + after_requests + 1,
            m,
        });
    }

    fn stop_mutations(&self) {
        let mut c = self.ctl();
        c.recurring.clear();
        c.scheduled.clear();
    }

    fn mutate_every(&self, path: &str, every: u64, m: Mutation) {
        let path = norm_path(path);
        let mut c = self.ctl();
        let base = c.stats.requests.get(&path).copied().unwrap_or(0);
        c.recurring.push(Recurring {
            path,
            base,
            every: every.max(1),
            m,
        });
    }

    fn inject(&self, mut f: Fault) {
        f.path = f.path.map(|p| norm_path(&p));
        if f.times > 0 {
            self.ctl().faults.push(f);
        }
    }

    fn stats(&self) -> Stats {
        self.ctl().stats.clone()
    }

    fn set_token(&self, t: &str) {
        self.ctl().token = t.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_paths() {
        assert_eq!(norm_path("/subscription"), "/subscription");
        assert_eq!(norm_path("subscription"), "/subscription");
        assert_eq!(norm_path("/admin/2023-10/order"), "/order");
        assert_eq!(norm_path("/activityLog/"), "/activityLog");
    }

    #[test]
    fn serde_shapes() {
        let m: Mutation =
            serde_json::from_str(r#"{"touch":{"stream":"subscriptions","count":5}}"#).unwrap();
        assert_eq!(
            m,
            Mutation::Touch {
                stream: "subscriptions".into(),
                count: 5
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"path":"/order","kind":{"status":503},"times":2}"#).unwrap();
        assert_eq!(f.kind, FaultKind::Status(503));
        let f: Fault = serde_json::from_str(r#"{"kind":"connection_reset"}"#).unwrap();
        assert_eq!(
            (f.path, f.kind, f.times),
            (None, FaultKind::ConnectionReset, 1)
        );
    }

    #[test]
    fn config_names_the_unknowns_in_snake_case() {
        let cfg: FakeConfig = serde_json::from_str(
            r#"{"limiter":"sliding_window","retry_after":"rounded_up","distribution":"recent"}"#,
        )
        .unwrap();
        assert_eq!(cfg.limiter, LimiterKind::SlidingWindow);
        assert_eq!(cfg.retry_after, RetryAfter::RoundedUp);
        assert_eq!(cfg.distribution, Distribution::Recent);
        let cfg: FakeConfig = serde_json::from_str(r#"{"limiter":"fixed_window"}"#).unwrap();
        assert_eq!(cfg.limiter, LimiterKind::FixedWindow);
        let defaults: FakeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (
                defaults.limiter,
                defaults.retry_after,
                defaults.distribution
            ),
            (
                LimiterKind::Gcra,
                RetryAfter::Sometimes,
                Distribution::Default
            )
        );
    }

    fn small() -> FakeConfig {
        FakeConfig {
            counts: Counts {
                subscriptions: 300,
                orders: 400,
                customers: 50,
                products: 10,
                activity_logs: 300,
            },
            ..FakeConfig::default()
        }
    }

    #[test]
    fn deterministic_and_consistent() {
        let cfg = small();
        let a = Shared::new(cfg.clone(), loop_time::Clock::new());
        let b = Shared::new(cfg.clone(), loop_time::Clock::new());
        let subs = a.records("subscriptions").unwrap();
        assert_eq!(subs, b.records("subscriptions").unwrap());
        assert_eq!(subs.len(), 300);
        let end = cfg.data_end.timestamp_millis();
        let mut hot = BTreeMap::<i64, usize>::new();
        for s in &subs {
            let c = loop_time::parse_rfc3339_ms(s["createdAt"].as_str().unwrap()).unwrap();
            let u = loop_time::parse_rfc3339_ms(s["updatedAt"].as_str().unwrap()).unwrap();
            assert!(u >= c, "{s}");
            assert!(u <= end && c >= end - 731 * data::DAY_MS);
            *hot.entry(u.div_euclid(1000)).or_default() += 1;
            match s["status"].as_str().unwrap() {
                "PAUSED" => assert!(s["pausedAt"].is_string()),
                "CANCELLED" => assert!(s["cancelledAt"].is_string()),
                _ => assert!(s["pausedAt"].is_null() && s["cancelledAt"].is_null()),
            }
        }
        assert!(hot.values().any(|&n| n >= 70));
        let orders = a.records("orders").unwrap();
        assert_eq!(orders.len(), 400);
        for o in &orders {
            assert_eq!(o["shopifyId"].is_null(), o["status"] != "PAID");
        }
        let products = a.records("products").unwrap();
        assert!(products.iter().all(|p| p.get("id").is_none()));
    }

    #[test]
    fn mutations() {
        let s = Shared::new(small(), loop_time::Clock::new());
        let out = s.mutate(&Mutation::Touch {
            stream: "subscriptions".into(),
            count: 3,
        });
        assert_eq!(out.len(), 3);
        let now = Utc::now().timestamp_millis();
        for v in &out {
            let u = loop_time::parse_rfc3339_ms(v["updatedAt"].as_str().unwrap()).unwrap();
            assert!((now - u).abs() < 5_000);
        }
        let created = s.mutate(&Mutation::Create {
            stream: "activity_logs".into(),
            count: 2,
        });
        assert_eq!(created.len(), 2);
        assert_eq!(s.records("activity_logs").unwrap().len(), 302);
        let ids = s.mutate(&Mutation::TouchIds {
            stream: "orders".into(),
            ids: vec![50_000, 1],
        });
        assert_eq!(ids.len(), 1);
    }
}
