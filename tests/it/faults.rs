//! Faults on the wire, rate limits, kills: retried when transient, loud when not, and
//! resumable from the last STATE without a gap.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fake_loop::{FakeConfig, Fault, FaultKind, Mutation, PageOrder, RetryAfter};
use proptest::prelude::*;
use serde_json::json;

use crate::harness::*;

#[test]
fn transient_faults_are_retried_and_nothing_is_lost() {
    let kinds = [
        FaultKind::Status(500),
        FaultKind::Status(503),
        FaultKind::RateLimited {
            retry_after_secs: Some(0),
        },
        FaultKind::RateLimited {
            retry_after_secs: None,
        },
        FaultKind::ConnectionReset,
        FaultKind::TruncatedBody,
        FaultKind::HtmlErrorPage,
        FaultKind::SuccessFalse,
        FaultKind::MalformedJson,
        FaultKind::Slow { millis: 300 },
    ];
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"page_size": 20}));
    write_catalog(dir.path(), &["subscriptions", "customers"]);
    for kind in kinds {
        server.inject(Fault {
            path: Some("/subscription".into()),
            kind: kind.clone(),
            times: 2,
        });
        server.inject(Fault {
            path: Some("/customer".into()),
            kind: kind.clone(),
            times: 1,
        });
        let r = read(dir.path(), None);
        assert_eq!(r.code, Some(0), "{kind:?}: {:?}", r.errors());
        let ids: HashSet<String> = r
            .records("subscriptions")
            .iter()
            .map(|d| d["id"].to_string())
            .collect();
        assert_eq!(ids.len(), server.records("subscriptions").len(), "{kind:?}");
        assert_eq!(
            r.records("customers").len(),
            server.records("customers").len(),
            "{kind:?}"
        );
        if !matches!(kind, FaultKind::Slow { .. }) {
            assert!(
                r.logs().iter().any(|l| l.contains("retry")),
                "{kind:?}: retries are logged"
            );
        }
    }
}

#[test]
fn exhausted_retries_fail_loudly_and_the_last_state_resumes() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server,
        json!({"page_size": 10, "window_target_pages": 2,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 5}}),
    );
    write_catalog(dir.path(), &["subscriptions", "products"]);
    // let some windows complete, then break the endpoint for good
    server.schedule(
        12,
        "/subscription",
        Mutation::Touch {
            stream: "subscriptions".into(),
            count: 0,
        },
    );
    let r0 = {
        // first the fault after a few requests: inject many 503s once 12 requests passed
        let s = &server;
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let t = Instant::now();
                while s
                    .stats()
                    .requests
                    .get("/subscription")
                    .copied()
                    .unwrap_or(0)
                    < 12
                    && t.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                s.inject(Fault {
                    path: Some("/subscription".into()),
                    kind: FaultKind::Status(503),
                    times: 1000,
                });
            });
            read(dir.path(), None)
        })
    };
    assert_eq!(r0.code, Some(1));
    let e = r0.errors();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["failure_type"], "transient_error");
    assert_eq!(e[0]["stream_descriptor"]["name"], "subscriptions");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("/subscription") && msg.contains("503") && msg.contains("page"),
        "{msg}"
    );
    assert_eq!(r0.statuses("subscriptions").last().unwrap(), "INCOMPLETE");
    assert_eq!(r0.statuses("products").last().unwrap(), "COMPLETE");
    // heal and resume from the last state: the union covers everything
    server.inject(Fault {
        path: Some("/nothing".into()),
        kind: FaultKind::Status(500),
        times: 0,
    });
    let mut seen: HashSet<String> = r0
        .records("subscriptions")
        .iter()
        .map(|d| d["id"].to_string())
        .collect();
    let healed = fake_loop::FakeServer::records(&server, "subscriptions");
    // drain the remaining injected faults by resetting the fake: start a fresh run once they are consumed
    let mut state = r0.final_state();
    for _ in 0..400 {
        let r = read(dir.path(), Some(&state));
        seen.extend(
            r.records("subscriptions")
                .iter()
                .map(|d| d["id"].to_string()),
        );
        if r.code == Some(0) {
            break;
        }
        state = merge_states(&state, &r.final_state());
    }
    let all: HashSet<String> = healed.iter().map(|d| d["id"].to_string()).collect();
    assert!(
        all.is_subset(&seen),
        "{} records lost across the failure",
        all.difference(&seen).count()
    );
}

