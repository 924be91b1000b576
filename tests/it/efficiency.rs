//! Efficiency that can be asserted exactly: request counts on fixed data (counted by the
//! fake, not the connector), no 429 at the configured limits under every limiter kind
//! (with the server's own jitter),
//! the sync's start second read, and what a kill costs in records sent again. (Speed is
//! measured in bench/, never asserted here.)

use std::collections::HashSet;

use fake_loop::{
    Distribution, FakeConfig, LimiterKind, Mutation, PageOrder, RetryAfter, ServerJitter,
};
use serde_json::{json, Value};

use crate::harness::*;

const ORDERS: [PageOrder; 3] = [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc];

fn subscriptions_only(distribution: Distribution, order: PageOrder, n: usize) -> FakeConfig {
    FakeConfig {
        distribution,
        page_order: order,
        counts: fake_loop::Counts {
            subscriptions: n,
            orders: 0,
            customers: 0,
            products: 0,
            activity_logs: 0,
        },
        ..FakeConfig::default()
    }
}

/// A directory with a config for `server` (plus `extra`) and a catalog of subscriptions.
fn subscriptions_dir(server: &fake_loop::FakeServer, extra: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), server, extra);
    write_catalog(dir.path(), &["subscriptions"]);
    dir
}

/// Requests the fake received for `/subscription`.
fn requests(server: &fake_loop::FakeServer) -> u64 {
    server
        .stats()
        .requests
        .get("/subscription")
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_first_sync_costs_at_most_five_percent_more_requests_than_pages_whatever_the_data() {
    // 9 000 records in pages of 10 (900 pages, more than a window may hold at the default
    // target): the planner splits the range from what it learns, under every data shape
    for (distribution, order) in [
        (Distribution::Uniform, PageOrder::Id),
        (Distribution::Recent, PageOrder::Id),
        (Distribution::Bursts, PageOrder::Id),
        (Distribution::Recent, PageOrder::UpdatedAsc),
        (Distribution::Recent, PageOrder::UpdatedDesc),
    ] {
        let n = 9000;
        let server = fake(subscriptions_only(distribution, order, n));
        let dir = subscriptions_dir(&server, json!({"page_size": 10, "validate_records": false}));
        let r = read(dir.path(), None);
        assert_eq!(r.code, Some(0), "{:?}", r.errors());
        let ids: HashSet<String> = r
            .records("subscriptions")
            .iter()
            .map(|d| d["id"].to_string())
            .collect();
        assert_eq!(ids.len(), n, "{distribution:?} {order:?}: every record");
        let (requests, minimum) = (requests(&server), (n as u64).div_ceil(10));
        assert!(
            requests as f64 <= minimum as f64 * 1.05,
            "{distribution:?} {order:?}: {requests} requests for {minimum} pages: {:#?}",
            r.logs()
        );
    }
}

#[test]
fn an_incremental_sync_reads_only_what_changed() {
    for order in ORDERS {
        let server = fake(subscriptions_only(Distribution::Recent, order, 3000));
        let dir = subscriptions_dir(&server, json!({"validate_records": false}));
        let first = read(dir.path(), None);
        assert_eq!(first.code, Some(0), "{:?}", first.errors());
        server.mutate(Mutation::Touch {
            stream: "subscriptions".into(),
            count: 120,
        });
        // (changes a few seconds old, as between real syncs: not in the window's check)
        advance_clock(std::time::Duration::from_secs(3));
        let before = requests(&server);
        let second = read(dir.path(), Some(&first.final_state()));
        assert_eq!(second.code, Some(0), "{:?}", second.errors());
        let changed = second.records("subscriptions").len();
        assert!(changed >= 120, "{order:?}: the 120 changes, got {changed}");
        let requests = requests(&server) - before;
        // 120 records are 3 pages; a multi-page window costs its check on top
        assert!(
            requests <= 4,
            "{order:?}: {requests} requests for {changed} changed records: {:#?}",
            second.logs()
        );
    }
}

/// Every limiter kind Loop's may be.
const LIMITER_KINDS: [LimiterKind; 3] = [
    LimiterKind::Gcra,
    LimiterKind::SlidingWindow,
    LimiterKind::FixedWindow,
];

/// A fake at Loop's limits × `scale` under `limiter`, counting each request after a jitter
/// (0-10 ms, 2 % of requests 50 ms more) as a loaded server does; and a read of all five
/// streams configured at those limits, with `extra` config. Returns the read and the fake.
fn read_at_loop_limits_with_jitter(
    limiter: LimiterKind,
    scale: f64,
    counts: fake_loop::Counts,
    extra: serde_json::Value,
) -> (Run, fake_loop::FakeServer) {
    let server = fake(FakeConfig {
        limiter,
        rate_limits: true,
        rate_scale: scale,
        retry_after: RetryAfter::RoundedUp,
        jitter: Some(ServerJitter::default()),
        counts,
        ..FakeConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let limit = |requests: u32, per: f64| json!({"requests": requests, "per_seconds": per * scale});
    let mut config = json!({
        "rate_limits": {
            "subscription": limit(2, 3.0), "order": limit(2, 3.0),
            "activityLog": limit(2, 3.0), "customer": limit(1, 1.0),
            "product": limit(6, 1.0),
        },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    write_config(dir.path(), &server, config);
    write_catalog(dir.path(), ALL);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0), "{limiter:?}: {:?}", r.errors());
    (r, server)
}

#[test]
fn no_429_at_the_configured_limits_under_every_limiter_kind() {
    for limiter in LIMITER_KINDS {
        let counts = fake_loop::Counts {
            subscriptions: 160,
            orders: 160,
            customers: 120,
            products: 20,
            activity_logs: 160,
        };
        // a loaded CI machine jitters by milliseconds, a lot against 20 ms (the customers
        // endpoint: 1 per 0.2 s, no burst): a wider margin than Loop needs
        let (_, server) = read_at_loop_limits_with_jitter(
            limiter,
            0.2,
            counts,
            json!({"rate_limit_margin": 0.1}),
        );
        let stats = server.stats();
        assert_eq!(
            stats.rate_limited, 0,
            "{limiter:?}: 429s by path {:?}",
            stats.rate_limited_by_path
        );
    }
}

#[test]
fn no_429_storm_under_server_jitter_with_every_limiter_kind() {
    // Loop's limits x0.1 (subscription 2 per 0.3 s, customer 1 per 0.1 s), the default
    // margin, and a server that counts each request 0-10 ms late, 2 % of them 50 ms more:
    // paced from sends, a sliding window refuses about one request in twelve here.
    for limiter in LIMITER_KINDS {
        let counts = fake_loop::Counts {
            subscriptions: 200,
            orders: 200,
            customers: 200,
            products: 60,
            activity_logs: 200,
        };
        // pages of 10: about 20 requests per endpoint
        let extra = json!({"page_size": 10, "validate_records": false});
        let (_, server) = read_at_loop_limits_with_jitter(limiter, 0.1, counts, extra);
        let stats = server.stats();
        let requests: u64 = stats.requests.values().sum();
        assert!(requests >= 90, "{limiter:?}: {requests} requests");
        assert!(
            stats.rate_limited_by_path.values().all(|&n| n <= 1),
            "{limiter:?}: 429s by path {:?} in {requests} requests",
            stats.rate_limited_by_path
        );
    }
}

#[test]
fn a_change_made_just_before_a_sync_starts_is_in_that_sync() {
    let server = fake(subscriptions_only(
        Distribution::Uniform,
        PageOrder::Id,
        300,
    ));
    let dir = subscriptions_dir(&server, json!({}));
    let first = read(dir.path(), None);
    assert_eq!(first.code, Some(0), "{:?}", first.errors());
    // early in a fresh second, so that the change and the sync's start share it
    advance_clock_into_next_second();
    let changed: Vec<Value> = server.mutate(Mutation::Touch {
        stream: "subscriptions".into(),
        count: 1,
    });
    let second = read(dir.path(), Some(&first.final_state()));
    assert_eq!(second.code, Some(0), "{:?}", second.errors());
    let id = &changed[0]["id"];
    let at = ms(changed[0]["updatedAt"].as_str().unwrap());
    assert!(
        second
            .records("subscriptions")
            .iter()
            .any(|d| &d["id"] == id && ms(d["updatedAt"].as_str().unwrap()) == at),
        "subscription {id} changed at {} is not in the sync that started after it",
        changed[0]["updatedAt"]
    );
}

#[test]
fn a_kill_sends_again_at_most_the_checkpoint_interval() {
    for order in ORDERS {
        let server = fake(subscriptions_only(Distribution::Recent, order, 2500));
        let dir = subscriptions_dir(
            &server,
            json!({"checkpoint_interval_records": 100, "validate_records": false}),
        );
        for kill_after in [150, 777, 1999] {
            let killed = read_until(dir.path(), kill_after);
            let sent: HashSet<(String, String)> = killed
                .iter()
                .filter(|m| m["type"] == "RECORD")
                .map(|m| version("subscriptions", &m["record"]["data"]))
                .collect();
            let resumed = read(dir.path(), Some(&last_states(&killed)));
            assert_eq!(resumed.code, Some(0), "{:?}", resumed.errors());
            let again = resumed
                .records("subscriptions")
                .iter()
                .filter(|d| sent.contains(&version("subscriptions", d)))
                .count();
            assert!(
                again <= 100,
                "{order:?}, killed after {kill_after} lines: {again} records sent again"
            );
            let all: HashSet<String> = sent
                .iter()
                .map(|(id, _)| id.clone())
                .chain(
                    resumed
                        .records("subscriptions")
                        .iter()
                        .map(|d| d["id"].to_string()),
                )
                .collect();
            assert_eq!(all.len(), 2500, "{order:?}: nothing lost across the kill");
        }
    }
}

#[test]
fn a_reader_that_goes_away_stops_the_sync_quietly() {
    // `source-loop read … | head`, where head has already exited: the engine holds a
    // window's records until it is verified and writes nothing meanwhile, yet it stops
    let n = 9000;
    let server = fake(subscriptions_only(Distribution::Uniform, PageOrder::Id, n));
    let dir = subscriptions_dir(&server, json!({"page_size": 10, "validate_records": false}));
    let mut child = command(bin())
        .args([
            "read",
            "--config",
            p(&dir.path().join("config.json")),
            "--catalog",
            p(&dir.path().join("catalog.json")),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "still reading"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a gone reader is not an error: {status:?}"
    );
    let made = requests(&server);
    assert!(
        made < 40,
        "{made} requests of {} pages after the reader had gone",
        n / 10
    );
}
