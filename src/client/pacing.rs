//! Per-endpoint pacing: requests evenly spaced at the endpoint's limit plus a safety
//! margin, adapted after 429s without oscillating, and the counts the summary reports.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RateLimit;

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub wait_ms: AtomicU64,
}

/// Requests made, retries, 429s and time spent waiting for the pacer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub wait_ms: u64,
}

impl Counters {
    pub fn snapshot(&self) -> RequestStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestStats {
            requests: get(&self.requests),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            wait_ms: get(&self.wait_ms),
        }
    }
}

/// A 429 slows the endpoint by this factor ...
const SLOWDOWN_ON_429: f64 = 1.2;
/// ... and successes bring it back in steps of this factor, every so many successes ...
const RECOVERY_STEP: f64 = 1.05;
const RECOVER_AFTER_SUCCESSES: u32 = 20;
/// ... but never back to the pace that was refused: at least this much slower than it
/// (recovering to it would only be refused again: Loop's pool is shared with other apps).
const ABOVE_REFUSED_PACE: f64 = 1.05;
const MAX_SLOWDOWN: f64 = 8.0;

struct Pace {
    base: Duration,
    slowdown: f64,
    /// The slowest pace successes may bring `slowdown` back to.
    floor: f64,
    successes: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
    blocked_until: Option<Instant>,
    /// When the endpoint's last `limit.requests` requests were sent, oldest first.
    sends: VecDeque<Instant>,
    /// The endpoint's first request has been answered.
    first_answered: bool,
}

fn limiter_for(interval: Duration) -> Arc<DefaultDirectRateLimiter> {
    let interval = interval.max(Duration::from_micros(1));
    let quota = Quota::with_period(interval)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(1).expect("1"));
    Arc::new(RateLimiter::direct(quota))
}

/// Per-endpoint adaptive pacing: evenly spaced requests at the endpoint's limit plus a
/// safety margin (response times jitter, and a sliding-window limiter refuses a request
/// that arrives a moment early), slower after a 429.
pub(super) struct Endpoint {
    pace: Mutex<Pace>,
    /// `requests` per `window` (after the share of the pool), and the margin.
    limit: RateLimit,
    margin: f64,
    pub stats: Counters,
}

impl Endpoint {
    pub(super) fn new(limit: RateLimit, margin: f64) -> Self {
        let base = limit.interval().mul_f64(1.0 + margin);
        Endpoint {
            pace: Mutex::new(Pace {
                base,
                slowdown: 1.0,
                floor: 1.0,
                successes: 0,
                limiter: limiter_for(base),
                blocked_until: None,
                sends: VecDeque::new(),
                first_answered: false,
            }),
            limit,
            margin,
            stats: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pace> {
        // (a panic while holding the lock leaves the pace usable)
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Without a `Retry-After`: how long until the endpoint's own last requests leave a
    /// trailing window of the limit (the strictest reading of "N per S seconds").
    pub(super) fn window_wait(&self) -> Duration {
        let p = self.lock();
        let window = Duration::from_secs_f64(self.limit.per_seconds * (1.0 + self.margin));
        match p.sends.front() {
            Some(oldest) if p.sends.len() >= self.limit.requests as usize => {
                (*oldest + window).saturating_duration_since(Instant::now())
            }
            _ => p.base.mul_f64(p.slowdown),
        }
    }

    pub(super) async fn acquire(&self) {
        let started = Instant::now();
        loop {
            let (limiter, blocked) = {
                let p = self.lock();
                (p.limiter.clone(), p.blocked_until)
            };
            if let Some(until) = blocked {
                let now = Instant::now();
                if until > now {
                    tokio::time::sleep(until - now).await;
                    continue;
                }
            }
            limiter.until_ready().await;
            let mut p = self.lock();
            p.sends.push_back(Instant::now());
            while p.sends.len() > self.limit.requests as usize {
                p.sends.pop_front();
            }
            break;
        }
        self.stats
            .wait_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A response came back. The endpoint's first request also opened its connection, so
    /// it may have reached Loop late, and the next one (on a warm connection) early: the
    /// next one is paced from this response, not from when the first was sent.
    pub(super) fn answered(&self) {
        let mut p = self.lock();
        if p.first_answered {
            return;
        }
        p.first_answered = true;
        let next = Instant::now() + p.base.mul_f64(p.slowdown);
        if p.blocked_until.is_none_or(|b| b < next) {
            p.blocked_until = Some(next);
        }
    }

    pub(super) fn on_success(&self) {
        let mut p = self.lock();
        p.successes += 1;
        if p.slowdown > p.floor && p.successes >= RECOVER_AFTER_SUCCESSES {
            p.successes = 0;
            p.slowdown = (p.slowdown / RECOVERY_STEP).max(p.floor);
            p.limiter = limiter_for(p.base.mul_f64(p.slowdown));
        }
    }

    pub(super) fn on_rate_limited(&self, wait: Duration) {
        let mut p = self.lock();
        p.successes = 0;
        p.floor = (p.slowdown * ABOVE_REFUSED_PACE).min(MAX_SLOWDOWN);
        p.slowdown = (p.slowdown * SLOWDOWN_ON_429).min(MAX_SLOWDOWN);
        p.limiter = limiter_for(p.base.mul_f64(p.slowdown));
        let until = Instant::now() + wait;
        if p.blocked_until.is_none_or(|b| b < until) {
            p.blocked_until = Some(until);
        }
    }
}

/// Why an attempt failed and whether it may be retried.
#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn endpoint() -> Endpoint {
        Endpoint::new(
            RateLimit {
                requests: 2,
                per_seconds: 0.2,
            },
            0.05,
        )
    }

    #[test]
    pub(super) fn a_429_slows_the_endpoint_and_successes_never_return_to_the_refused_pace() {
        let ep = endpoint();
        ep.on_rate_limited(Duration::from_millis(10));
        let slowed = ep.lock().slowdown;
        assert!(slowed >= SLOWDOWN_ON_429, "{slowed}");
        assert!(ep.lock().blocked_until.is_some());
        ep.on_rate_limited(Duration::from_millis(10));
        let refused = ep.lock().slowdown;
        assert!(refused > slowed);
        for _ in 0..2000 {
            ep.on_success();
        }
        let recovered = ep.lock().slowdown;
        assert!(recovered < refused, "successes speed it up again");
        assert!(
            recovered >= refused * ABOVE_REFUSED_PACE / SLOWDOWN_ON_429 - 1e-9,
            "but not back to the pace that was refused: {recovered}"
        );
    }

    #[tokio::test]
    pub(super) async fn without_retry_after_a_429_waits_for_the_own_window_to_clear() {
        let ep = endpoint();
        ep.acquire().await;
        ep.acquire().await;
        // two requests within 0.2 s: the next fits when the first leaves the window
        let wait = ep.window_wait();
        assert!(wait > Duration::from_millis(50), "{wait:?}");
        assert!(wait <= Duration::from_millis(210), "{wait:?}");
    }
}
