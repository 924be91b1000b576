//! The sync engine: reads streams into [`Event`]s, checkpointing only where it is safe.
//!
//! ## Incremental streams: windows that cannot lose a record
//! Loop pages by offset in an undocumented order, and records move while we page. The
//! engine reads whole-second time windows `[lo, hi]` up to the sync's start second:
//! * a window answered in one page is a snapshot: done;
//! * a window that takes several pages is followed by a *check*: one filtered query for
//!   everything updated since the window's paging started (server clock, from `Date`).
//!   If a record we had already seen in the window changed meanwhile, its move may have
//!   shifted later records past us, so the window is re-read from the page where that
//!   record was (a removal only shifts positions after it). Records that joined the
//!   window are emitted from the check itself;
//! * a window that keeps changing is split; a one-second window is re-read until it is
//!   stable (bounded attempts);
//! * a window far larger than the target is abandoned and split (what it emitted is
//!   remembered, so nothing is emitted twice).
//!
//! After each completed window the stream's STATE moves to the newest instant emitted so
//! far, with the record versions emitted in that second, so the next sync re-reads that
//! second without re-emitting them. The window width adapts to the data's density.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::catalog::{stream_schema, Selected, SyncMode};
use crate::client::{log, ApiError, LoopClient, Sink};
use crate::config::{Config, FilterBounds, OnInvalidRecord};
use crate::event::{Event, FailureType, Level, StreamStatus};
use crate::normalize::{format_instant, instant_ms, Normalizer};
use crate::state::{id_key, Emitted, InputState, StateError, StreamState};
use crate::streams::{Mode, StreamDef};
use crate::validate::RecordValidator;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    State(#[from] StateError),
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
    #[error("webhook journal {path}: {message}")]
    Journal { path: String, message: String },
    #[error("the output was closed")]
    OutputClosed,
}

