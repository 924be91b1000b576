//! Per-endpoint rate limiting under three readings of "n requests per W seconds", when a
//! request is counted ([`ServerJitter`]: a loaded server counts it a few milliseconds
//! after it arrived), and the `Retry-After` text a 429 carries.
//!
//! Loop states its limits as "2 requests / 3 s" without saying how they are counted.
//! The readings differ exactly where a well-paced client lives, so the fake can be
//! started with any of them ([`LimiterKind`]). Every kind answers a refusal with the
//! real time until a request would be accepted, which is what `Retry-After` reports.
//! Time is a [`Duration`] since the Unix epoch read from a monotonic clock
//! ([`EpochClock`]), so fixed windows are aligned to the calendar and unit tests can
//! drive the limiter with made-up instants instead of sleeping.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// How a limit of n requests per W seconds is counted. W is the endpoint's window
/// times `rate_scale`; each endpoint key has its own state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LimiterKind {
    /// Token bucket (GCRA): one request per W/n, bursts of up to n. An evenly paced
    /// client is never refused, even with jitter, as long as its average rate fits.
    #[default]
    Gcra,
    /// A request at time t is refused when the half-open window (t − W, t] already
    /// holds n accepted requests. A request exactly W after the n-th previous accepted
    /// one is accepted, so perfectly even spacing at W/n passes; any jitter that makes
    /// n+1 consecutive requests span less than W is refused.
    SlidingWindow,
    /// n accepted requests per calendar window [kW, (k+1)W) aligned to the Unix epoch;
    /// the count resets at each boundary, so 2n requests can pass within a moment
    /// around one.
    FixedWindow,
}

/// Server-side delay before a request is counted and answered, as a loaded server has (a
/// pause in its own process, a busy core, a hop behind a load balancer): every request
/// waits a uniform 0..=`max_delay_ms`, and `stall_percent` % of them `stall_ms` more. The
/// limiter counts the request after the wait, so a client that spaced its requests
/// exactly at the limit by when it *sent* them can be refused; it never sees when the
/// server counted, only that it was before the response came back.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerJitter {
    pub max_delay_ms: u64,
    /// Share of requests that stall, in percent (0–100).
    pub stall_percent: f64,
    pub stall_ms: u64,
}

impl Default for ServerJitter {
    /// The reading the benchmarks use: 0–10 ms per request, 2 % of requests 50 ms more.
    fn default() -> Self {
        ServerJitter {
            max_delay_ms: 10,
            stall_percent: 2.0,
            stall_ms: 50,
        }
    }
}

impl ServerJitter {
    /// The delay of one request, from two uniform draws in [0, 1): `spread` places it in
    /// 0..=`max_delay_ms`, `stall` below `stall_percent` / 100 adds the stall.
    pub(crate) fn delay(&self, spread: f64, stall: f64) -> Duration {
        let base = Duration::from_millis(self.max_delay_ms).mul_f64(spread.clamp(0.0, 1.0));
        if stall < self.stall_percent / 100.0 {
            base + Duration::from_millis(self.stall_ms)
        } else {
            base
        }
    }

    /// A fresh delay for one request.
    pub(crate) fn sample(&self) -> Duration {
        use rand::Rng;
        let mut rng = rand::rng();
        // (inclusive of the maximum: `random::<f64>()` never reaches 1)
        let spread = rng.random_range(0.0..=1.0);
        self.delay(spread, rng.random())
    }
}

/// A limit of `requests` per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub requests: u32,
    pub window: Duration,
}

