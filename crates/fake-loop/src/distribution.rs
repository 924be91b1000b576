//! Where generated timestamps fall in the two years before `data_end`.
//!
//! The shape of a real store's data is unknown, but it is not uniform: billing runs
//! touch most subscriptions every few weeks, a few percent changed in the last minutes,
//! and bulk jobs put dozens of records in one second. Window sizing in the engine must
//! survive all of that, so the fake can be started with each shape
//! ([`Distribution`]). This module only draws instants; `data` turns them into
//! createdAt/updatedAt pairs that respect each record's parent subscription.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub(crate) const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// How updatedAt (createdAt for activity logs) is spread over the data range, for
/// subscriptions, orders and activity logs. Customers and products keep their uniform
/// internal times whatever the choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// The original generation, unchanged for a given seed: skewed towards recent
    /// updates, ~10 % of records sharing a second with another, and
    /// `hot_second_records` subscriptions and orders in one second mid-range.
    #[default]
    Default,
    /// Uniform over the whole range: no hot second, shared seconds only by chance.
    Uniform,
    /// Like a real store: ~2 % in the last 10 minutes, ~68 % within a few weeks
    /// (exponential, mean age 10 days), the rest a thin uniform tail back two years.
    Recent,
    /// Uniform background plus bursts: seconds each holding 60–120 records (more than
    /// a page of 50), about one burst per 500 records (3 to 64) and never more than
    /// half the records. A stream with fewer than 120 records gets no burst.
    Bursts,
}

/// A distribution other than the original generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Uniform,
    Recent,
    Bursts,
}

impl Distribution {
    /// `None` for [`Distribution::Default`], which keeps its own generator.
    pub(crate) fn shape(self) -> Option<Shape> {
        match self {
            Distribution::Default => None,
            Distribution::Uniform => Some(Shape::Uniform),
            Distribution::Recent => Some(Shape::Recent),
            Distribution::Bursts => Some(Shape::Bursts),
        }
    }
}

/// Share of `Recent` records in the last [`LAST_MINUTES_MS`] before the end.
const RECENT_LAST_MINUTES_SHARE: f64 = 0.02;
const LAST_MINUTES_MS: i64 = 10 * MINUTE_MS;
/// Share of `Recent` records in the recent bulk (ages exponential after the last
/// minutes); the rest is the thin tail.
const RECENT_BULK_SHARE: f64 = 0.68;
const RECENT_BULK_MEAN_AGE_MS: f64 = 10.0 * DAY_MS as f64;

/// Burst sizes: always more than a page of 50.
const BURST_RECORDS: std::ops::RangeInclusive<usize> = 60..=120;
/// About one burst per this many records.
const RECORDS_PER_BURST: usize = 500;
const BURSTS: std::ops::RangeInclusive<usize> = 3..=64;

impl Shape {
    /// `n` instants (ms) in `[start, end]`, in no particular order. Burst seconds lie
    /// at or after `burst_floor`, so records that need an earlier parent can have one.
    pub(crate) fn draw(
        self,
        rng: &mut StdRng,
        n: usize,
        start: i64,
        end: i64,
        burst_floor: i64,
    ) -> Vec<i64> {
        let end = end.max(start);
        let mut out = Vec::with_capacity(n);
        if self == Shape::Bursts {
            let lo = burst_floor.clamp(start, end).div_euclid(1000) + 1;
            let hi = end.div_euclid(1000) - 1;
            if lo <= hi {
                for size in burst_sizes(rng, n) {
                    let second = rng.random_range(lo..=hi) * 1000;
                    out.extend((0..size).map(|_| second + rng.random_range(0..1000)));
                }
            }
        }
        while out.len() < n {
            let t = match self {
                Shape::Uniform | Shape::Bursts => rng.random_range(start..=end),
                Shape::Recent => end - recent_age(rng, end - start),
            };
            out.push(t);
        }
        out
    }
}

/// Sizes of the bursts of a stream of `n` records.
fn burst_sizes(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let bursts = (n / RECORDS_PER_BURST).clamp(*BURSTS.start(), *BURSTS.end());
    let budget = n / 2;
    let mut total = 0;
    let mut sizes = Vec::with_capacity(bursts);
    for _ in 0..bursts {
        let size = rng.random_range(BURST_RECORDS);
        if total + size > budget {
            break;
        }
        total += size;
        sizes.push(size);
    }
    sizes
}

