//! Window sizing: a [`Planner`] aims each incremental window at the target pages from
//! the density of the records just read, without assuming it is uniform (real stores are
//! skewed towards recent updates), and says when a window's size is a guess that a probe
//! should check before the window is read. Size decides cost only, never correctness.

/// A window that reaches this many times its target pages is probed (page `hard cap + 1`)
/// before it is read further ...
const SOFT_CAP_TARGETS: u32 = 2;
/// ... and split when it holds more than this many times its target pages (the window's
/// records are held until it is verified: in memory up to `held_memory_mb`, then on disk).
const HARD_CAP_TARGETS: u32 = 4;
/// An oversized window's successor aims at this share of what the probe proved is there
/// (records are rarely spread evenly: aim a little short rather than over the cap).
const SHRINK_SAFETY: f64 = 0.8;
/// The later half of a window predicts the next one when it held at least this many
/// pages (the density changes along the data; the average lags behind) ...
const TAIL_MIN_PAGES: f64 = 2.0;
/// ... and the change from its earlier half is extrapolated, up to this factor either way.
const MAX_EXTRAPOLATION: f64 = 4.0;
/// A density whose later half is this many times its earlier half is rising fast: the
/// next window's estimate is probed.
const RISING: f64 = 1.5;
/// After an empty window, the next one aims at this many times the target (what is known
/// to lie ahead is found in fewer steps).
const AFTER_EMPTY_TARGETS: f64 = 2.0;

/// How the next window is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowPlan {
    pub hi: i64,
    /// At this page (if there are more), ask whether page `hard_cap + 1` exists ...
    pub soft_cap: u32,
    /// ... and split the window if it does.
    pub hard_cap: u32,
    /// The size is a guess: ask right after page 1.
    pub probe_first: bool,
    pub estimated_pages: Option<f64>,
}

/// Sizes windows from the records' density: aims each window at the target pages,
/// without assuming the density is uniform.
#[derive(Debug)]
pub(super) struct Planner {
    target_pages: f64,
    page_size: f64,
    soft_cap: u32,
    hard_cap: u32,
    /// Records per second expected just after the frontier, measured on the last window
    /// (None when it was empty, or before the first).
    density: Option<f64>,
    /// A range ahead known to hold more than this many records: (end second, records).
    known_ahead: Option<(i64, f64)>,
    /// The last window was empty.
    after_empty: bool,
    /// The density rose fast along the last window.
    rising: bool,
    /// No window has been read yet in an incremental sync (one resuming from a cursor):
    /// its first window holds the changes since the last sync, rarely more than the caps.
    resuming: bool,
}

impl Planner {
    pub(super) fn new(target_pages: u32, page_size: u32, resuming: bool) -> Self {
        let target = target_pages.max(1);
        Planner {
            target_pages: f64::from(target),
            page_size: f64::from(page_size.max(1)),
            soft_cap: target.saturating_mul(SOFT_CAP_TARGETS),
            hard_cap: target.saturating_mul(HARD_CAP_TARGETS),
            density: None,
            known_ahead: None,
            after_empty: false,
            rising: false,
            resuming,
        }
    }

    pub(super) fn plan(&self, lo: i64, upper: i64) -> WindowPlan {
        let mut target = self.target_pages * self.page_size;
        if self.after_empty {
            target *= AFTER_EMPTY_TARGETS;
        }
        let ahead = self
            .known_ahead
            .filter(|(end, _)| *end >= lo)
            .map(|(end, n)| n / (end - lo + 1) as f64);
        let density = match (self.density, ahead) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .filter(|d| *d > 0.0);
        let remaining = upper - lo + 1;
        let width = match density {
            Some(d) => ((target / d).floor() as i64).clamp(1, remaining),
            None => remaining,
        };
        let hi = lo + width - 1;
        let estimated_pages = density.map(|d| d * width as f64 / self.page_size);
        WindowPlan {
            hi,
            soft_cap: self.soft_cap,
            hard_cap: self.hard_cap,
            // Ask before reading when the size is a guess: no measured density (but for
            // the changes since the last sync), a density rising fast, or a window
            // reaching the present (where a real store's recent updates pile up).
            probe_first: !self.resuming && (self.density.is_none() || self.rising || hi == upper),
            estimated_pages,
        }
    }

