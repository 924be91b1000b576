//! Incremental streams: whole-second windows read so that no record is lost while
//! records move under the pages, with as few requests as the data allows.
//!
//! A window's records are held back until its read is verified (one page, or a check
//! that found nothing moved; in memory up to a bound, then in a temporary file: `held`),
//! then emitted in cursor order with a checkpoint every
//! `checkpoint_interval_records`: a kill re-sends at most that many records, however
//! large the window. Window size is chosen by a [`Planner`] from the density seen so far;
//! when that estimate is uncertain, one probe request (page `cap + 1`) tells whether the
//! window is too large before it is read, so an oversized window costs two requests,
//! not the pages read before noticing. The invariants are in the `sync` module doc.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::FilterBounds;
use crate::event::Level;
use crate::normalize::{format_instant, instant_ms};
use crate::state::{id_key, StreamState};
use crate::streams::Windowed;

use super::emit::Emitter;
use super::held::{HeldRecords, Ready, Spill};
use super::pager::{fixed_params, EarliestPage, Pager};
use super::planner::{Planner, WindowPlan};
use super::{Engine, SyncError};

/// A window re-read this many times because its records moved is split instead.
const SPLIT_AFTER_READS: u32 = 3;
/// A one-second window that keeps changing after this many reads fails the stream
/// (transient: the last STATE is safe).
const MAX_WINDOW_READS: u32 = 12;
/// A one-second window whose query reaches the sync's start second is given up (left to
/// the next sync) after this many reads that found it changing: changes made after the
/// sync started land in that second, or in the padding second after it.
const MAX_LIVE_SECOND_READS: u32 = 3;
/// The check queries from this long before paging started (Loop's clock and filters
/// have whole-second resolution).
const CHECK_OVERLAP_SECS: i64 = 2;
/// Passes of the check over its own result when that result moves.
const MAX_CHECK_PASSES: u32 = 6;
/// A progress line every this many windows.
const PROGRESS_EVERY_WINDOWS: u64 = 10;

/// Seen in the server's filtered set: version instant and the page it was on.
type Seen = HashMap<String, (i64, u32)>;

