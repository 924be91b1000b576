//! The sync engine: reads the selected streams into [`Event`]s, checkpointing only where
//! it is safe. It knows no protocol: a front end hands it neutral [`Selected`] streams and
//! per-stream input state, and a [`crate::output::Writer`] turns its events into messages.
//!
//! ## Incremental streams: windows that cannot lose a record
//! Loop pages by offset in an undocumented order, and records move while we page. The
//! engine reads whole-second time windows `[lo, hi]` up to the second the sync started
//! in (`incremental`):
//! * a window answered in one page is a snapshot: done;
//! * a window that takes several pages is followed by a *check*: one filtered query for
//!   everything updated since the window's paging started (server clock, from `Date`).
//!   If a record we had already seen in the window changed meanwhile, its move may have
//!   shifted later records past us, so the window is re-read from the page where that
//!   record was (a removal only shifts positions after it). Records that joined the
//!   window are taken from the check itself;
//! * only pages read in order count: a probe for a window's size (page `cap + 1`) is
//!   never kept, since a record moving under an out-of-order read could shift another
//!   past us;
//! * a window that keeps changing is split; a one-second window is re-read until it is
//!   stable (bounded attempts), except the sync's own start second, which is left to the
//!   next sync when it keeps changing (changes made after the start land there).
//!
//! A window's records are held until it is verified, then emitted in cursor order: in
//! memory up to `held_memory_mb` of record bytes per stream, past that in an unlinked
//! temporary file in `spill_dir` (`held`), so memory is bounded by a setting, not by the
//! window caps or the data; records come back from the file byte for byte. The
//! stream's STATE moves to the newest instant emitted, with the record versions emitted
//! in that second, after every `checkpoint_interval_records` records and after each
//! window: a STATE never claims a record that was not emitted, and the next sync re-reads
//! the cursor's second without re-emitting those versions. A kill at any moment re-sends
//! at most the records since the last STATE.
//!
//! Window size only decides cost, never correctness: a planner aims each window at
//! `window_target_pages` from the density seen so far, and probes before reading a
//! window whose size is a guess (requests ÷ minimum pages is printed per stream).
//!
//! Full-refresh streams watch themselves for records moving while they page
//! (`full_refresh`); the webhook journal is a stream of its own and folds newer versions
//! into the API streams (`journal`).

mod emit;
mod full_refresh;
mod held;
mod incremental;
mod journal;
mod pager;
mod planner;
mod tail;

pub use full_refresh::FULL_REFRESH_TRACKED;
pub use tail::{JournalTail, TailBatch};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{ApiError, LoopClient};
use crate::config::Config;
use crate::event::{Event, FailureType, Level, OutputGone, Sink, StreamStatus};
use crate::normalize::Normalizer;
use crate::state::{InputState, StreamState, StreamStateError};
use crate::streams::{JournalTable, Selected, StreamKind, SyncMode};
use crate::validate::{RecordValidator, SchemaError};

use emit::Emitter;

/// A progress line every this many pages of a full refresh.
const PROGRESS_EVERY_PAGES: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    State(#[from] StreamStateError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("stream {stream:?}: record {key} does not match the schema at {path}: {reason} (on_invalid_record = fail; set it to `emit` or `skip` to keep syncing)")]
    InvalidRecord {
        stream: &'static str,
        key: String,
        path: String,
        reason: String,
    },
    #[error("stream {stream:?}: the records of {window} kept changing while being paged ({attempts} reads); the store is very busy — run the sync again (the last STATE is safe)")]
    Unstable {
        stream: &'static str,
        window: String,
        attempts: u32,
    },
    #[error("webhook journal (none): the webhook_events and reconciliation_reports streams need `journal_path` in the config (the file `source-loop serve` writes)")]
    NoJournal,
    #[error("webhook journal {path}: {source}")]
    Journal {
        path: String,
        #[source]
        source: loop_webhooks::journal::JournalError,
    },
    #[error(transparent)]
    Spill(#[from] held::SpillError),
    #[error("cannot serialize a record: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("the output was closed")]
    OutputClosed,
}

impl SyncError {
    pub fn failure_type(&self) -> FailureType {
        match self {
            SyncError::Api(e) => e.failure_type(),
            SyncError::State(_) | SyncError::InvalidRecord { .. } | SyncError::NoJournal => {
                FailureType::Config
            }
            SyncError::Unstable { .. } => FailureType::Transient,
            SyncError::Schema(_)
            | SyncError::Journal { .. }
            | SyncError::Spill(_)
            | SyncError::Serialize(_)
            | SyncError::OutputClosed => FailureType::System,
        }
    }

    fn journal(path: &Path, source: loop_webhooks::journal::JournalError) -> SyncError {
        SyncError::Journal {
            path: path.display().to_string(),
            source,
        }
    }
}

/// What one stream did, for the final summary.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub name: &'static str,
    pub records: u64,
    pub invalid: u64,
    pub skipped_invalid: u64,
    pub requests: u64,
    pub pages_min: u64,
    pub rate_limited: u64,
    pub wait_ms: u64,
    pub windows: u64,
    pub rereads: u64,
    pub webhook_folded: u64,
    pub webhook_stale: u64,
    pub elapsed: Duration,
    pub ok: bool,
    pub error: Option<String>,
}