#[test]
fn wrong_token_is_a_config_error_without_retries() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"api_token": "not-the-token"}));
    write_catalog(dir.path(), &["subscriptions"]);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(1));
    let e = r.errors();
    assert_eq!(e[0]["failure_type"], "config_error");
    assert!(e[0]["message"].as_str().unwrap().contains("api_token"));
    assert_eq!(server.stats().unauthorized, 1, "401 is not retried");
    assert!(!r.stdout.contains("not-the-token"));
}

#[test]
fn orders_on_api_2026_04_name_the_cause() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    let base = server.base_url.replace("2023-10", "2026-04");
    write_config(dir.path(), &server, json!({"base_url": base}));
    write_catalog(dir.path(), &["orders", "subscriptions"]);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(1));
    let e = r.errors();
    assert_eq!(e.len(), 1);
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("orders") && msg.contains("2026-04") && msg.contains("404"),
        "{msg}"
    );
    assert_eq!(e[0]["failure_type"], "config_error");
    assert_eq!(r.statuses("subscriptions").last().unwrap(), "COMPLETE");
}

#[test]
fn rate_limits_with_and_without_retry_after_still_complete() {
    for retry_after in [RetryAfter::Always, RetryAfter::Never, RetryAfter::Sometimes] {
        let server = fake(FakeConfig {
            rate_limits: true,
            rate_scale: 0.05,
            retry_after,
            ..small()
        });
        let dir = tempfile::tempdir().unwrap();
        // ask for ten times the fake's pace (one request per 7.5 ms against one per 75 ms),
        // so 429s happen even when a loaded machine makes each request slow; they must be
        // absorbed
        let l = json!({"requests": 20, "per_seconds": 0.15});
        write_config(
            dir.path(),
            &server,
            json!({"page_size": 20, "rate_limits": {"subscription": l, "order": l},
            "retry": {"max_attempts": 20, "initial_backoff_ms": 20, "max_backoff_ms": 200}}),
        );
        write_catalog(dir.path(), &["subscriptions", "orders"]);
        let r = read(dir.path(), None);
        assert_eq!(r.code, Some(0), "{retry_after:?}: {:?}", r.errors());
        assert_eq!(
            r.records("subscriptions").len(),
            server.records("subscriptions").len()
        );
        assert!(
            server.stats().rate_limited > 0,
            "the test must provoke 429s"
        );
    }
}

/// Kills at the given output lines, resumes each time from what the killed run printed;
/// the union of everything emitted covers every version (either front end).
/// Runs to the end after a transient failure, at most (see `kill_resume_case`).
const TRANSIENT_RERUNS: usize = 2;

pub(crate) fn kill_resume_case(
    protocol: Protocol,
    seed: u64,
    order: PageOrder,
    kills: Vec<usize>,
    churn: u64,
) {
    let server = fake(FakeConfig {
        seed,
        page_order: order,
        ..small()
    });
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server,
        json!({"page_size": 10, "window_target_pages": 3}),
    );
    write_catalog(dir.path(), &["subscriptions", "orders"]);
    let start: Vec<(String, i64)> = server
        .records("subscriptions")
        .iter()
        .map(|r| (r["id"].to_string(), ms(r["updatedAt"].as_str().unwrap())))
        .collect();
    if churn > 0 {
        server.mutate_every(
            "/subscription",
            churn,
            Mutation::Touch {
                stream: "subscriptions".into(),
                count: 1,
            },
        );
    }
    let mut state = json!([]);
    let mut union: std::collections::HashMap<String, i64> = Default::default();
    let mut finished = false;
    let mut last_errors = Vec::new();
    // After the kills, runs to the end. Under the heaviest churn (a change every two requests)
    // a window can keep changing past its re-read budget: that run fails with a transient
    // error and a safe STATE, and is run again, as Airbyte does with transient errors.
    let to_the_end = std::iter::repeat_n(usize::MAX, TRANSIENT_RERUNS + 1);
    for k in kills.into_iter().chain(to_the_end) {
        let (msgs, done) = read_and_kill_as(protocol, dir.path(), &state, k);
        for (stream, d) in msgs.iter().filter_map(record_of) {
            if stream == "subscriptions" {
                let t = ms(d["updatedAt"].as_str().unwrap());
                let e = union.entry(d["id"].to_string()).or_insert(t);
                *e = (*e).max(t);
            }
        }
        state = merge_states(&state, &last_states(&msgs));
        last_errors = msgs
            .iter()
            .filter(|m| m["type"] == "TRACE" && m["trace"]["type"] == "ERROR")
            .cloned()
            .collect();
        if done {
            finished = true;
            break;
        }
        if k == usize::MAX {
            let transient =
                |m: &serde_json::Value| m["trace"]["error"]["failure_type"] == "transient_error";
            assert!(
                last_errors.iter().all(transient),
                "a run to the end fails only transiently: {last_errors:?}"
            );
        }
    }
    assert!(finished, "a run to the end completes: {last_errors:?}");
    // stop the churn; one more sync catches what changed during the last one
    server.stop_mutations();
    settle();
    let r = read_as(protocol, dir.path(), Some(&state));
    assert_eq!(r.code, Some(0), "{protocol:?}: {}", r.stderr);
    for d in r.records("subscriptions") {
        let t = ms(d["updatedAt"].as_str().unwrap());
        let e = union.entry(d["id"].to_string()).or_insert(t);
        *e = (*e).max(t);
    }
    for (id, t) in start {
        assert!(
            union.get(&id).is_some_and(|e| *e >= t),
            "{protocol:?} seed {seed} {order:?}: subscription {id} lost across kills"
        );
    }
}

