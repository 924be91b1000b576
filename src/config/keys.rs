//! Every config key with a default or bounds, stated once: the parser reads these, the
//! error messages quote them, and a test holds `spec.json` to them.

use super::{FilterBounds, MoneyType, MoneyUnit, OnInvalidRecord, RateLimit, SignatureEncoding};

pub const DEFAULT_BASE_URL: &str = "https://api.loopsubscriptions.com/admin/2023-10";
pub const DEFAULT_START_DATE: &str = "2015-01-01T00:00:00Z";
pub const DEFAULT_WEBHOOK_PATH: &str = "/webhooks/loop";
/// Used for endpoints without a configured limit (Loop's list-subscriptions pace).
pub const FALLBACK_RATE_LIMIT: RateLimit = RateLimit {
    requests: 2,
    per_seconds: 3.0,
};

/// An integer key: its bounds and default, stated once (parser, messages, spec test).
#[derive(Debug, Clone, Copy)]
pub struct IntKey {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

/// Loop allows at most 50 records per page.
pub const PAGE_SIZE: IntKey = IntKey {
    key: "page_size",
    min: 1,
    max: 50,
    default: 50,
};
pub const REQUEST_TIMEOUT_SECONDS: IntKey = IntKey {
    key: "request_timeout_seconds",
    min: 1,
    max: 3600,
    default: 60,
};
pub const MAX_CONCURRENT_STREAMS: IntKey = IntKey {
    key: "max_concurrent_streams",
    min: 1,
    max: 16,
    default: 5,
};
pub const RETRY_MAX_ATTEMPTS: IntKey = IntKey {
    key: "max_attempts",
    min: 1,
    max: 100,
    default: 8,
};
pub const RETRY_INITIAL_BACKOFF_MS: IntKey = IntKey {
    key: "initial_backoff_ms",
    min: 1,
    max: 600_000,
    default: 1000,
};
pub const RETRY_MAX_BACKOFF_MS: IntKey = IntKey {
    key: "max_backoff_ms",
    min: 1,
    max: 3_600_000,
    default: 60_000,
};
pub const RETRY_MAX_ELAPSED_SECONDS: IntKey = IntKey {
    key: "max_elapsed_seconds",
    min: 1,
    max: 86_400,
    default: 900,
};
/// Pages a window aims at: each window costs about one request more than its pages (the
/// check), and holds up to four times this many pages of records until it is verified
/// (past `held_memory_mb`, in a temporary file).
pub const WINDOW_TARGET_PAGES: IntKey = IntKey {
    key: "window_target_pages",
    min: 1,
    max: 1000,
    default: 100,
};
/// Record bytes a stream's window holds in memory until it is verified; past them, records
/// wait in an unlinked temporary file in `spill_dir` (0: every held record does).
pub const HELD_MEMORY_MB: IntKey = IntKey {
    key: "held_memory_mb",
    min: 0,
    max: 4096,
    default: 4,
};
/// A STATE after at most this many records: a kill re-sends at most this many.
pub const CHECKPOINT_INTERVAL_RECORDS: IntKey = IntKey {
    key: "checkpoint_interval_records",
    min: 1,
    max: 1_000_000,
    default: 500,
};
pub const CLOCK_SKEW_SECONDS: IntKey = IntKey {
    key: "clock_skew_seconds",
    min: 0,
    max: 86_400,
    default: 300,
};
pub const WEBHOOK_MAX_BODY_BYTES: IntKey = IntKey {
    key: "webhook_max_body_bytes",
    min: 1024,
    max: 64 * 1024 * 1024,
    default: 1024 * 1024,
};
/// `reconcile`: differences (missed webhooks, API behind, only in the journal) tolerated
/// before it exits 2; the larger of this and the fraction below applies.
pub const RECONCILE_MAX_DRIFT: IntKey = IntKey {
    key: "reconcile_max_drift",
    min: 0,
    max: 1_000_000_000,
    default: 0,
};
/// `reconcile`: tolerated differences as a share of the entities checked.
pub const RECONCILE_MAX_DRIFT_FRACTION_DEFAULT: f64 = 0.0;
pub const RECONCILE_MAX_DRIFT_FRACTION_MAX: f64 = 1.0;
/// `reconcile`: changes younger than this are not compared (their webhook may still be
/// on its way: Loop retries for hours, but most arrive within seconds).
pub const RECONCILE_SETTLE_SECONDS: IntKey = IntKey {
    key: "reconcile_settle_seconds",
    min: 0,
    max: 86_400,
    default: 60,
};
/// The receiver's connection limits; the defaults are the receiver's own (see
/// `loop_webhooks::connection`), so the two cannot drift apart.
pub const WEBHOOK_HEADER_READ_TIMEOUT_SECONDS: IntKey = IntKey {
    key: "webhook_header_read_timeout_seconds",
    min: 1,
    max: 300,
    default: loop_webhooks::connection::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
};
pub const WEBHOOK_BODY_READ_TIMEOUT_SECONDS: IntKey = IntKey {
    key: "webhook_body_read_timeout_seconds",
    min: 1,
    max: 300,
    default: loop_webhooks::connection::DEFAULT_BODY_READ_TIMEOUT.as_secs(),
};
pub const WEBHOOK_IDLE_TIMEOUT_SECONDS: IntKey = IntKey {
    key: "webhook_idle_timeout_seconds",
    min: 1,
    max: 3600,
    default: loop_webhooks::connection::DEFAULT_IDLE_TIMEOUT.as_secs(),
};
pub const WEBHOOK_MAX_CONNECTIONS: IntKey = IntKey {
    key: "webhook_max_connections",
    min: 1,
    max: 1_000_000,
    default: loop_webhooks::connection::DEFAULT_MAX_CONNECTIONS as u64,
};
/// One `rate_limits` entry: `requests` per `per_seconds`.
pub const RATE_LIMIT_REQUESTS: IntKey = IntKey {
    key: "requests",
    min: 1,
    max: 10_000,
    default: 2,
};
pub const RATE_LIMIT_MAX_PER_SECONDS: f64 = 3600.0;
/// The share of Loop's store-wide pool this connector may use.
pub const RATE_LIMIT_FRACTION_MIN: f64 = 0.01;
pub const RATE_LIMIT_FRACTION_DEFAULT: f64 = 1.0;
/// The pace's window and spacing are widened by this share (0.005 = 0.5 %). Jitter needs
/// no margin: each request is paced from the response to the one `n` places before it,
/// which the server counted before answering (`client::pacing`). What is left is a limiter
/// that records a request a moment after answering it, or a server clock running faster
/// than ours: 15 ms per 3 s window at Loop's pace. (It was 2 % when requests were paced
/// from their sends, to absorb jitter; every 2 % is that much more time on every sync.)
pub const RATE_LIMIT_MARGIN_MAX: f64 = 1.0;
pub const RATE_LIMIT_MARGIN_DEFAULT: f64 = 0.005;

/// A key with a fixed set of values (case-insensitive).
#[derive(Debug, Clone, Copy)]
pub struct ChoiceKey<T: 'static> {
    pub key: &'static str,
    pub options: &'static [(&'static str, T)],
    pub default: T,
}