impl SyncError {
    pub fn failure_type(&self) -> FailureType {
        match self {
            SyncError::Api(e) => e.failure_type(),
            SyncError::State(_) => FailureType::Config,
            SyncError::InvalidRecord { .. } => FailureType::Config,
            SyncError::Unstable { .. } => FailureType::Transient,
            SyncError::Journal { .. } => FailureType::System,
            SyncError::OutputClosed => FailureType::System,
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
    pub ok: bool,
    pub error: Option<String>,
}

struct Ctx {
    def: &'static StreamDef,
    sink: Sink,
    normalizer: Normalizer,
    validator: Option<RecordValidator>,
    on_invalid: OnInvalidRecord,
    running_sent: bool,
    /// Records emitted since the stream's previous STATE (Airbyte's `sourceStats.recordCount`).
    since_checkpoint: u64,
    report: StreamReport,
}

impl Ctx {
    async fn send(&self, e: Event) -> Result<(), SyncError> {
        self.sink.send(e).await.map_err(|_| SyncError::OutputClosed)
    }

    async fn log(&self, level: Level, msg: String) {
        log(&self.sink, level, msg).await
    }

    /// Validate and emit one (already normalized) record.
    async fn emit(&mut self, record: Value) -> Result<(), SyncError> {
        let violations = match &self.validator {
            Some(v) => v.check(&record),
            None => Vec::new(),
        };
        if let Some(v) = violations.first() {
            self.report.invalid += 1;
            let key = record
                .get(self.def.primary_key)
                .and_then(id_key)
                .unwrap_or_else(|| "(no key)".into());
            match self.on_invalid {
                OnInvalidRecord::Fail => {
                    return Err(SyncError::InvalidRecord {
                        stream: self.def.name,
                        key,
                        path: v.path.clone(),
                        reason: v.reason.clone(),
                    })
                }
                OnInvalidRecord::Skip => {
                    self.report.skipped_invalid += 1;
                    self.log(
                        Level::Warn,
                        format!(
                            "{}: skipped record {}={key}: schema mismatch at {}: {}",
                            self.def.name, self.def.primary_key, v.path, v.reason
                        ),
                    )
                    .await;
                    return Ok(());
                }
                OnInvalidRecord::Emit => {
                    self.log(
                        Level::Warn,
                        format!(
                            "{}: record {}={key} does not match the schema at {}: {} (emitted anyway)",
                            self.def.name, self.def.primary_key, v.path, v.reason
                        ),
                    )
                    .await;
                }
            }
        }
        if !self.running_sent {
            self.running_sent = true;
            self.send(Event::Status {
                stream: self.def.name,
                status: StreamStatus::Running,
            })
            .await?;
        }
        self.report.records += 1;
        self.since_checkpoint += 1;
        self.send(Event::Record {
            stream: self.def.name,
            data: record,
        })
        .await
    }

    async fn checkpoint(&mut self, st: &StreamState) -> Result<(), SyncError> {
        let record_count = std::mem::take(&mut self.since_checkpoint);
        self.send(Event::State {
            stream: self.def.name,
            state: st.to_value(self.def),
            record_count,
        })
        .await
    }
}

pub struct Engine {
    config: Arc<Config>,
    client: Arc<LoopClient>,
    sink: Sink,
    /// The sync's upper bound: the last whole second before it started (records after it
    /// belong to the next sync; the live second is never read, it still changes).
    upper_sec: i64,
}

/// Seen in the server's filtered set: version instant and the page it was on.
type Seen = HashMap<String, (i64, u32)>;

enum WindowOutcome {
    Done {
        emitted: HashMap<String, i64>,
    },
    /// Read it in smaller windows; `records_seen` (when known) sizes them.
    Split {
        records_seen: usize,
    },
}

impl Engine {
    pub fn new(config: Arc<Config>, client: Arc<LoopClient>, sink: Sink) -> Self {
        Engine {
            config,
            client,
            sink,
            upper_sec: Utc::now().timestamp() - 1,
        }
    }

    /// Read every selected stream (concurrently, bounded), one report each.
    pub async fn read(
        self: Arc<Self>,
        selected: Vec<Selected>,
        input: InputState,
    ) -> Vec<StreamReport> {
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_concurrent_streams,
        ));
        let mut tasks = Vec::new();
        for sel in selected {
            let raw = input.get(sel.def.name).cloned();
            let me = self.clone();
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore");
                me.run_stream(sel, raw).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            match t.await {
                Ok(r) => out.push(r),
                Err(e) => out.push(StreamReport {
                    name: "?",
                    error: Some(format!("stream task failed: {e}")),
                    ..Default::default()
                }),
            }
        }
        out
    }