impl std::fmt::Display for StreamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: complete: {} records in {:.1}s, {} requests for a minimum of {} pages (ratio {:.2}), {} rate-limited, {:.1}s waiting for the rate limiter, {} invalid ({} skipped)",
            self.name,
            self.records,
            self.elapsed.as_secs_f64(),
            self.requests,
            self.pages_min,
            self.requests as f64 / self.pages_min.max(1) as f64,
            self.rate_limited,
            self.wait_ms as f64 / 1000.0,
            self.invalid,
            self.skipped_invalid
        )
    }
}

/// What a whole read did: one report per stream and the client's totals.
#[derive(Debug, Clone)]
pub struct SyncSummary {
    pub reports: Vec<StreamReport>,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub elapsed: Duration,
}

impl SyncSummary {
    pub fn all_ok(&self) -> bool {
        self.reports.iter().all(|r| r.ok)
    }
}

impl std::fmt::Display for SyncSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: u64 = self.reports.iter().map(|r| r.records).sum();
        let pages_min: u64 = self.reports.iter().map(|r| r.pages_min).sum();
        let invalid: u64 = self.reports.iter().map(|r| r.invalid).sum();
        let skipped: u64 = self.reports.iter().map(|r| r.skipped_invalid).sum();
        let per_stream: Vec<String> = self
            .reports
            .iter()
            .map(|r| format!("{} {}", r.name, r.records))
            .collect();
        let failed: Vec<&str> = self
            .reports
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name)
            .collect();
        write!(
            f,
            "sync summary: {} streams, {} records in {:.1}s ({}); {} requests for a minimum of {} pages (ratio {:.2}); {} retries, {} rate-limited (429); {} invalid records ({} skipped); {}",
            self.reports.len(),
            total,
            self.elapsed.as_secs_f64(),
            per_stream.join(", "),
            self.requests,
            pages_min,
            self.requests as f64 / pages_min.max(1) as f64,
            self.retries,
            self.rate_limited,
            invalid,
            skipped,
            if failed.is_empty() {
                "all streams complete".to_string()
            } else {
                format!("FAILED: {}", failed.join(", "))
            }
        )
    }
}

/// An error and its sources, one after the other (for `internal_message`: what a
/// developer needs, without Rust's Debug layout).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub struct Engine {
    config: Arc<Config>,
    client: Arc<LoopClient>,
    sink: Sink,
    output_gone: OutputGone,
    /// The sync's upper bound: the second it started in (a change made before the sync
    /// started belongs to it; the boundary set makes re-reading this second next time
    /// safe, and anything later belongs to the next sync).
    upper_sec: i64,
}

impl Engine {
    pub fn new(
        config: Arc<Config>,
        client: Arc<LoopClient>,
        sink: Sink,
        output_gone: OutputGone,
    ) -> Self {
        Engine {
            config,
            client,
            sink,
            output_gone,
            upper_sec: loop_time::now().timestamp(),
        }
    }

