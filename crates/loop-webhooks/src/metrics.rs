//! Prometheus metrics of the receiver, in a registry of its own so an embedding binary
//! can serve or merge them as it likes.

use std::path::Path;

use loop_entities::ENTITIES;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::journal::JournalReader;

/// Every value of the `reason` label of `loop_webhooks_rejected_total`.
pub const REJECT_REASONS: [&str; 6] = [
    "bad_signature",
    "missing_signature",
    "too_large",
    "bad_json",
    "missing_header",
    "journal_error",
];

/// Every value of the `reason` label of `loop_webhooks_connections_cut_total`.
pub const CUT_REASONS: [&str; 4] = [
    "header_timeout",
    "idle_timeout",
    "body_timeout",
    "over_capacity",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub received: IntCounter,
    pub verified: IntCounter,
    pub rejected: IntCounterVec,
    pub duplicates: IntCounter,
    pub unknown_topic: IntCounter,
    pub stale: IntCounter,
    pub journal_events: IntGauge,
    pub journal_bytes: IntGauge,
    pub last_event_age_seconds: Gauge,
    pub ack_seconds: Histogram,
    pub connections_open: IntGauge,
    pub connections_max: IntGauge,
    pub connections_accepted: IntCounter,
    pub connections_cut: IntCounterVec,
    pub reconcile: ReconcileMetrics,
}