    async fn run_stream(&self, sel: Selected, raw_state: Option<Value>) -> StreamReport {
        let def = sel.def;
        let validator = match RecordValidator::new(def.name, &stream_schema(def)) {
            Ok(v) => self.config.validate_records.then_some(v),
            Err(e) => {
                return StreamReport {
                    name: def.name,
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        let mut ctx = Ctx {
            def,
            sink: self.sink.clone(),
            normalizer: Normalizer {
                money_unit: self.config.money_unit,
            },
            validator,
            on_invalid: self.config.on_invalid_record,
            running_sent: false,
            since_checkpoint: 0,
            report: StreamReport {
                name: def.name,
                ..Default::default()
            },
        };
        let _ = ctx
            .send(Event::Status {
                stream: def.name,
                status: StreamStatus::Started,
            })
            .await;
        let started = Instant::now();
        let result = self.stream_body(&mut ctx, sel.mode, raw_state).await;
        let (requests, limited, wait) = self.client.endpoint_stats(def.endpoint);
        ctx.report.requests = requests;
        ctx.report.rate_limited = limited;
        ctx.report.wait_ms = wait;
        ctx.report.pages_min = ctx
            .report
            .records
            .div_ceil(u64::from(self.client.page_size()))
            .max(1);
        match result {
            Ok(()) => {
                ctx.report.ok = true;
                ctx.log(
                    Level::Info,
                    format!(
                        "{}: complete: {} records in {:.1}s, {} requests for a minimum of {} pages (ratio {:.2}), {} rate-limited, {:.1}s waiting for the rate limiter, {} invalid ({} skipped)",
                        def.name,
                        ctx.report.records,
                        started.elapsed().as_secs_f64(),
                        requests,
                        ctx.report.pages_min,
                        requests as f64 / ctx.report.pages_min as f64,
                        limited,
                        wait as f64 / 1000.0,
                        ctx.report.invalid,
                        ctx.report.skipped_invalid
                    ),
                )
                .await;
                let _ = ctx
                    .send(Event::Status {
                        stream: def.name,
                        status: StreamStatus::Complete,
                    })
                    .await;
            }
            Err(e) => {
                let message = format!("stream {}: {e}", def.name);
                ctx.report.error = Some(message.clone());
                let _ = ctx
                    .send(Event::Error {
                        stream: Some(def.name),
                        message: message.clone(),
                        internal: format!("{e:?}"),
                        failure: e.failure_type(),
                    })
                    .await;
                let _ = ctx
                    .send(Event::Status {
                        stream: def.name,
                        status: StreamStatus::Incomplete,
                    })
                    .await;
            }
        }
        ctx.report
    }

    async fn stream_body(
        &self,
        ctx: &mut Ctx,
        mode: SyncMode,
        raw: Option<Value>,
    ) -> Result<(), SyncError> {
        let def = ctx.def;
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
        match def.mode {
            Mode::FullRefresh => self.full_refresh(ctx).await,
            Mode::Incremental { .. } => {
                let mut st = self.incremental(ctx, st).await?;
                if def.webhook_kind.is_some() && self.config.journal_path.is_some() {
                    self.fold_webhooks(ctx, &mut st).await?;
                }
                Ok(())
            }
            Mode::Journal => self.journal_stream(ctx, st).await,
        }
    }

    /// A full pass over an endpoint without filters, watching for records that move while
    /// it pages (Loop's order is undocumented):
    /// * a record met again later with different content moved ahead of us (e.g. to the
    ///   end of an `updatedAt`-ascending list), shifting what followed its old place: the
    ///   pass is read again from that old page;
    /// * a record met again with the same content was pushed down by something that moved
    ///   or was inserted behind us (e.g. to the front of an `updatedAt`-descending list):
    ///   the front is read again, until a page holds nothing new.
    ///
    /// Tracking is capped at [`FULL_REFRESH_TRACKED`] keys (bounded memory).
    async fn full_refresh(&self, ctx: &mut Ctx) -> Result<(), SyncError> {
        let def = ctx.def;
        let params = fixed_params(def);
        let mut page_no = 1;
        // key → (page, content digest, pass it was met in)
        let mut seen: HashMap<String, (u32, u64, u32)> = HashMap::new();
        let mut tracking = true;
        let mut rescan_from: Option<u32> = None;
        let mut front_moved = false;
        let mut front_pass = false;
        let mut rescans = 0u32;
        let mut unverified = false;
        loop {
            let page = self
                .client
                .get_page(def.endpoint, &params, page_no, &ctx.sink)
                .await?;
            let mut new_on_page = 0usize;
            let on_page = page.records.len();
            for mut rec in page.records {
                ctx.normalizer.normalize(&mut rec);
                if let Some(id) = rec.get(def.primary_key).and_then(id_key) {
                    let digest = content_digest(&rec);
                    match seen.get(&id) {
                        Some((first_page, d, pass)) if *d == digest => {
                            // met earlier in this same pass, on an earlier page: pushed
                            // down, something landed behind us
                            if *pass == rescans && *first_page < page_no {
                                front_moved = true;
                            }
                            continue; // already emitted
                        }
                        Some((old_page, _, _)) => {
                            rescan_from = Some(rescan_from.map_or(*old_page, |r| r.min(*old_page)));
                        }
                        None => {}
                    }
                    new_on_page += 1;
                    if tracking {
                        seen.insert(id, (page_no, digest, rescans));
                        if seen.len() >= FULL_REFRESH_TRACKED {
                            tracking = false;
                            unverified = true;
                        }
                    }
                }
                ctx.emit(rec).await?;
            }
            if page_no % 20 == 0 {
                ctx.log(
                    Level::Info,
                    format!(
                        "{}: {} pages, {} records so far",
                        def.name, page_no, ctx.report.records
                    ),
                )
                .await;
            }
            // a pass over the front ends at the first page with nothing new on it
            let front_done = front_pass && on_page > 0 && new_on_page == 0;
            if !page.has_next || front_done {
                let next = match (rescan_from.take(), std::mem::take(&mut front_moved)) {
                    (Some(p), _) => Some((p, false)),
                    (None, true) => Some((1, true)),
                    (None, false) => None,
                };
                match next {
                    Some((p, front)) if rescans < 20 => {
                        rescans += 1;
                        ctx.report.rereads += 1;
                        ctx.log(
                            Level::Info,
                            format!("{}: records moved while the endpoint was paged; reading again from page {p}", def.name),
                        )
                        .await;
                        page_no = p;
                        front_pass = front;
                        continue;
                    }
                    Some(_) => unverified = true,
                    None => {}
                }
                break;
            }
            page_no += 1;
        }
        if unverified {
            ctx.log(
                Level::Warn,
                format!("{}: records kept moving while the endpoint was paged (or it has more than {FULL_REFRESH_TRACKED} records to track); a record may be missing until the next full refresh", def.name),
            )
            .await;
        }
        ctx.checkpoint(&StreamState::default()).await
    }

    fn window_params(&self, def: &StreamDef, lo: i64, hi: i64) -> Vec<(&'static str, String)> {
        let Mode::Incremental {
            start_param,
            end_param,
        } = def.mode
        else {
            unreachable!("incremental streams only")
        };
        let (qs, qe) = match self.config.filter_bounds {
            FilterBounds::Unknown => (lo - 1, hi + 1),
            FilterBounds::Inclusive => (lo, hi),
        };
        let mut p = fixed_params(def);
        p.push((start_param, qs.to_string()));
        p.push((end_param, qe.to_string()));
        p
    }

    async fn incremental(
        &self,
        ctx: &mut Ctx,
        mut st: StreamState,
    ) -> Result<StreamState, SyncError> {
        let def = ctx.def;
        let start_sec = self.config.start_date.timestamp();
        let upper = self.upper_sec;
        let mut lo = match st.cursor {
            Some(c) => c.timestamp().max(start_sec),
            None => start_sec,
        };
        // versions emitted before (state boundary, or by an abandoned window)
        let mut carry: HashMap<String, i64> = st
            .boundary
            .iter()
            .map(|e| (e.id.clone(), e.at_ms))
            .collect();
        let target =
            i64::from(self.config.window_target_pages) * i64::from(self.client.page_size());
        let mut width: i64 = (upper - lo + 1).clamp(1, 86_400);
        ctx.log(
            Level::Info,
            format!(
                "{}: reading {} from {} to {}",
                def.name,
                def.cursor.unwrap_or_default(),
                format_instant(DateTime::from_timestamp(lo, 0).unwrap_or_default()),
                format_instant(DateTime::from_timestamp(upper, 0).unwrap_or_default())
            ),
        )
        .await;
        let mut last_checkpoint: Option<StreamState> = None;
        while lo <= upper {
            let hi = lo.saturating_add(width - 1).min(upper);
            match self.read_window(ctx, lo, hi, &mut carry).await? {
                WindowOutcome::Split { records_seen } => {
                    let span = hi - lo + 1;
                    // at least `records_seen` records in the span: size the next window for
                    // the target, at most half the span
                    width = if records_seen > 0 {
                        (span.saturating_mul(target) / records_seen as i64)
                            .clamp(1, (span / 2).max(1))
                    } else {
                        (span / 2).max(1)
                    };
                    ctx.log(
                        Level::Info,
                        format!(
                            "{}: window {} too large or too busy, splitting",
                            def.name,
                            window_name(lo, hi)
                        ),
                    )
                    .await;
                    continue;
                }
                WindowOutcome::Done { emitted } => {
                    ctx.report.windows += 1;
                    if let Some(max_ms) = emitted.values().copied().max() {
                        if st.cursor.is_none_or(|c| max_ms > c.timestamp_millis()) {
                            let sec = max_ms.div_euclid(1000);
                            st.cursor = DateTime::from_timestamp_millis(max_ms);
                            st.boundary = emitted
                                .iter()
                                .filter(|(_, ms)| ms.div_euclid(1000) == sec)
                                .map(|(id, ms)| Emitted {
                                    id: id.clone(),
                                    at_ms: *ms,
                                })
                                .collect();
                        }
                    }
                    carry.retain(|_, ms| ms.div_euclid(1000) > hi);
                    if last_checkpoint.as_ref() != Some(&st) {
                        ctx.checkpoint(&st).await?;
                        last_checkpoint = Some(st.clone());
                    }
                    let n = emitted.len() as i64;
                    let span = hi - lo + 1;
                    width = if n == 0 {
                        span.saturating_mul(8)
                    } else {
                        (span.saturating_mul(target) / n)
                            .clamp((span / 4).max(1), span.saturating_mul(8))
                    }
                    .max(1);
                    lo = hi + 1;
                    if ctx.report.windows.is_multiple_of(10) {
                        ctx.log(
                            Level::Info,
                            format!(
                                "{}: {} windows, {} records so far, up to {}",
                                def.name,
                                ctx.report.windows,
                                ctx.report.records,
                                format_instant(DateTime::from_timestamp(hi, 0).unwrap_or_default())
                            ),
                        )
                        .await;
                    }
                }
            }
        }
        if last_checkpoint.as_ref() != Some(&st) {
            ctx.checkpoint(&st).await?;
        }
        Ok(st)
    }

    async fn read_window(
        &self,
        ctx: &mut Ctx,
        lo: i64,
        hi: i64,
        carry: &mut HashMap<String, i64>,
    ) -> Result<WindowOutcome, SyncError> {
        let def = ctx.def;
        let field = def.cursor.expect("incremental");
        let params = self.window_params(def, lo, hi);
        let max_pages = self.config.window_target_pages.saturating_mul(4).max(4);
        let mut emitted: HashMap<String, i64> = carry
            .iter()
            .filter(|(_, ms)| (lo..=hi).contains(&ms.div_euclid(1000)))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut seen: Seen = HashMap::new();
        let mut from_page: u32 = 1;
        let mut paging_start: Option<DateTime<Utc>> = None;
        let mut total_pages: u32 = 0;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut page_no = from_page;
            let mut pass_pages = 0;
            // a record met again at a new version moved inside the window's result while we
            // paged (e.g. updated into the padding second): records after its old place
            // shifted, so the window must be re-read from there
            let mut moved_from: Option<u32> = None;
            loop {
                if total_pages >= max_pages && hi > lo {
                    carry.extend(emitted);
                    return Ok(WindowOutcome::Split {
                        records_seen: seen.len(),
                    });
                }
                let page = self
                    .client
                    .get_page(def.endpoint, &params, page_no, &ctx.sink)
                    .await?;
                total_pages += 1;
                pass_pages += 1;
                if paging_start.is_none() {
                    paging_start = Some(page.server_date.unwrap_or_else(|| {
                        Utc::now()
                            - chrono::Duration::from_std(self.config.clock_skew).unwrap_or_default()
                    }));
                }
                for mut rec in page.records {
                    ctx.normalizer.normalize(&mut rec);
                    let id = rec.get(def.primary_key).and_then(id_key);
                    let t = instant_ms(&rec, field);
                    let (Some(id), Some(t)) = (id, t) else {
                        // cannot be placed in time: emit it (validation names the problem)
                        ctx.emit(rec).await?;
                        continue;
                    };
                    if let Some((old_t, old_page)) = seen.insert(id.clone(), (t, page_no)) {
                        if old_t != t {
                            moved_from = Some(moved_from.map_or(old_page, |m| m.min(old_page)));
                        }
                    }
                    let sec = t.div_euclid(1000);
                    if sec < lo || sec > hi || emitted.get(&id) == Some(&t) {
                        continue;
                    }
                    ctx.emit(rec).await?;
                    emitted.insert(id, t);
                }
                if !page.has_next {
                    break;
                }
                page_no += 1;
            }
            if from_page == 1 && pass_pages == 1 {
                return Ok(WindowOutcome::Done { emitted });
            }
            let since = paging_start.expect("set on first page") - chrono::Duration::seconds(2);
            let checked = self
                .check_window(ctx, lo, hi, since, &mut seen, &mut emitted)
                .await?;
            let changed_from = match (checked, moved_from) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(k) = changed_from else {
                return Ok(WindowOutcome::Done { emitted });
            };
            ctx.report.rereads += 1;
            if hi > lo && attempt >= 3 {
                carry.extend(emitted);
                return Ok(WindowOutcome::Split { records_seen: 0 });
            }
            if attempt >= 12 {
                return Err(SyncError::Unstable {
                    stream: def.name,
                    window: window_name(lo, hi),
                    attempts: attempt,
                });
            }
            ctx.log(
                Level::Info,
                format!(
                    "{}: records of {} changed while it was paged; re-reading from page {k}",
                    def.name,
                    window_name(lo, hi)
                ),
            )
            .await;
            from_page = k;
        }
    }

    /// Everything updated since paging started. Returns the first page to re-read if a
    /// record already seen in the window changed; emits records that joined the window.
    async fn check_window(
        &self,
        ctx: &mut Ctx,
        lo: i64,
        hi: i64,
        since: DateTime<Utc>,
        seen: &mut Seen,
        emitted: &mut HashMap<String, i64>,
    ) -> Result<Option<u32>, SyncError> {
        let def = ctx.def;
        let field = def.cursor.expect("incremental");
        let Mode::Incremental { start_param, .. } = def.mode else {
            unreachable!()
        };
        let mut params = fixed_params(def);
        params.push((start_param, since.timestamp().to_string()));
        let mut changed_from: Option<u32> = None;
        // Everything the check returned so far: a record showing up again with a newer
        // version moved inside the check's own result while it was paged, which can shift
        // another record past us; the check is then paged again from the moved record's
        // old page. (No record can leave the check's set: it has no upper bound.)
        let mut in_check: HashMap<String, (i64, u32)> = HashMap::new();
        let mut from_page = 1;
        for _pass in 0..6 {
            let mut page_no = from_page;
            let mut rescan_from: Option<u32> = None;
            loop {
                if page_no >= from_page + 20 {
                    // too much changed to tell: read the window again
                    return Ok(Some(1));
                }
                let page = self
                    .client
                    .get_page(def.endpoint, &params, page_no, &ctx.sink)
                    .await?;
                for mut rec in page.records {
                    ctx.normalizer.normalize(&mut rec);
                    let (Some(id), Some(t)) = (
                        rec.get(def.primary_key).and_then(id_key),
                        instant_ms(&rec, field),
                    ) else {
                        continue;
                    };
                    if let Some((old_t, old_page)) = in_check.get(&id) {
                        if *old_t != t {
                            rescan_from = Some(rescan_from.map_or(*old_page, |r| r.min(*old_page)));
                        }
                    }
                    in_check.insert(id.clone(), (t, page_no));
                    if let Some((old_t, p)) = seen.get_mut(&id) {
                        if *old_t != t {
                            *old_t = t;
                            changed_from = Some(changed_from.map_or(*p, |c| c.min(*p)));
                        }
                    }
                    let sec = t.div_euclid(1000);
                    if (lo..=hi).contains(&sec) && emitted.get(&id) != Some(&t) {
                        ctx.emit(rec).await?;
                        emitted.insert(id, t);
                    }
                }
                if !page.has_next {
                    break;
                }
                page_no += 1;
            }
            match rescan_from {
                None => return Ok(changed_from),
                Some(p) => from_page = p,
            }
        }
        // the check kept moving: read the window again
        Ok(Some(1))
    }

    async fn fold_webhooks(&self, ctx: &mut Ctx, st: &mut StreamState) -> Result<(), SyncError> {
        let def = ctx.def;
        let kind = def.webhook_kind.expect("checked");
        let path = self.config.journal_path.clone().expect("checked");
        let Some(reader) = open_journal(ctx, &path).await? else {
            return Ok(());
        };
        let upper_ms = self.upper_sec * 1000 + 999;
        let mut seq = st.seq.unwrap_or(0);
        loop {
            let events = reader
                .newest_entities_after(kind, seq, 500)
                .map_err(|e| journal_error(&path, e))?;
            if events.is_empty() {
                break;
            }
            for ev in events {
                seq = seq.max(ev.seq);
                match ev.entity_updated_at_ms {
                    Some(t) if t > upper_ms && ev.payload.is_object() => {
                        let mut rec = ev.payload;
                        ctx.normalizer.normalize(&mut rec);
                        ctx.emit(rec).await?;
                        ctx.report.webhook_folded += 1;
                    }
                    _ => ctx.report.webhook_stale += 1,
                }
            }
        }
        st.seq = Some(seq);
        ctx.log(
            Level::Info,
            format!(
                "{}: folded {} newer versions from webhooks ({} older than the API read, skipped)",
                def.name, ctx.report.webhook_folded, ctx.report.webhook_stale
            ),
        )
        .await;
        ctx.checkpoint(st).await
    }

    async fn journal_stream(&self, ctx: &mut Ctx, mut st: StreamState) -> Result<(), SyncError> {
        let Some(path) = self.config.journal_path.clone() else {
            return Err(SyncError::Journal {
                path: "(none)".into(),
                message: "the webhook_events stream needs `journal_path` in the config (the file `source-loop serve` writes)".into(),
            });
        };
        let Some(reader) = open_journal(ctx, &path).await? else {
            return ctx.checkpoint(&st).await;
        };
        let mut seq = st.seq.unwrap_or(0);
        loop {
            let events = reader
                .events_after(seq, 1000)
                .map_err(|e| journal_error(&path, e))?;
            if events.is_empty() {
                break;
            }
            for ev in events {
                seq = seq.max(ev.seq);
                let mut rec = json!({
                    "id": ev.webhook_id,
                    "seq": ev.seq,
                    "topic": ev.topic,
                    "api_version": ev.api_version,
                    "created_at": ev.created_at,
                    "received_at": ev.received_at,
                    "shop_domain": ev.shop_domain,
                    "retry_count": ev.retry_count,
                    "entity_kind": ev.entity_kind,
                    "entity_id": ev.entity_id,
                    "entity_updated_at": ev.entity_updated_at_ms.and_then(DateTime::from_timestamp_millis).map(format_instant),
                    "payload": ev.payload,
                });
                ctx.normalizer.normalize(&mut rec);
                ctx.emit(rec).await?;
            }
            st.seq = Some(seq);
            ctx.checkpoint(&st).await?;
        }
        st.seq = Some(seq);
        ctx.checkpoint(&st).await
    }
}

/// The query parameters every request of the stream sends (e.g. `type=ALL`).
fn fixed_params(def: &StreamDef) -> Vec<(&'static str, String)> {
    def.fixed_params
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect()
}

fn journal_error(path: &std::path::Path, e: impl std::fmt::Display) -> SyncError {
    SyncError::Journal {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The webhook journal, or None (with a warning) while `serve` has not created it.
async fn open_journal(
    ctx: &Ctx,
    path: &std::path::Path,
) -> Result<Option<loop_webhooks::journal::JournalReader>, SyncError> {
    if !path.exists() {
        ctx.log(
            Level::Warn,
            format!(
                "{}: webhook journal {} does not exist yet (start `source-loop serve`); nothing to read from it",
                ctx.def.name,
                path.display()
            ),
        )
        .await;
        return Ok(None);
    }
    loop_webhooks::journal::JournalReader::open(path)
        .map(Some)
        .map_err(|e| journal_error(path, e))
}

/// Keys a full refresh remembers to notice records moving while it pages (about 64 bytes
/// each: memory stays bounded whatever the endpoint's size).
pub const FULL_REFRESH_TRACKED: usize = 500_000;

fn content_digest(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn window_name(lo: i64, hi: i64) -> String {
    let f = |s: i64| format_instant(DateTime::from_timestamp(s, 0).unwrap_or_default());
    format!("[{} .. {}]", f(lo), f(hi))
}
