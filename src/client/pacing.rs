//! Per-endpoint pacing: each request waits until the server has surely counted the
//! request `n` places before it a whole window ago (n requests per W seconds), requests are
//! evenly spaced at the limit, pace is adapted after 429s without oscillating; and the counts
//! the summary reports.
//!
//! Why the response, not the send, anchors the window: a limiter places a request where
//! the server *counted* it, which the client never sees; a loaded server counts a request
//! a few milliseconds after it arrived (a pause in its own process, a busy core, a hop
//! behind a load balancer), so requests the client spaced exactly W apart by their sends
//! can be less than W apart where the limiter looks. What the client does see is when a
//! response came back, and the server counted the request before it answered. So request
//! j is sent no earlier than `received(j − n) + W`: the server counted j − n no later than
//! `received(j − n)` and counts j no earlier than `sent(j)`, so it sees at least W between
//! them whatever its delay. n requests at least W apart in that sense is what all three
//! readings of "n per W" accept: a sliding window (no n + 1 inside any half-open W), a
//! fixed window (each calendar window is such an interval) and a token bucket of n
//! refilled at n/W (any span L then holds at most n·(1 + L/W) requests). The only cost is
//! each response's travel time, once per n requests, where a margin wide enough to absorb
//! the jitter would cost the jitter's worst case on every request. A request's slot is
//! reserved when it is sent and anchored when its response (or failure) arrives, so
//! concurrent requests to one endpoint are accounted too.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

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

/// One of the endpoint's recent requests.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    /// When its response (or its failure) came back; `None` while it is in flight.
    answered: Option<Instant>,
}

struct Pace {
    base: Duration,
    slowdown: f64,
    /// The slowest pace successes may bring `slowdown` back to.
    floor: f64,
    successes: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
    blocked_until: Option<Instant>,
    /// The endpoint's last `limit.requests` requests, oldest first.
    recent: VecDeque<Slot>,
    next_seq: u64,
}

/// What a request must wait for before it may be sent.
enum Wait {
    Nothing,
    Until(Instant),
    /// The request `n` places earlier is still in flight.
    Answer,
}

fn limiter_for(interval: Duration) -> Arc<DefaultDirectRateLimiter> {
    let interval = interval.max(Duration::from_micros(1));
    let quota = Quota::with_period(interval)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(1).expect("1"));
    Arc::new(RateLimiter::direct(quota))
}