pub(super) async fn read(
    engine: &Engine,
    em: &mut Emitter,
    w: &Windowed,
    mut st: StreamState,
) -> Result<StreamState, SyncError> {
    let def = em.def;
    let config = &engine.config.sync;
    let start_sec = config.start_date.timestamp();
    let upper = engine.upper_sec;
    let mut lo = match st.cursor {
        Some(c) => c.timestamp().max(start_sec),
        None => start_sec,
    };
    // versions the previous sync emitted in the cursor's second: not emitted again
    let already: HashSet<(String, i64)> = st
        .boundary
        .iter()
        .map(|e| (e.id.clone(), e.at_ms))
        .collect();
    let page_size = engine.client.page_size();
    let mut planner = Planner::new(config.window_target_pages, page_size, st.cursor.is_some());
    let held_budget =
        usize::try_from(config.held_memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let mut spill = Spill::new(config.spill_dir.clone().unwrap_or_else(std::env::temp_dir));
    let mut checkpoints = Checkpoints {
        every: engine.config.sync.checkpoint_interval_records,
        since_last: 0,
        last: None,
    };
    em.log(
        Level::Info,
        format!(
            "{}: reading {} from {} to {}",
            def.name,
            w.cursor,
            second_name(lo),
            second_name(upper)
        ),
    )
    .await;
    while lo <= upper {
        let plan = planner.plan(lo, upper);
        let requests_before = engine.client.endpoint_stats(w.endpoint.path).requests;
        let window = Window::new(engine, w, lo, plan.hi, held_budget, &mut spill)?;
        let live_second = lo == plan.hi && plan.hi + window.padding() >= upper;
        match window.read(em, &plan, live_second).await? {
            WindowOutcome::Busy if live_second => {
                em.log(
                    Level::Info,
                    format!(
                        "{}: records around the sync's start ({}) keep changing; the next sync reads from there",
                        def.name,
                        second_name(lo)
                    ),
                )
                .await;
                break;
            }
            WindowOutcome::Split { more_than_pages } => {
                planner.too_big(plan.hi, more_than_pages);
                em.log(
                    Level::Info,
                    format!(
                        "{}: window {} holds more than {} pages, reading it in smaller windows",
                        def.name,
                        window_name(lo, plan.hi),
                        more_than_pages
                    ),
                )
                .await;
            }
            WindowOutcome::Busy => {
                planner.busy(lo, plan.hi);
                em.log(
                    Level::Info,
                    format!(
                        "{}: window {} kept changing while paged, splitting",
                        def.name,
                        window_name(lo, plan.hi)
                    ),
                )
                .await;
            }
            WindowOutcome::Done { records, pages } => {
                em.report.windows += 1;
                let times: Vec<i64> = records.iter().map(|r| r.at_ms).collect();
                em.log(
                    Level::Debug,
                    format!(
                        "{}: window {}: {} records, {} pages, {} requests (estimated {} pages{})",
                        def.name,
                        window_name(lo, plan.hi),
                        times.len(),
                        pages,
                        engine.client.endpoint_stats(w.endpoint.path).requests - requests_before,
                        plan.estimated_pages
                            .map_or("?".to_string(), |e| format!("{e:.1}")),
                        if plan.probe_first { ", probed" } else { "" }
                    ),
                )
                .await;
                planner.done(lo, plan.hi, &times, pages);
                for r in records {
                    if already.contains(&(r.id.clone(), r.at_ms)) {
                        continue;
                    }
                    em.emit_prepared(spill.load(r.data)?).await?;
                    st.advance(r.id, r.at_ms);
                    checkpoints.after_record(em, &st).await?;
                }
                checkpoints.at_window_end(em, &st).await?;
                lo = plan.hi + 1;
                if em.report.windows.is_multiple_of(PROGRESS_EVERY_WINDOWS) {
                    em.log(
                        Level::Info,
                        format!(
                            "{}: {} windows, {} records so far, up to {}",
                            def.name,
                            em.report.windows,
                            em.report.records,
                            second_name(plan.hi)
                        ),
                    )
                    .await;
                }
            }
        }
    }
    checkpoints.at_end(em, &st).await?;
    Ok(st)
}

/// When the stream's state is written: every `every` records, after each window that
/// emitted something, and once at the end.
struct Checkpoints {
    every: u64,
    since_last: u64,
    last: Option<StreamState>,
}

impl Checkpoints {
    async fn write(&mut self, em: &mut Emitter, st: &StreamState) -> Result<(), SyncError> {
        self.since_last = 0;
        if self.last.as_ref() != Some(st) {
            em.checkpoint(st).await?;
            self.last = Some(st.clone());
        }
        Ok(())
    }

    async fn after_record(&mut self, em: &mut Emitter, st: &StreamState) -> Result<(), SyncError> {
        self.since_last += 1;
        if self.since_last >= self.every {
            self.write(em, st).await?;
        }
        Ok(())
    }

    async fn at_window_end(&mut self, em: &mut Emitter, st: &StreamState) -> Result<(), SyncError> {
        if self.since_last > 0 {
            self.write(em, st).await?;
        }
        Ok(())
    }

    /// The last checkpoint, also for a sync that emitted nothing.
    async fn at_end(&mut self, em: &mut Emitter, st: &StreamState) -> Result<(), SyncError> {
        if self.last.as_ref() != Some(st) {
            em.checkpoint(st).await?;
            self.last = Some(st.clone());
        }
        Ok(())
    }
}

enum WindowOutcome {
    /// Verified: its records in cursor order, and the pages its records filled.
    Done { records: Vec<Ready>, pages: u32 },
    /// Holds more than `more_than_pages`: read it in smaller windows.
    Split { more_than_pages: u32 },
    /// Kept changing while paged: read it in smaller windows.
    Busy,
}

/// One window `[lo, hi]` being read: what the server's filtered set showed (and on which
/// page), and the newest version of each record in the window, held until verified.
struct Window<'a, 's> {
    engine: &'a Engine,
    w: &'a Windowed,
    lo: i64,
    hi: i64,
    seen: Seen,
    held: HeldRecords<'s>,
    /// Loop's clock when the window's paging started.
    paging_start: Option<DateTime<Utc>>,
}

impl<'a, 's> Window<'a, 's> {
    fn new(
        engine: &'a Engine,
        w: &'a Windowed,
        lo: i64,
        hi: i64,
        held_budget: usize,
        spill: &'s mut Spill,
    ) -> Result<Self, SyncError> {
        Ok(Window {
            engine,
            w,
            lo,
            hi,
            seen: Seen::new(),
            held: HeldRecords::new(held_budget, spill)?,
            paging_start: None,
        })
    }

    fn contains_sec(&self, sec: i64) -> bool {
        (self.lo..=self.hi).contains(&sec)
    }

    /// Seconds the query reaches beyond the window on each side: one when the filters'
    /// inclusivity is unknown (records are then filtered by instant here).
    fn padding(&self) -> i64 {
        match self.engine.config.sync.filter_bounds {
            FilterBounds::Unknown => 1,
            FilterBounds::Inclusive => 0,
        }
    }

    /// The window's query.
    fn params(&self) -> Vec<(&'static str, String)> {
        let (qs, qe) = (self.lo - self.padding(), self.hi + self.padding());
        let mut p = fixed_params(&self.w.endpoint);
        p.push((self.w.start_param, qs.to_string()));
        p.push((self.w.end_param, qe.to_string()));
        p
    }

    /// Keep a record's newest version if it belongs to the window.
    async fn hold(
        &mut self,
        em: &mut Emitter,
        id: String,
        t: i64,
        rec: &serde_json::Value,
    ) -> Result<(), SyncError> {
        if !self.contains_sec(t.div_euclid(1000)) {
            return Ok(());
        }
        if !self.held.is_newer(&id, t) {
            return Ok(());
        }
        let data = em.prepare(rec).await?;
        Ok(self.held.hold(id, t, data)?)
    }

    async fn read(
        mut self,
        em: &mut Emitter,
        plan: &WindowPlan,
        live_second: bool,
    ) -> Result<WindowOutcome, SyncError> {
        let engine = self.engine;
        let retry_log = em.retry_log();
        let params = self.params();
        let mut pager = Pager::new(&engine.client, &self.w.endpoint, params.clone());
        let splittable = self.hi > self.lo;
        let mut from_page: u32 = 1;
        let mut last_page: u32 = 0;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut pass_pages = 0;
            // a record met again at a new version moved inside the window's result while
            // we paged (e.g. updated into the padding second): records after its old
            // place shifted, so the window must be re-read from there
            let mut moved_from = EarliestPage::default();
            while let Some((page_no, page)) = pager.next_page(&retry_log).await? {
                pass_pages += 1;
                last_page = last_page.max(page_no);
                if self.paging_start.is_none() {
                    self.paging_start = Some(page.server_date.unwrap_or_else(|| {
                        loop_time::now()
                            - chrono::Duration::from_std(engine.config.sync.clock_skew)
                                .unwrap_or_default()
                    }));
                }
                let has_next = page.has_next;
                for mut rec in page.records {
                    em.normalizer.normalize(&mut rec);
                    let id = rec.get(em.def.primary_key).and_then(id_key);
                    let t = instant_ms(&rec, self.w.cursor);
                    let (Some(id), Some(t)) = (id, t) else {
                        // cannot be placed in time: emit it (validation names the problem)
                        em.emit(rec).await?;
                        continue;
                    };
                    if let Some((old_t, old_page)) = self.seen.insert(id.clone(), (t, page_no)) {
                        if old_t != t {
                            moved_from.note(old_page);
                        }
                    }
                    self.hold(em, id, t, &rec).await?;
                }
                if !has_next || !splittable || attempt > 1 {
                    continue;
                }
                if page_no >= plan.hard_cap {
                    return Ok(WindowOutcome::Split {
                        more_than_pages: plan.hard_cap,
                    });
                }
                if (page_no == 1 && plan.probe_first) || page_no == plan.soft_cap {
                    // Is there a page beyond the hard cap? Its records are not kept: only
                    // pages read in order count (a record moving under an out-of-order
                    // read could shift another past us).
                    let probe = engine
                        .client
                        .get_page(self.w.endpoint.path, &params, plan.hard_cap + 1, &retry_log)
                        .await?;
                    if !probe.records.is_empty() {
                        return Ok(WindowOutcome::Split {
                            more_than_pages: plan.hard_cap,
                        });
                    }
                }
            }
            if from_page == 1 && pass_pages == 1 {
                return self.done(last_page);
            }
            let mut changed_from = self.check(em).await?;
            changed_from.merge(moved_from);
            let Some(k) = changed_from.get() else {
                return self.done(last_page);
            };
            em.report.rereads += 1;
            if (splittable && attempt >= SPLIT_AFTER_READS)
                || (live_second && attempt >= MAX_LIVE_SECOND_READS)
            {
                return Ok(WindowOutcome::Busy);
            }
            if attempt >= MAX_WINDOW_READS {
                return Err(SyncError::Unstable {
                    stream: em.def.name,
                    window: window_name(self.lo, self.hi),
                    attempts: attempt,
                });
            }
            em.log(
                Level::Info,
                format!(
                    "{}: records of {} changed while it was paged; re-reading from page {k}",
                    em.def.name,
                    window_name(self.lo, self.hi)
                ),
            )
            .await;
            from_page = k;
            pager.restart_at(k);
        }
    }

    /// The verified window's records in cursor order.
    fn done(self, pages: u32) -> Result<WindowOutcome, SyncError> {
        let records = self.held.into_cursor_order()?;
        Ok(WindowOutcome::Done { records, pages })
    }

    /// Everything updated since paging started. Returns the first page to re-read if a
    /// record already seen in the window changed; holds records that joined the window.
    async fn check(&mut self, em: &mut Emitter) -> Result<EarliestPage, SyncError> {
        let engine = self.engine;
        let retry_log = em.retry_log();
        let since = self.paging_start.unwrap_or_else(loop_time::now)
            - chrono::Duration::seconds(CHECK_OVERLAP_SECS);
        let mut params = fixed_params(&self.w.endpoint);
        params.push((self.w.start_param, since.timestamp().to_string()));
        let mut pager = Pager::new(&engine.client, &self.w.endpoint, params);
        let mut changed_from = EarliestPage::default();
        // Everything the check returned so far: a record showing up again with a newer
        // version moved inside the check's own result while it was paged, which can shift
        // another record past us; the check is then paged again from the moved record's
        // old page. (No record can leave the check's set: it has no upper bound.)
        let mut in_check: HashMap<String, (i64, u32)> = HashMap::new();
        // (A long check is only many records changed anywhere in the store since paging
        // started: it is read to the end, since reading the window again would meet the
        // same long check.)
        for _pass in 0..MAX_CHECK_PASSES {
            let mut rescan_from = EarliestPage::default();
            while let Some((page_no, page)) = pager.next_page(&retry_log).await? {
                for mut rec in page.records {
                    em.normalizer.normalize(&mut rec);
                    let (Some(id), Some(t)) = (
                        rec.get(em.def.primary_key).and_then(id_key),
                        instant_ms(&rec, self.w.cursor),
                    ) else {
                        continue;
                    };
                    if let Some((old_t, old_page)) = in_check.get(&id) {
                        if *old_t != t {
                            rescan_from.note(*old_page);
                        }
                    }
                    in_check.insert(id.clone(), (t, page_no));
                    if let Some((old_t, p)) = self.seen.get_mut(&id) {
                        if *old_t != t {
                            *old_t = t;
                            changed_from.note(*p);
                        }
                    }
                    self.hold(em, id, t, &rec).await?;
                }
            }
            match rescan_from.get() {
                None => return Ok(changed_from),
                Some(p) => pager.restart_at(p),
            }
        }
        // the check kept moving: read the window again
        changed_from.note(1);
        Ok(changed_from)
    }
}

fn second_name(sec: i64) -> String {
    format_instant(DateTime::from_timestamp(sec, 0).unwrap_or_default())
}

fn window_name(lo: i64, hi: i64) -> String {
    format!("[{} .. {}]", second_name(lo), second_name(hi))
}