    /// `[lo, hi]` holds more than `pages` pages.
    pub(super) fn too_big(&mut self, hi: i64, pages: u32) {
        self.resuming = false;
        // the next windows assume the proven records evenly spread up to `hi` (a little
        // more of them: they are rarely spread evenly), and are probed before being read
        self.density = None;
        self.known_ahead = Some((hi, f64::from(pages) * self.page_size / SHRINK_SAFETY));
    }

    /// `[lo, hi]` kept changing while paged: read it in halves.
    pub(super) fn busy(&mut self, lo: i64, hi: i64) {
        let span = (hi - lo + 1) as f64;
        let target = self.target_pages * self.page_size;
        self.density = Some(2.0 * target / span);
    }

    /// `[lo, hi]` was read: `times` are its records' instants (ms), in any order.
    pub(super) fn done(&mut self, lo: i64, hi: i64, times: &[i64], pages: u32) {
        self.resuming = false;
        let span = (hi - lo + 1) as f64;
        let n = times.len() as f64;
        if let Some((end, ahead)) = self.known_ahead {
            let left = ahead - n;
            self.known_ahead = (end > hi && left > 0.0).then_some((end, left));
        }
        self.after_empty = times.is_empty();
        if times.is_empty() {
            // nothing here: the density ahead is unknown (what is known ahead still holds)
            self.density = None;
            return;
        }
        // the later half predicts the next window better when the density changes, and
        // its change from the earlier half goes on (real stores: most updates are recent)
        let mid_ms = (lo * 1000 + hi * 1000 + 999) / 2;
        let later = times.iter().filter(|t| **t > mid_ms).count() as f64;
        let earlier = n - later;
        let tail = f64::from(pages) >= TAIL_MIN_PAGES && span >= 2.0 && later > 0.0;
        self.rising = tail && later > RISING * earlier;
        self.density = Some(if !tail {
            n / span
        } else {
            let trend = if earlier > 0.0 {
                (later / earlier).clamp(1.0 / MAX_EXTRAPOLATION, MAX_EXTRAPOLATION)
            } else {
                MAX_EXTRAPOLATION
            };
            later / (span / 2.0) * trend
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_density_reads_the_whole_range_with_a_probe() {
        let p = Planner::new(50, 50, false);
        let plan = p.plan(0, 999);
        assert_eq!(plan.hi, 999);
        assert!(plan.probe_first);
        assert_eq!((plan.soft_cap, plan.hard_cap), (100, 200));
    }

    #[test]
    fn a_window_proven_too_big_is_followed_by_a_smaller_one() {
        let mut p = Planner::new(50, 50, false);
        p.too_big(999, 200);
        let plan = p.plan(0, 999);
        // 10 000 records in 1000 s, aimed at 2500 records with a safety margin
        assert!(plan.hi < 250 && plan.hi > 150, "{plan:?}");
        assert!(plan.probe_first, "a guessed size is probed");
    }

    #[test]
    fn the_next_window_follows_the_density_of_the_later_half() {
        let mut p = Planner::new(10, 50, false);
        // 500 records over [0, 999]: 100 in the first half, 400 in the second
        let times: Vec<i64> = (0..500)
            .map(|i| {
                if i < 100 {
                    i * 5000
                } else {
                    500_000 + (i - 100) * 1249
                }
            })
            .collect();
        p.done(0, 999, &times, 10);
        // 400 records per 500 s, rising 4x: 500 records in 156 s
        let plan = p.plan(1000, 100_000);
        assert_eq!(plan.hi, 1000 + 156 - 1);
    }

    #[test]
    fn an_empty_window_keeps_what_is_known_ahead() {
        let mut p = Planner::new(50, 50, false);
        p.too_big(9999, 200);
        let first = p.plan(0, 9999);
        p.done(0, first.hi, &[], 1);
        let next = p.plan(first.hi + 1, 9999);
        // still 10 000 records somewhere in the rest of the range
        assert!(next.hi < 9999 && next.estimated_pages.is_some(), "{next:?}");
    }
}