impl Limit {
    /// `requests` per `seconds` scaled by `scale`; a non-finite or negative product is
    /// treated as no window at all (every request passes).
    pub(crate) fn scaled(requests: u32, seconds: f64, scale: f64) -> Limit {
        Limit {
            requests,
            window: Duration::try_from_secs_f64(seconds * scale).unwrap_or(Duration::ZERO),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted {
        /// Requests that could still be made right now (`X-RateLimit-Remaining`).
        remaining: u32,
    },
    Refused {
        /// Time until a request would be accepted.
        wait: Duration,
    },
}

/// State of one endpoint key.
#[derive(Debug)]
enum KeyState {
    /// Theoretical arrival time.
    Gcra { tat: Duration },
    /// Accepted requests still inside the trailing window, oldest first (at most n).
    Sliding { accepted: VecDeque<Duration> },
    /// Index of the current calendar window and how many it has accepted.
    Fixed { window: u128, used: u32 },
}

/// The limiter state of every endpoint key, all counted the same way.
#[derive(Debug)]
pub(crate) struct Limiters {
    kind: LimiterKind,
    keys: BTreeMap<String, KeyState>,
}

impl Limiters {
    pub(crate) fn new(kind: LimiterKind) -> Limiters {
        Limiters {
            kind,
            keys: BTreeMap::new(),
        }
    }

    /// Decides a request to `key` at `now`; an accepted request is counted.
    pub(crate) fn check(&mut self, key: &str, limit: Limit, now: Duration) -> Verdict {
        let n = limit.requests;
        let w = limit.window;
        if n == 0 || w.is_zero() {
            return Verdict::Accepted { remaining: n };
        }
        // Lookup before insert: most requests hit an existing key.
        if !self.keys.contains_key(key) {
            let fresh = match self.kind {
                LimiterKind::Gcra => KeyState::Gcra { tat: now },
                LimiterKind::SlidingWindow => KeyState::Sliding {
                    accepted: VecDeque::with_capacity(n as usize),
                },
                LimiterKind::FixedWindow => KeyState::Fixed { window: 0, used: 0 },
            };
            self.keys.insert(key.to_string(), fresh);
        }
        let state = self.keys.get_mut(key).expect("inserted above");
        match state {
            KeyState::Gcra { tat } => {
                let t = w / n;
                let tau = t * (n - 1);
                let start = (*tat).max(now);
                let ahead = start - now;
                if ahead > tau {
                    return Verdict::Refused { wait: ahead - tau };
                }
                *tat = start + t;
                let used = (*tat - now).as_nanos().div_ceil(t.as_nanos().max(1));
                Verdict::Accepted {
                    remaining: n.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX)),
                }
            }
            KeyState::Sliding { accepted } => {
                // (now − W, now]: an instant exactly W ago has left the window.
                while accepted.front().is_some_and(|&t| t + w <= now) {
                    accepted.pop_front();
                }
                if accepted.len() >= n as usize {
                    let oldest = accepted[accepted.len() - n as usize];
                    return Verdict::Refused {
                        wait: oldest + w - now,
                    };
                }
                accepted.push_back(now);
                Verdict::Accepted {
                    remaining: n - accepted.len() as u32,
                }
            }
            KeyState::Fixed { window, used } => {
                let current = now.as_nanos() / w.as_nanos();
                if *window != current {
                    *window = current;
                    *used = 0;
                }
                if *used >= n {
                    let next = (current + 1) * w.as_nanos();
                    let wait = next - now.as_nanos();
                    return Verdict::Refused {
                        wait: Duration::new(
                            (wait / 1_000_000_000) as u64,
                            (wait % 1_000_000_000) as u32,
                        ),
                    };
                }
                *used += 1;
                Verdict::Accepted {
                    remaining: n - *used,
                }
            }
        }
    }
}

/// Wall-clock time since the Unix epoch that never goes backwards: the system time
/// read once, advanced by a monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochClock {
    origin: Instant,
    origin_since_epoch: Duration,
}

impl EpochClock {
    pub(crate) fn start() -> EpochClock {
        EpochClock {
            origin: Instant::now(),
            origin_since_epoch: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.origin_since_epoch + self.origin.elapsed()
    }
}

/// `wait` in seconds with up to millisecond precision, rounded up to the next
/// millisecond so a client that waits exactly that long is never early: 150 ms →
/// "0.15", 1 s → "1", 1 µs → "0.001".
pub(crate) fn exact_seconds(wait: Duration) -> String {
    let ms = wait.as_nanos().div_ceil(1_000_000);
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return secs.to_string();
    }
    let text = format!("{secs}.{frac:03}");
    text.trim_end_matches('0').to_string()
}