/// SIGKILL at fixed points (first lines, mid-window, after a STATE) under every page
/// order, then resume, through `protocol`'s front end.
pub(crate) fn sigkill_at_many_points_then_resume(protocol: Protocol) {
    for (i, order) in [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc]
        .into_iter()
        .enumerate()
    {
        kill_resume_case(protocol, 7 + i as u64, order, vec![2, 37, 90, 151, 260], 0);
    }
}

#[test]
fn sigkill_at_many_points_then_resume_loses_nothing() {
    sigkill_at_many_points_then_resume(Protocol::Airbyte);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 0, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_kills_and_changes_never_lose_a_version(
        seed in 0u64..1000,
        order in prop_oneof![Just(PageOrder::Id), Just(PageOrder::UpdatedAsc), Just(PageOrder::UpdatedDesc)],
        kills in proptest::collection::vec(1usize..400, 0..4),
        churn in prop_oneof![Just(0u64), 2u64..6],
    ) {
        kill_resume_case(Protocol::Airbyte, seed, order, kills, churn);
    }
}

/// Kills `protocol`'s read (SIGKILL) once `kill_after` bytes of its stdout were read, then
/// reads what is left in the pipe: the bytes the killed process had written. Returns
/// (whether the output ends inside a line, the length of that last line).
fn kill_after_bytes(protocol: Protocol, dir: &std::path::Path, kill_after: usize) -> (bool, usize) {
    use std::io::Read;
    let (bin, args) = read_command(protocol, dir, None);
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 1024];
    // a slow reader: the writer blocks on a full pipe, mid-write, where a kill cuts
    while all.len() < kill_after {
        match out.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    out.read_to_end(&mut all).unwrap();
    let last_line = all
        .split(|&b| b == b'\n')
        .next_back()
        .unwrap_or_default()
        .len();
    (all.last().is_some_and(|&b| b != b'\n'), last_line)
}

#[test]
fn a_kill_at_any_moment_leaves_only_whole_lines_in_either_front_end() {
    let server = fake(FakeConfig {
        counts: fake_loop::Counts {
            subscriptions: 3000,
            orders: 3000,
            ..small().counts
        },
        ..small()
    });
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"page_size": 50}));
    write_catalog(dir.path(), &["subscriptions", "orders"]);
    let mut cut = Vec::new();
    let mut longer_than_atomic = 0;
    for protocol in [Protocol::Airbyte, Protocol::Singer] {
        for kill_after in [
            1, 700, 5_000, 33_333, 65_536, 100_000, 250_000, 600_000, 1_500_000,
        ] {
            let (partial, last_line) = kill_after_bytes(protocol, dir.path(), kill_after);
            if partial && last_line + 1 > 4096 {
                // one line longer than the pipe's atomic write can still be cut
                longer_than_atomic += 1;
            } else if partial {
                cut.push((protocol, kill_after, last_line));
            }
        }
    }
    assert!(cut.is_empty(), "a kill left a half-written line: {cut:?}");
    assert_eq!(longer_than_atomic, 0, "records here are shorter than 4 KiB");
}