/// Age (ms before the end, at most `span`) of one `Recent` record.
fn recent_age(rng: &mut StdRng, span: i64) -> i64 {
    let last = LAST_MINUTES_MS.min(span);
    let x: f64 = rng.random();
    if x < RECENT_LAST_MINUTES_SHARE {
        return rng.random_range(0..=last);
    }
    if x < RECENT_LAST_MINUTES_SHARE + RECENT_BULK_SHARE {
        let u: f64 = rng.random();
        let age = last + (-(1.0 - u).ln() * RECENT_BULK_MEAN_AGE_MS) as i64;
        if age <= span {
            return age;
        }
    }
    rng.random_range(last..=span)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use crate::data::{Data, Stream, DAY_MS};
    use crate::{Counts, Distribution, FakeConfig};

    use super::*;

    fn generate(distribution: Distribution, counts: Counts) -> (Data, i64) {
        let cfg = FakeConfig {
            distribution,
            counts,
            seed: 7,
            data_end: DateTime::<Utc>::from_timestamp(1_750_000_000, 0).expect("valid"),
            ..FakeConfig::default()
        };
        (Data::generate(&cfg), cfg.data_end.timestamp_millis())
    }

    fn counts(subscriptions: usize, orders: usize, activity_logs: usize) -> Counts {
        Counts {
            subscriptions,
            orders,
            customers: 50,
            products: 10,
            activity_logs,
        }
    }

    /// Records per second of the stream's incremental cursor (updatedAt; createdAt of
    /// activity logs, which the store keeps in `updated` too).
    fn per_second(d: &Data, s: Stream) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for r in &d.table(s).recs {
            *m.entry(r.updated.div_euclid(1000)).or_default() += 1;
        }
        m
    }

    /// Every record lies in the range, createdAt ≤ updatedAt, and orders and logs
    /// come after their subscription.
    fn assert_consistent(d: &Data, end: i64) {
        let subs = d.table(Stream::Subscriptions);
        let created_of = |id: i64| {
            subs.recs
                .iter()
                .find(|r| r.key == id)
                .map(|r| r.created)
                .expect("parent exists")
        };
        for s in [Stream::Subscriptions, Stream::Orders, Stream::ActivityLogs] {
            for r in &d.table(s).recs {
                assert!(r.created <= r.updated, "{s:?} {}", r.key);
                assert!(r.updated <= end && r.created >= end - 730 * DAY_MS);
            }
        }
        for s in [Stream::Orders, Stream::ActivityLogs] {
            for v in d.records(s).iter().take(300) {
                let t = v
                    .get("createdAt")
                    .and_then(|t| t.as_str())
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .expect("createdAt")
                    .timestamp_millis();
                let parent = v["subscriptionId"].as_i64().expect("subscriptionId");
                assert!(created_of(parent) <= t, "{s:?} {v}");
            }
        }
    }

    #[test]
    fn recent_distribution_puts_about_two_percent_in_the_last_ten_minutes() {
        let (d, end) = generate(Distribution::Recent, counts(20_000, 5_000, 5_000));
        assert_consistent(&d, end);
        for s in [Stream::Subscriptions, Stream::Orders, Stream::ActivityLogs] {
            let recs = &d.table(s).recs;
            let share = |age: i64| {
                recs.iter().filter(|r| r.updated >= end - age).count() as f64 / recs.len() as f64
            };
            let last_minutes = share(10 * MINUTE_MS);
            assert!(
                (0.015..0.027).contains(&last_minutes),
                "{s:?}: {last_minutes}"
            );
            // Most within a few weeks, yet a tail back towards two years.
            assert!(share(30 * DAY_MS) > 0.6, "{s:?}");
            assert!(share(365 * DAY_MS) < 0.9, "{s:?}");
        }
    }

    #[test]
    fn bursts_have_seconds_with_more_than_a_page() {
        let (d, end) = generate(Distribution::Bursts, counts(3_000, 2_000, 1_500));
        assert_consistent(&d, end);
        for (s, bursts) in [
            (Stream::Subscriptions, 6),
            (Stream::Orders, 4),
            (Stream::ActivityLogs, 3),
        ] {
            let full: Vec<usize> = per_second(&d, s)
                .into_values()
                .filter(|&n| n > 50)
                .collect();
            assert_eq!(full.len(), bursts, "{s:?}: {full:?}");
            assert!(
                full.iter().all(|n| (60..=121).contains(n)),
                "{s:?}: {full:?}"
            );
        }
    }

    #[test]
    fn uniform_distribution_has_no_hot_second_and_even_quarters() {
        let (d, end) = generate(Distribution::Uniform, counts(8_000, 2_000, 1_000));
        assert_consistent(&d, end);
        let most = per_second(&d, Stream::Subscriptions)
            .into_values()
            .max()
            .unwrap_or(0);
        assert!(most <= 2, "{most}");
        let quarter = 730 * DAY_MS / 4;
        for q in 0..4 {
            let lo = end - (q + 1) * quarter;
            let n = d
                .table(Stream::Subscriptions)
                .recs
                .iter()
                .filter(|r| r.updated > lo && r.updated <= lo + quarter)
                .count();
            assert!((1_800..2_200).contains(&n), "quarter {q}: {n}");
        }
    }

    #[test]
    fn default_distribution_keeps_the_hot_second() {
        let (d, _) = generate(Distribution::Default, counts(500, 800, 100));
        for s in [Stream::Subscriptions, Stream::Orders] {
            let most = per_second(&d, s).into_values().max().unwrap_or(0);
            assert!(most >= 70, "{s:?}: {most}");
        }
    }

    #[test]
    fn every_distribution_is_deterministic_from_the_seed() {
        for dist in [
            Distribution::Default,
            Distribution::Uniform,
            Distribution::Recent,
            Distribution::Bursts,
        ] {
            let a = generate(dist, counts(300, 300, 300)).0;
            let b = generate(dist, counts(300, 300, 300)).0;
            for s in [Stream::Subscriptions, Stream::Orders, Stream::ActivityLogs] {
                assert_eq!(a.records(s), b.records(s), "{dist:?} {s:?}");
            }
        }
    }

    #[test]
    fn small_streams_get_no_burst_and_stay_in_range() {
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        let t = Shape::Bursts.draw(&mut rng, 100, 0, 10_000, 0);
        assert_eq!(t.len(), 100);
        assert!(t.iter().all(|t| (0..=10_000).contains(t)));
    }
}