/// What `source-loop reconcile` left in the journal's database, as gauges (refreshed
/// from the database on every scrape, so runs made by another process show up).
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub last_run_timestamp_seconds: Gauge,
    pub drift: IntGaugeVec,
    pub repairs: IntCounterVec,
    pub within_tolerance: IntGauge,
    /// The journal event seq `repairs` has counted up to (scrapes take turns on it).
    repairs_counted_to: std::sync::Arc<std::sync::Mutex<i64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let received = counter(
            "loop_webhooks_received_total",
            "Webhook POSTs received, before any check.",
        );
        let verified = counter(
            "loop_webhooks_verified_total",
            "Deliveries whose signature verified.",
        );
        let duplicates = counter(
            "loop_webhooks_duplicates_total",
            "Verified deliveries whose webhook id was already journaled.",
        );
        let unknown_topic = counter(
            "loop_webhooks_unknown_topic_total",
            "Journaled deliveries whose topic is not a documented Loop topic.",
        );
        let stale = counter(
            "loop_webhooks_stale_total",
            "Journaled deliveries older than the newest known version of their entity.",
        );
        let journal_events = gauge("loop_webhooks_journal_events", "Events in the journal.");
        let journal_bytes = gauge(
            "loop_webhooks_journal_bytes",
            "Size of the journal files (database and WAL) in bytes.",
        );
        let rejected = IntCounterVec::new(
            Opts::new(
                "loop_webhooks_rejected_total",
                "Deliveries answered with an error, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rejected.clone()))
            .expect("unique metric");
        for reason in REJECT_REASONS {
            rejected.with_label_values(&[reason]);
        }
        let last_event_age_seconds = Gauge::new(
            "loop_webhooks_last_event_age_seconds",
            "Seconds since the newest journaled delivery was received; -1 when the journal is empty.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_event_age_seconds.clone()))
            .expect("unique metric");
        let ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "loop_webhooks_ack_seconds",
                "Time from request arrival to the 2xx answer of verified deliveries.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(ack_seconds.clone()))
            .expect("unique metric");
        let reconcile = ReconcileMetrics::register(&registry);
        let connections_open = gauge(
            "loop_webhooks_connections_open",
            "TCP connections being served now (at most loop_webhooks_connections_max).",
        );
        let connections_max = gauge(
            "loop_webhooks_connections_max",
            "The configured cap on open connections (webhook_max_connections).",
        );
        let connections_accepted = counter(
            "loop_webhooks_connections_accepted_total",
            "TCP connections admitted (under the cap).",
        );
        let connections_cut = IntCounterVec::new(
            Opts::new(
                "loop_webhooks_connections_cut_total",
                "Connections the receiver closed or refused, by reason: header_timeout (request head not complete in time), idle_timeout (no request in time), body_timeout (body not complete in time, answered 408), over_capacity (refused with 503 at the cap).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections_cut.clone()))
            .expect("unique metric");
        for reason in CUT_REASONS {
            connections_cut.with_label_values(&[reason]);
        }
        Metrics {
            reconcile,
            registry,
            received,
            verified,
            rejected,
            duplicates,
            unknown_topic,
            stale,
            journal_events,
            journal_bytes,
            last_event_age_seconds,
            ack_seconds,
            connections_open,
            connections_max,
            connections_accepted,
            connections_cut,
        }
    }

    /// Reads the last reconciliation run and the repairs from the journal. A journal
    /// that cannot be read leaves the values as they were (the receiver's own metrics
    /// report its journal's problems).
    pub fn observe_reconciliation(&self, journal: &Path) {
        let r = &self.reconcile;
        let mut counted_to = r
            .repairs_counted_to
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Ok(summary) =
            JournalReader::open(journal).and_then(|j| j.reconcile_summary(*counted_to))
        else {
            return;
        };
        if let Some(run) = &summary.last_run {
            r.last_run_timestamp_seconds
                .set(run.generated_at_ms as f64 / 1000.0);
            r.within_tolerance.set(i64::from(run.within_tolerance));
            for stream in ENTITIES.iter().map(|e| e.stream) {
                if let Some(d) = run.report["streams"][stream]["drift"].as_i64() {
                    r.drift.with_label_values(&[stream]).set(d);
                }
            }
        }
        for (stream, new) in summary.repairs {
            r.repairs
                .with_label_values(&[&stream])
                .inc_by(u64::try_from(new).unwrap_or(0));
        }
        *counted_to = summary.counted_to;
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// A connection closed or refused for `reason` (one of [`CUT_REASONS`]).
    pub fn cut(&self, reason: &str) {
        self.connections_cut.with_label_values(&[reason]).inc();
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl ReconcileMetrics {
    fn register(registry: &Registry) -> ReconcileMetrics {
        let last_run_timestamp_seconds = Gauge::new(
            "loop_reconcile_last_run_timestamp_seconds",
            "Unix time of the last `source-loop reconcile` run; 0 before the first.",
        )
        .expect("valid metric");
        let drift = IntGaugeVec::new(
            Opts::new(
                "loop_reconcile_drift",
                "Differences between the API and the journal found by the last reconciliation, by stream.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let repairs = IntCounterVec::new(
            Opts::new(
                "loop_reconcile_repairs_total",
                "Repair events (the API's version of an entity whose webhook was missed) in the journal, by stream.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let within_tolerance = IntGauge::new(
            "loop_reconcile_within_tolerance",
            "1 when the last reconciliation's drift was within tolerance, 0 when not, -1 before the first run.",
        )
        .expect("valid metric");
        within_tolerance.set(-1);
        for stream in ENTITIES.iter().map(|e| e.stream) {
            drift.with_label_values(&[stream]);
            repairs.with_label_values(&[stream]);
        }
        for m in [
            Box::new(last_run_timestamp_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(drift.clone()),
            Box::new(repairs.clone()),
            Box::new(within_tolerance.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        ReconcileMetrics {
            last_run_timestamp_seconds,
            drift,
            repairs,
            within_tolerance,
            repairs_counted_to: Default::default(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalOptions};
    use crate::reconciliation::{Repair, RepairWriter};

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    }

    #[tokio::test]
    async fn reconciliation_gauges_follow_the_runs_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let journal = Journal::open(&path, JournalOptions::default()).unwrap();
        let metrics = Metrics::new();
        metrics.observe_reconciliation(&path);
        let before = metrics.render();
        assert_eq!(
            line(&before, "loop_reconcile_within_tolerance "),
            "loop_reconcile_within_tolerance -1"
        );
        assert_eq!(
            line(&before, "loop_reconcile_last_run_timestamp_seconds "),
            "loop_reconcile_last_run_timestamp_seconds 0"
        );

        let mut w = RepairWriter::open(&path).unwrap();
        let order = |id: &str| Repair {
            kind: "order".into(),
            id: id.into(),
            updated_at_ms: 1_000,
            payload: "{}".into(),
        };
        w.repair(&[order("1"), order("2")]).unwrap();
        let report = serde_json::json!({"streams": {
            "subscriptions": {"drift": 4}, "orders": {"drift": 0}}});
        w.record_run(1_700_000_000_500, false, &report).unwrap();
        // twice: the counter only moves by what is new
        metrics.observe_reconciliation(&path);
        metrics.observe_reconciliation(&path);
        let after = metrics.render();
        for (prefix, want) in [
            ("loop_reconcile_last_run_timestamp_seconds ", "1700000000.5"),
            ("loop_reconcile_within_tolerance ", "0"),
            ("loop_reconcile_drift{stream=\"subscriptions\"}", "4"),
            ("loop_reconcile_drift{stream=\"orders\"}", "0"),
            ("loop_reconcile_repairs_total{stream=\"orders\"}", "2"),
            (
                "loop_reconcile_repairs_total{stream=\"subscriptions\"}",
                "0",
            ),
        ] {
            assert!(
                line(&after, prefix).ends_with(&format!(" {want}")),
                "{prefix}: {after}"
            );
        }
        journal.shutdown().await;
    }
}
