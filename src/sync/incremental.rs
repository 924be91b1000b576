//! Incremental streams: whole-second windows read so that no record is lost while
//! records move under the pages (the invariants are in the `sync` module doc).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::FilterBounds;
use crate::event::Level;
use crate::normalize::{format_instant, instant_ms};
use crate::state::{id_key, Emitted, StreamState};
use crate::streams::Windowed;

use super::emit::Emitter;
use super::pager::{fixed_params, EarliestPage, Pager};
use super::{Engine, SyncError};

/// The first window spans at most a day (the data's density is unknown yet).
const FIRST_WINDOW_MAX_SECS: i64 = 86_400;
/// A window may grow at most this much over the previous one (density changes).
const WINDOW_GROWTH: i64 = 8;
/// ... and shrink at most to a quarter of it.
const WINDOW_SHRINK: i64 = 4;
/// A window reading this many times its target pages is abandoned and split.
const ABANDON_AT_TARGETS: u32 = 4;
/// A window re-read this many times because its records moved is split instead.
const SPLIT_AFTER_READS: u32 = 3;
/// A one-second window that keeps changing after this many reads fails the stream
/// (transient: the last STATE is safe).
const MAX_WINDOW_READS: u32 = 12;
/// The check queries from this long before paging started (Loop's clock and filters
/// have whole-second resolution).
const CHECK_OVERLAP_SECS: i64 = 2;
/// Passes of the check over its own result when that result moves.
const MAX_CHECK_PASSES: u32 = 6;
/// A check longer than this many pages means too much changed to tell: re-read.
const MAX_CHECK_PAGES: u32 = 20;
/// A progress line every this many windows.
const PROGRESS_EVERY_WINDOWS: u64 = 10;

/// Seen in the server's filtered set: version instant and the page it was on.
type Seen = HashMap<String, (i64, u32)>;
/// Emitted record versions: id → version instant (ms).
type Versions = HashMap<String, i64>;

enum WindowOutcome {
    Done {
        emitted: Versions,
    },
    /// Read it in smaller windows; `records_seen` (when known) sizes them.
    Split {
        records_seen: usize,
    },
}

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
    // versions emitted before (state boundary, or by an abandoned window)
    let mut carry: Versions = st
        .boundary
        .iter()
        .map(|e| (e.id.clone(), e.at_ms))
        .collect();
    let target = i64::from(config.window_target_pages) * i64::from(engine.client.page_size());
    let mut width: i64 = (upper - lo + 1).clamp(1, FIRST_WINDOW_MAX_SECS);
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
    let mut last_checkpoint: Option<StreamState> = None;
    while lo <= upper {
        let hi = lo.saturating_add(width - 1).min(upper);
        let mut window = Window::new(engine, w, lo, hi, &carry);
        match window.read(em, &mut carry).await? {
            WindowOutcome::Split { records_seen } => {
                let span = hi - lo + 1;
                // at least `records_seen` records in the span: size the next window for
                // the target, at most half the span
                width = if records_seen > 0 {
                    (span.saturating_mul(target) / records_seen as i64).clamp(1, (span / 2).max(1))
                } else {
                    (span / 2).max(1)
                };
                em.log(
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
                em.report.windows += 1;
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
                    em.checkpoint(&st).await?;
                    last_checkpoint = Some(st.clone());
                }
                let n = emitted.len() as i64;
                let span = hi - lo + 1;
                width = if n == 0 {
                    span.saturating_mul(WINDOW_GROWTH)
                } else {
                    (span.saturating_mul(target) / n).clamp(
                        (span / WINDOW_SHRINK).max(1),
                        span.saturating_mul(WINDOW_GROWTH),
                    )
                }
                .max(1);
                lo = hi + 1;
                if em.report.windows.is_multiple_of(PROGRESS_EVERY_WINDOWS) {
                    em.log(
                        Level::Info,
                        format!(
                            "{}: {} windows, {} records so far, up to {}",
                            def.name,
                            em.report.windows,
                            em.report.records,
                            second_name(hi)
                        ),
                    )
                    .await;
                }
            }
        }
    }
    if last_checkpoint.as_ref() != Some(&st) {
        em.checkpoint(&st).await?;
    }
    Ok(st)
}

/// One window `[lo, hi]` being read: what the server's filtered set showed (and on which
/// page), and what was emitted.
struct Window<'a> {
    engine: &'a Engine,
    w: &'a Windowed,
    lo: i64,
    hi: i64,
    seen: Seen,
    emitted: Versions,
    /// Loop's clock when the window's paging started.
    paging_start: Option<DateTime<Utc>>,
    pages_read: u32,
}