impl<T: Copy + PartialEq> ChoiceKey<T> {
    /// The name of the default, as `spec.json` states it.
    pub fn default_name(&self) -> &'static str {
        self.options
            .iter()
            .find(|(_, v)| *v == self.default)
            .map_or("", |(n, _)| n)
    }
}

pub const EPOCH_FILTER_BOUNDS: ChoiceKey<FilterBounds> = ChoiceKey {
    key: "epoch_filter_bounds",
    options: &[
        ("unknown", FilterBounds::Unknown),
        ("inclusive", FilterBounds::Inclusive),
    ],
    default: FilterBounds::Unknown,
};
pub const ON_INVALID_RECORD: ChoiceKey<OnInvalidRecord> = ChoiceKey {
    key: "on_invalid_record",
    options: &[
        ("emit", OnInvalidRecord::Emit),
        ("skip", OnInvalidRecord::Skip),
        ("fail", OnInvalidRecord::Fail),
    ],
    default: OnInvalidRecord::Emit,
};
pub const MONEY_UNIT: ChoiceKey<MoneyUnit> = ChoiceKey {
    key: "money_unit",
    options: &[("major", MoneyUnit::Major), ("minor", MoneyUnit::Minor)],
    default: MoneyUnit::Major,
};
pub const MONEY_TYPE: ChoiceKey<MoneyType> = ChoiceKey {
    key: "money_type",
    options: &[("number", MoneyType::Number), ("string", MoneyType::String)],
    default: MoneyType::Number,
};
pub const WEBHOOK_SIGNATURE_ENCODING: ChoiceKey<SignatureEncoding> = ChoiceKey {
    key: "webhook_signature_encoding",
    options: &[
        ("auto", SignatureEncoding::Auto),
        ("hex", SignatureEncoding::Hex),
        ("base64", SignatureEncoding::Base64),
    ],
    default: SignatureEncoding::Auto,
};

/// Loop's documented per-endpoint limits (orders and activity logs are undocumented:
/// paced like subscriptions).
pub const DEFAULT_RATE_LIMITS: &[(&str, RateLimit)] = &[
    ("subscription", FALLBACK_RATE_LIMIT),
    ("order", FALLBACK_RATE_LIMIT),
    ("activityLog", FALLBACK_RATE_LIMIT),
    (
        "customer",
        RateLimit {
            requests: 1,
            per_seconds: 1.0,
        },
    ),
    (
        "product",
        RateLimit {
            requests: 6,
            per_seconds: 1.0,
        },
    ),
];