    /// Read every selected stream (concurrently, bounded), then log the summary.
    pub async fn read(self: Arc<Self>, selected: Vec<Selected>, input: InputState) -> SyncSummary {
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.config.pacing.max_concurrent_streams,
        ));
        let mut tasks = Vec::new();
        for sel in selected {
            let raw = input.get(sel.def.name).cloned();
            let me = self.clone();
            let sem = sem.clone();
            tasks.push((
                sel.def.name,
                tokio::spawn(async move {
                    // the semaphore is never closed
                    let _permit = sem.acquire_owned().await;
                    me.run_stream(sel, raw).await
                }),
            ));
        }
        let mut reports = Vec::new();
        for (name, t) in tasks {
            match t.await {
                Ok(r) => reports.push(r),
                Err(e) => reports.push(StreamReport {
                    name,
                    error: Some(format!("stream task failed: {e}")),
                    ..Default::default()
                }),
            }
        }
        let totals = self.client.stats();
        let summary = SyncSummary {
            reports,
            requests: totals.requests,
            retries: totals.retries,
            rate_limited: totals.rate_limited,
            elapsed: started.elapsed(),
        };
        let _ = self
            .sink
            .send(Event::log(Level::Info, summary.to_string()))
            .await;
        summary
    }

    async fn run_stream(&self, sel: Selected, raw_state: Option<Value>) -> StreamReport {
        let def = sel.def;
        let started = Instant::now();
        let mut em = Emitter::new(
            def,
            self.sink.clone(),
            self.output_gone.clone(),
            Normalizer::of(&self.config.sync),
            None,
            self.config.sync.on_invalid_record,
        );
        let _ = em.send(Event::StreamStarted(sel)).await;
        let result =
            match RecordValidator::new(def.name, &def.schema_value(self.config.sync.money_type)) {
                Ok(v) => {
                    em.set_validator(self.config.sync.validate_records.then_some(v));
                    self.stream_body(&mut em, sel.mode, raw_state).await
                }
                Err(e) => Err(SyncError::from(e)),
            };
        if let Some(endpoint) = def.endpoint() {
            let stats = self.client.endpoint_stats(endpoint.path);
            em.report.requests = stats.requests;
            em.report.rate_limited = stats.rate_limited;
            em.report.wait_ms = stats.wait_ms;
        }
        em.report.pages_min = em
            .report
            .records
            .div_ceil(u64::from(self.client.page_size()))
            .max(1);
        em.report.elapsed = started.elapsed();
        match result {
            Ok(()) => {
                em.report.ok = true;
                em.log(Level::Info, em.report.to_string()).await;
                let _ = em
                    .send(Event::Status {
                        stream: def.name,
                        status: StreamStatus::Complete,
                    })
                    .await;
            }
            Err(e) => {
                let failure = e.failure_type();
                let mut message = format!("stream {}: {e}", def.name);
                if failure == FailureType::Transient {
                    message.push_str(" (the next sync resumes from this stream's last STATE)");
                }
                em.report.error = Some(message.clone());
                let _ = em
                    .send(Event::Error {
                        stream: Some(def.name),
                        message,
                        internal: error_chain(&e),
                        failure,
                    })
                    .await;
                let _ = em
                    .send(Event::Status {
                        stream: def.name,
                        status: StreamStatus::Incomplete,
                    })
                    .await;
            }
        }
        em.report
    }

    async fn stream_body(
        &self,
        em: &mut Emitter,
        mode: SyncMode,
        raw: Option<Value>,
    ) -> Result<(), SyncError> {
        let def = em.def;
        let mut st = match &raw {
            Some(v) => StreamState::from_value(def, v)?,
            None => StreamState::default(),
        };
        if mode == SyncMode::FullRefresh {
            // a full refresh reads everything again; keep only the webhook position
            st = StreamState {
                seq: st.seq,
                ..Default::default()
            };
        }
        let journal = self.config.webhooks.journal_path.as_deref();
        match &def.kind {
            StreamKind::FullRefresh(endpoint) => full_refresh::read(self, em, endpoint).await,
            StreamKind::Incremental(w) => {
                let mut st = incremental::read(self, em, w, st).await?;
                if let (Some(kind), Some(path)) = (def.webhook_kind(), journal) {
                    journal::fold_webhooks(self, em, kind, path, &mut st).await?;
                }
                Ok(())
            }
            StreamKind::Journal(JournalTable::Events) => {
                journal::read_events(em, journal, st).await
            }
            StreamKind::Journal(JournalTable::ReconcileRuns) => {
                journal::read_runs(em, journal, st).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_records_per_stream_requests_429s_retries_invalid_and_duration() {
        let summary = SyncSummary {
            reports: vec![
                StreamReport {
                    name: "subscriptions",
                    records: 120,
                    invalid: 3,
                    skipped_invalid: 1,
                    pages_min: 3,
                    ok: true,
                    ..Default::default()
                },
                StreamReport {
                    name: "orders",
                    records: 45,
                    pages_min: 1,
                    ok: true,
                    ..Default::default()
                },
            ],
            requests: 5,
            retries: 2,
            rate_limited: 1,
            elapsed: Duration::from_millis(2_500),
        };
        assert_eq!(
            summary.to_string(),
            "sync summary: 2 streams, 165 records in 2.5s (subscriptions 120, orders 45); 5 requests for a minimum of 4 pages (ratio 1.25); 2 retries, 1 rate-limited (429); 3 invalid records (1 skipped); all streams complete"
        );
    }
}
