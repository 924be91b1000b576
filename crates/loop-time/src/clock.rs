//! "Now", for every instant that is stamped on a change or compared with one: the sync's
//! upper bound, reconciliation's range, the receiver's `received_at`, the fake's
//! `updatedAt`. It is the wall clock plus an offset, and only tests set the offset: the
//! integration tests move time forward instead of sleeping until the next second, so
//! the processes of one test (the in-process fake, the connector binaries it starts)
//! must agree on the moved clock.
//!
//! A process reads its offset once, from [`TEST_CLOCK_OFFSET_ENV`] (unset in production:
//! the offset is zero). A [`Clock`] is an offset of its own that can be moved while the
//! process runs (the in-process fake's). Waiting and pacing never use this clock: they
//! keep `std::time::Instant`, which no offset touches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Test-only: milliseconds (an integer, may be negative) added to the wall clock for
/// every [`now`] of this process. Read once, at the first [`now`]; a value that is not an
/// integer is ignored with a warning on stderr.
pub const TEST_CLOCK_OFFSET_ENV: &str = "SOURCE_LOOP_TEST_CLOCK_OFFSET_MS";

/// The wall clock plus this process's test offset ([`TEST_CLOCK_OFFSET_ENV`]).
pub fn now() -> DateTime<Utc> {
    shifted(process_offset_ms())
}

/// This process's test offset in milliseconds (0 unless [`TEST_CLOCK_OFFSET_ENV`] is set).
pub fn process_offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let Some(raw) = std::env::var_os(TEST_CLOCK_OFFSET_ENV) else {
            return 0;
        };
        parse_offset(&raw.to_string_lossy()).unwrap_or_else(|| {
            eprintln!(
                "warning: {TEST_CLOCK_OFFSET_ENV}={raw:?} is not a whole number of milliseconds; ignored (the variable is for tests only: leave it unset)"
            );
            0
        })
    })
}

fn parse_offset(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn shifted(offset_ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(offset_ms)
}

/// A clock whose offset can be moved while it runs; clones share the offset. It starts
/// at this process's offset, so a fake run as its own process with
/// [`TEST_CLOCK_OFFSET_ENV`] agrees with the connector started beside it.
#[derive(Clone, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            offset_ms: Arc::new(AtomicI64::new(process_offset_ms())),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        shifted(self.offset_ms())
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// The offset from the wall clock, for a process that must agree with this clock
    /// (as [`TEST_CLOCK_OFFSET_ENV`]).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `by` (never back: what it stamped stays in its past).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_whole_milliseconds_and_anything_else_is_refused() {
        assert_eq!(parse_offset("1100"), Some(1100));
        assert_eq!(parse_offset(" -250\n"), Some(-250));
        for bad in ["", "1.5", "1s", "soon"] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_advanced_clock_is_ahead_of_the_wall_by_the_advance_in_every_clone() {
        let clock = Clock::new();
        let shared = clock.clone();
        let before = clock.offset_ms();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(shared.offset_ms(), before + 1500);
        let ahead = shared.now_ms() - Utc::now().timestamp_millis();
        assert!((before + 1400..=before + 1500).contains(&ahead), "{ahead}");
    }
}