impl<'a> Window<'a> {
    fn new(engine: &'a Engine, w: &'a Windowed, lo: i64, hi: i64, carry: &Versions) -> Self {
        Window {
            engine,
            w,
            lo,
            hi,
            seen: Seen::new(),
            // versions emitted before inside this window are not emitted again
            emitted: carry
                .iter()
                .filter(|(_, ms)| (lo..=hi).contains(&ms.div_euclid(1000)))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            paging_start: None,
            pages_read: 0,
        }
    }

    fn contains_sec(&self, sec: i64) -> bool {
        (self.lo..=self.hi).contains(&sec)
    }

    /// The window's query: widened by a second on each side when the filters'
    /// inclusivity is unknown (records are filtered by instant here).
    fn params(&self) -> Vec<(&'static str, String)> {
        let (qs, qe) = match self.engine.config.sync.filter_bounds {
            FilterBounds::Unknown => (self.lo - 1, self.hi + 1),
            FilterBounds::Inclusive => (self.lo, self.hi),
        };
        let mut p = fixed_params(&self.w.endpoint);
        p.push((self.w.start_param, qs.to_string()));
        p.push((self.w.end_param, qe.to_string()));
        p
    }

    async fn read(
        &mut self,
        em: &mut Emitter,
        carry: &mut Versions,
    ) -> Result<WindowOutcome, SyncError> {
        let engine = self.engine;
        let retry_log = em.retry_log();
        let max_pages = engine
            .config
            .sync
            .window_target_pages
            .saturating_mul(ABANDON_AT_TARGETS)
            .max(ABANDON_AT_TARGETS);
        let mut pager = Pager::new(&engine.client, &self.w.endpoint, self.params());
        let mut from_page: u32 = 1;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut pass_pages = 0;
            // a record met again at a new version moved inside the window's result while
            // we paged (e.g. updated into the padding second): records after its old
            // place shifted, so the window must be re-read from there
            let mut moved_from = EarliestPage::default();
            loop {
                if pager.upcoming().is_some() && self.pages_read >= max_pages && self.hi > self.lo {
                    carry.extend(std::mem::take(&mut self.emitted));
                    return Ok(WindowOutcome::Split {
                        records_seen: self.seen.len(),
                    });
                }
                let Some((page_no, page)) = pager.next_page(&retry_log).await? else {
                    break;
                };
                self.pages_read += 1;
                pass_pages += 1;
                if self.paging_start.is_none() {
                    self.paging_start = Some(page.server_date.unwrap_or_else(|| {
                        Utc::now()
                            - chrono::Duration::from_std(engine.config.sync.clock_skew)
                                .unwrap_or_default()
                    }));
                }
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
                    if !self.contains_sec(t.div_euclid(1000)) || self.emitted.get(&id) == Some(&t) {
                        continue;
                    }
                    em.emit(rec).await?;
                    self.emitted.insert(id, t);
                }
            }
            if from_page == 1 && pass_pages == 1 {
                return Ok(WindowOutcome::Done {
                    emitted: std::mem::take(&mut self.emitted),
                });
            }
            let mut changed_from = self.check(em).await?;
            changed_from.merge(moved_from);
            let Some(k) = changed_from.get() else {
                return Ok(WindowOutcome::Done {
                    emitted: std::mem::take(&mut self.emitted),
                });
            };
            em.report.rereads += 1;
            if self.hi > self.lo && attempt >= SPLIT_AFTER_READS {
                carry.extend(std::mem::take(&mut self.emitted));
                return Ok(WindowOutcome::Split { records_seen: 0 });
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

    /// Everything updated since paging started. Returns the first page to re-read if a
    /// record already seen in the window changed; emits records that joined the window.
    async fn check(&mut self, em: &mut Emitter) -> Result<EarliestPage, SyncError> {
        let engine = self.engine;
        let retry_log = em.retry_log();
        let since = self.paging_start.unwrap_or_else(Utc::now)
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
        let mut from_page = 1;
        for _pass in 0..MAX_CHECK_PASSES {
            let mut rescan_from = EarliestPage::default();
            loop {
                if pager
                    .upcoming()
                    .is_some_and(|p| p >= from_page + MAX_CHECK_PAGES)
                {
                    // too much changed to tell: read the window again
                    changed_from.note(1);
                    return Ok(changed_from);
                }
                let Some((page_no, page)) = pager.next_page(&retry_log).await? else {
                    break;
                };
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
                    if self.contains_sec(t.div_euclid(1000)) && self.emitted.get(&id) != Some(&t) {
                        em.emit(rec).await?;
                        self.emitted.insert(id, t);
                    }
                }
            }
            match rescan_from.get() {
                None => return Ok(changed_from),
                Some(p) => {
                    from_page = p;
                    pager.restart_at(p);
                }
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