/// Per-endpoint adaptive pacing: each request a window (plus the margin) after the
/// response to the request `n` places earlier, evenly spaced at the limit plus the margin
/// (never bursting), slower after a 429.
pub(super) struct Endpoint {
    pace: Mutex<Pace>,
    /// `requests` per `window` (after the share of the pool).
    limit: RateLimit,
    /// The limit's window widened by the margin: the least time from a response to the
    /// request `n` places after it.
    anchored_window: Duration,
    /// Woken whenever a response comes back.
    answers: Notify,
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
                recent: VecDeque::new(),
                next_seq: 0,
            }),
            limit,
            anchored_window: Duration::try_from_secs_f64(limit.per_seconds * (1.0 + margin))
                .unwrap_or(Duration::ZERO),
            answers: Notify::new(),
            stats: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pace> {
        // (a panic while holding the lock leaves the pace usable)
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn window_requests(&self) -> usize {
        self.limit.requests.max(1) as usize
    }

    /// What the next request waits for: a `Retry-After`, or the response to the request
    /// `n` places before it and a window after that.
    fn wait_before_send(&self, p: &Pace, now: Instant) -> Wait {
        if let Some(until) = p.blocked_until.filter(|&b| b > now) {
            return Wait::Until(until);
        }
        let n = self.window_requests();
        if p.recent.len() < n {
            return Wait::Nothing;
        }
        match p.recent[p.recent.len() - n].answered {
            None => Wait::Answer,
            Some(at) if at + self.anchored_window > now => Wait::Until(at + self.anchored_window),
            Some(_) => Wait::Nothing,
        }
    }

    /// Without a `Retry-After`: how long until the endpoint's own last requests leave a
    /// trailing window of the limit (the strictest reading of "N per S seconds"), counted
    /// from their responses like the pace itself.
    pub(super) fn window_wait(&self) -> Duration {
        let p = self.lock();
        let n = self.window_requests();
        let oldest = p.recent.len().checked_sub(n).map(|i| p.recent[i].answered);
        match oldest {
            Some(Some(at)) => (at + self.anchored_window).saturating_duration_since(Instant::now()),
            _ => p.base.mul_f64(p.slowdown),
        }
    }

    /// Waits until a request may be sent and reserves its slot; the slot is anchored when
    /// [`Reservation::answered`] is called, or when the reservation is dropped.
    pub(super) async fn acquire(&self) -> Reservation<'_> {
        let started = Instant::now();
        let seq = loop {
            // Created before the state is read, so an answer in between is not missed.
            let answered = self.answers.notified();
            let (limiter, wait) = {
                let p = self.lock();
                (p.limiter.clone(), self.wait_before_send(&p, Instant::now()))
            };
            match wait {
                Wait::Until(until) => {
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                Wait::Answer => {
                    answered.await;
                    continue;
                }
                Wait::Nothing => {}
            }
            limiter.until_ready().await;
            let mut p = self.lock();
            // (another request to this endpoint may have taken the slot meanwhile)
            if !matches!(self.wait_before_send(&p, Instant::now()), Wait::Nothing) {
                continue;
            }
            let seq = p.next_seq;
            p.next_seq += 1;
            p.recent.push_back(Slot {
                seq,
                answered: None,
            });
            while p.recent.len() > self.window_requests() {
                p.recent.pop_front();
            }
            break seq;
        };
        self.stats
            .wait_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Reservation {
            endpoint: self,
            seq,
            open: true,
        }
    }

    fn anchor(&self, seq: u64) {
        let now = Instant::now();
        {
            let mut p = self.lock();
            if let Some(slot) = p.recent.iter_mut().find(|s| s.seq == seq) {
                slot.answered.get_or_insert(now);
            }
        }
        self.answers.notify_waiters();
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

/// A request's slot in its endpoint's window, from when it may be sent until its response
/// comes back. Dropped unanswered (the request failed or was cancelled), it is anchored at
/// the drop, so the endpoint never waits for an answer that cannot come.
pub(super) struct Reservation<'a> {
    endpoint: &'a Endpoint,
    seq: u64,
    open: bool,
}

impl Reservation<'_> {
    /// The response (or a failure) came back now: the server has counted the request.
    pub(super) fn answered(mut self) {
        self.open = false;
        self.endpoint.anchor(self.seq);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.open {
            self.endpoint.anchor(self.seq);
        }
    }
}

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

    /// 2 per 0.2 s, no margin: even spacing 100 ms.
    fn two_per_200_ms() -> Endpoint {
        Endpoint::new(
            RateLimit {
                requests: 2,
                per_seconds: 0.2,
            },
            0.0,
        )
    }

    #[tokio::test]
    async fn a_request_waits_a_window_after_the_response_to_the_one_n_places_before_it() {
        let ep = two_per_200_ms();
        let first = ep.acquire().await;
        let second = ep.acquire().await;
        // The first is still in flight (a server that is slow to count it): the third
        // waits for its response however long that takes, not for its send plus a window.
        let third = tokio::time::timeout(Duration::from_millis(400), ep.acquire()).await;
        assert!(
            third.is_err(),
            "sent before the request two earlier was answered"
        );
        let answered_at = Instant::now();
        first.answered();
        let third = ep.acquire().await;
        let waited = answered_at.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(350),
            "{waited:?} after the response"
        );
        second.answered();
        third.answered();
    }

    #[tokio::test]
    async fn a_request_that_never_answers_still_frees_its_slot() {
        let ep = two_per_200_ms();
        let first = ep.acquire().await;
        let _second = ep.acquire().await;
        // cancelled or failed without a response: anchored when it is dropped
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(2), ep.acquire()).await;
        assert!(
            third.is_ok(),
            "the endpoint waits for an answer that cannot come"
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