/// `wait` rounded up to whole seconds, at least 1: 100 ms → "1", 2 s → "2".
pub(crate) fn whole_seconds(wait: Duration) -> String {
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    secs.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// Loop's subscription limit: 2 requests per 3 s.
    fn two_per_three_seconds() -> Limit {
        Limit {
            requests: 2,
            window: 3 * SEC,
        }
    }

    /// An instant `ms` after a window-aligned epoch offset (a multiple of 3 s).
    fn at(ms: u64) -> Duration {
        Duration::from_secs(1_700_000_001) + Duration::from_millis(ms)
    }

    fn refused(v: Verdict) -> Option<Duration> {
        match v {
            Verdict::Refused { wait } => Some(wait),
            Verdict::Accepted { .. } => None,
        }
    }

    /// Sends requests at the given offsets (ms); returns the waits of refused ones.
    fn run(kind: LimiterKind, times_ms: &[u64]) -> Vec<Option<Duration>> {
        let mut l = Limiters::new(kind);
        times_ms
            .iter()
            .map(|&t| refused(l.check("/subscription", two_per_three_seconds(), at(t))))
            .collect()
    }

    #[test]
    fn sliding_window_accepts_even_spacing_at_exactly_the_limit_because_the_window_excludes_its_start(
    ) {
        // 2 per 3 s every 1.5 s: the third request comes exactly 3 s after the first,
        // which has just left (t − 3 s, t].
        let got = run(LimiterKind::SlidingWindow, &[0, 1500, 3000, 4500, 6000]);
        assert_eq!(got, vec![None; 5]);
    }

    #[test]
    fn sliding_window_refuses_a_third_request_within_the_window_when_jitter_shortens_the_spacing() {
        // The same client, its second response 20 ms slow and the third request 10 ms
        // early: three requests within 3 s.
        let got = run(LimiterKind::SlidingWindow, &[0, 1520, 2990]);
        assert_eq!(got, vec![None, None, Some(Duration::from_millis(10))]);
        // The wait is exact: at 3000 the first request has left the window.
        let mut l = Limiters::new(LimiterKind::SlidingWindow);
        for t in [0, 1520] {
            assert!(refused(l.check("k", two_per_three_seconds(), at(t))).is_none());
        }
        assert!(refused(l.check("k", two_per_three_seconds(), at(2999))).is_some());
        assert!(refused(l.check("k", two_per_three_seconds(), at(3000))).is_none());
    }

    #[test]
    fn gcra_absorbs_the_jitter_a_sliding_window_refuses() {
        assert_eq!(run(LimiterKind::Gcra, &[0, 1520, 2990]), vec![None; 3]);
    }

    #[test]
    fn an_evenly_paced_client_with_jitter_is_refused_by_a_sliding_window_but_not_by_gcra() {
        // One request every 1.5 s, each sent up to 40 ms early or late.
        let jitter = [0i64, 30, -20, 10, -40, 25, -5, 40, -30, 15];
        let times: Vec<u64> = (0..40)
            .map(|k| (5_000 + k as i64 * 1500 + jitter[k % jitter.len()]) as u64)
            .collect();
        let refusals = |kind| run(kind, &times).iter().filter(|w| w.is_some()).count();
        assert_eq!(refusals(LimiterKind::Gcra), 0);
        // Refused whenever a request is earlier than the one two before it (a refusal
        // then leaves room for the next): 8 of these 40.
        assert_eq!(refusals(LimiterKind::SlidingWindow), 8);
    }

    #[test]
    fn gcra_allows_a_burst_of_n_then_one_per_interval() {
        let got = run(LimiterKind::Gcra, &[0, 0, 0, 1500]);
        assert_eq!(
            got,
            vec![None, None, Some(Duration::from_millis(1500)), None]
        );
    }

    #[test]
    fn fixed_window_allows_n_per_aligned_window() {
        // Windows are [0, 3000), [3000, 6000) ... relative to `at(0)`, which is aligned.
        assert_eq!(at(0).as_millis() % 3000, 0);
        let got = run(
            LimiterKind::FixedWindow,
            &[0, 100, 200, 2999, 3000, 3001, 3002],
        );
        assert_eq!(
            got,
            vec![
                None,
                None,
                Some(Duration::from_millis(2800)),
                Some(Duration::from_millis(1)),
                None,
                None,
                Some(Duration::from_millis(2998)),
            ]
        );
    }

    #[test]
    fn fixed_window_lets_two_bursts_through_around_a_boundary() {
        let got = run(LimiterKind::FixedWindow, &[2998, 2999, 3000, 3001]);
        assert_eq!(got, vec![None; 4]);
        // A sliding window refuses the same requests.
        let got = run(LimiterKind::SlidingWindow, &[2998, 2999, 3000, 3001]);
        assert_eq!(got[2..].iter().filter(|w| w.is_some()).count(), 2);
    }

    #[test]
    fn endpoint_keys_are_limited_independently() {
        let mut l = Limiters::new(LimiterKind::SlidingWindow);
        let lim = two_per_three_seconds();
        for key in ["/subscription", "/order"] {
            assert_eq!(l.check(key, lim, at(0)), Verdict::Accepted { remaining: 1 });
            assert_eq!(l.check(key, lim, at(1)), Verdict::Accepted { remaining: 0 });
        }
        assert!(refused(l.check("/subscription", lim, at(2))).is_some());
    }

    #[test]
    fn a_zero_window_never_refuses() {
        let mut l = Limiters::new(LimiterKind::FixedWindow);
        let lim = Limit::scaled(1, 1.0, 0.0);
        for _ in 0..10 {
            assert!(refused(l.check("k", lim, at(0))).is_none());
        }
    }

    #[test]
    fn server_jitter_spreads_delays_up_to_its_maximum_and_stalls_the_given_share() {
        let j = ServerJitter::default();
        assert_eq!(j.delay(0.0, 0.5), Duration::ZERO);
        assert_eq!(j.delay(1.0, 0.5), Duration::from_millis(10));
        assert_eq!(j.delay(0.5, 0.5), Duration::from_millis(5));
        // a draw below 2 % stalls
        assert_eq!(j.delay(0.0, 0.019), Duration::from_millis(50));
        assert_eq!(j.delay(0.0, 0.02), Duration::ZERO);
        let samples: Vec<Duration> = (0..5000).map(|_| j.sample()).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(60)));
        let stalled = samples
            .iter()
            .filter(|d| **d >= Duration::from_millis(50))
            .count();
        // 2 % of 5 000 is 100; far outside this is a broken draw, not bad luck
        assert!((40..=180).contains(&stalled), "{stalled} stalls");
        let none = ServerJitter {
            max_delay_ms: 0,
            stall_percent: 0.0,
            stall_ms: 50,
        };
        assert!((0..100).all(|_| none.sample().is_zero()));
    }

    #[test]
    fn exact_retry_after_keeps_fractions() {
        assert_eq!(exact_seconds(Duration::from_millis(150)), "0.15");
        assert_eq!(exact_seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(exact_seconds(Duration::from_secs(1)), "1");
        assert_eq!(exact_seconds(Duration::from_micros(1)), "0.001");
        assert_eq!(exact_seconds(Duration::from_micros(1_000_001)), "1.001");
    }

    #[test]
    fn rounded_up_retry_after_is_a_whole_number_of_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(100)), "1");
        assert_eq!(whole_seconds(Duration::from_millis(1000)), "1");
        assert_eq!(whole_seconds(Duration::from_millis(1001)), "2");
        assert_eq!(whole_seconds(Duration::from_nanos(1)), "1");
    }
}
