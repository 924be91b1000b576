//! Incremental correctness: nothing lost, whatever the page order, the filter bounds or
//! the changes made while a sync pages.

use std::collections::{HashMap, HashSet};

use fake_loop::{FakeConfig, FakeServer, FilterBounds, Mutation, PageOrder};
use serde_json::{json, Value};

use crate::harness::*;

const ORDERS: [PageOrder; 3] = [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc];

fn versions_of(server: &FakeServer, stream: &str) -> HashSet<(String, String)> {
    server
        .records(stream)
        .iter()
        .map(|r| version(stream, r))
        .collect()
}

fn emitted_versions(r: &Run, stream: &str) -> HashSet<(String, i64)> {
    let cursor = if stream == "activity_logs" {
        "createdAt"
    } else {
        "updatedAt"
    };
    r.records(stream)
        .iter()
        .map(|d| (d["id"].to_string(), ms(d[cursor].as_str().unwrap())))
        .collect()
}

/// Every version in `expected` (from the fake, raw timestamps) is in `got` (normalized).
fn assert_covered(
    stream: &str,
    expected: &HashSet<(String, String)>,
    got: &HashSet<(String, i64)>,
    what: &str,
) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, t)| !got.contains(&(id.clone(), ms(t))))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {stream}: {} versions never emitted, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn first_sync_then_changes_between_syncs_under_every_page_order() {
    first_sync_then_changes(Protocol::Airbyte);
}

/// A first sync emits every version once; after changes, the next sync emits exactly the
/// changed records; a third emits nothing (under every page order and filter bound).
pub(crate) fn first_sync_then_changes(protocol: Protocol) {
    for (order, bounds) in [
        (PageOrder::Id, FilterBounds::Inclusive),
        (PageOrder::UpdatedAsc, FilterBounds::Inclusive),
        (PageOrder::UpdatedDesc, FilterBounds::Exclusive),
        (PageOrder::Id, FilterBounds::Exclusive),
    ] {
        let server = fake(FakeConfig {
            page_order: order,
            filter_bounds: bounds,
            ..small()
        });
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &server, json!({"window_target_pages": 2}));
        write_catalog(dir.path(), INCREMENTAL);
        let before: HashMap<&str, _> = INCREMENTAL
            .iter()
            .map(|s| (*s, versions_of(&server, s)))
            .collect();
        let r1 = read_as(protocol, dir.path(), None);
        assert_eq!(
            r1.code,
            Some(0),
            "{order:?}: {:?} {}",
            r1.errors(),
            r1.stderr
        );
        for s in INCREMENTAL {
            let got = emitted_versions(&r1, s);
            assert_covered(
                s,
                &before[s],
                &got,
                &format!("{order:?}/{bounds:?} first sync"),
            );
            assert_eq!(
                r1.records(s).len(),
                before[s].len(),
                "{order:?}: first sync of {s} emitted duplicates"
            );
        }
        let touched_subs = server.mutate(Mutation::Touch {
            stream: "subscriptions".into(),
            count: 7,
        });
        let created_subs = server.mutate(Mutation::Create {
            stream: "subscriptions".into(),
            count: 3,
        });
        let touched_orders = server.mutate(Mutation::Touch {
            stream: "orders".into(),
            count: 5,
        });
        let logs = server.mutate(Mutation::Create {
            stream: "activity_logs".into(),
            count: 4,
        });
        settle();
        let r2 = read_as(protocol, dir.path(), Some(&r1.final_state()));
        assert_eq!(r2.code, Some(0));
        let expect = |recs: &[&Vec<Value>], stream: &str| -> HashSet<(String, i64)> {
            let cursor = if stream == "activity_logs" {
                "createdAt"
            } else {
                "updatedAt"
            };
            recs.iter()
                .flat_map(|v| v.iter())
                .map(|d| (d["id"].to_string(), ms(d[cursor].as_str().unwrap())))
                .collect()
        };
        // exactly the changed records come back: nothing lost, no boundary repeats
        assert_eq!(
            emitted_versions(&r2, "subscriptions"),
            expect(&[&touched_subs, &created_subs], "subscriptions"),
            "{order:?}"
        );
        assert_eq!(
            emitted_versions(&r2, "orders"),
            expect(&[&touched_orders], "orders"),
            "{order:?}"
        );
        assert_eq!(
            emitted_versions(&r2, "activity_logs"),
            expect(&[&logs], "activity_logs"),
            "{order:?}"
        );
        // a third sync with nothing changed emits nothing
        let r3 = read_as(protocol, dir.path(), Some(&r2.final_state()));
        for s in INCREMENTAL {
            assert_eq!(
                r3.records(s).len(),
                0,
                "{order:?}: {s} re-emitted boundary records"
            );
        }
    }
}

#[test]
fn records_changed_during_a_sync_are_not_lost_under_every_page_order() {
    changes_during_a_sync(Protocol::Airbyte);
}

/// Records touched and created while the sync pages: the unchanged ones are in it, the
/// churn is detected, and the next sync catches every version made meanwhile.
pub(crate) fn changes_during_a_sync(protocol: Protocol) {
    // small pages and windows: many multi-page windows, each checked; then the default
    // target: one window for the whole stream
    let layouts = [
        json!({"page_size": 10, "window_target_pages": 4}),
        json!({"page_size": 10}),
    ];
    for (order, layout) in ORDERS
        .into_iter()
        .flat_map(|o| layouts.iter().map(move |l| (o, l)))
    {
        let server = fake(FakeConfig {
            page_order: order,
            ..small()
        });
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &server, layout.clone());
        write_catalog(dir.path(), &["subscriptions", "orders"]);
        let before: HashMap<&str, _> = ["subscriptions", "orders"]
            .iter()
            .map(|s| (*s, versions_of(&server, s)))
            .collect();
        server.mutate_every(
            "/subscription",
            3,
            Mutation::Touch {
                stream: "subscriptions".into(),
                count: 2,
            },
        );
        server.mutate_every(
            "/order",
            4,
            Mutation::Touch {
                stream: "orders".into(),
                count: 1,
            },
        );
        server.schedule(
            5,
            "/subscription",
            Mutation::Create {
                stream: "subscriptions".into(),
                count: 2,
            },
        );
        let r1 = read_as(protocol, dir.path(), None);
        assert_eq!(
            r1.code,
            Some(0),
            "{order:?}: {:?} {}",
            r1.errors(),
            r1.stderr
        );
        let mut union: HashMap<&str, HashSet<(String, i64)>> = HashMap::new();
        for s in ["subscriptions", "orders"] {
            let got = emitted_versions(&r1, s);
            // every record that did not change during the sync is in it, at that version
            let after = versions_of(&server, s);
            let unchanged: HashSet<(String, String)> =
                before[s].intersection(&after).cloned().collect();
            assert!(
                unchanged.len() < before[s].len() || order != PageOrder::Id,
                "churn happened"
            );
            assert_covered(s, &unchanged, &got, &format!("{order:?} during the sync"));
            union.entry(s).or_default().extend(got);
        }
        assert!(
            r1.logs()
                .iter()
                .any(|l| l.contains("changed while it was paged"))
                || order != PageOrder::Id,
            "{order:?}: the churn should have been detected at least once: {:?}",
            r1.logs()
        );
        // stop the churn; the next sync catches every version made during the first
        server.stop_mutations();
        settle();
        let r2 = read_as(protocol, dir.path(), Some(&r1.final_state()));
        assert_eq!(r2.code, Some(0));
        for s in ["subscriptions", "orders"] {
            union.get_mut(s).unwrap().extend(emitted_versions(&r2, s));
            assert_covered(
                s,
                &versions_of(&server, s),
                &union[s],
                &format!("{order:?} after the catch-up sync"),
            );
        }
    }
}

#[test]
fn records_sharing_the_cursor_second_are_neither_lost_nor_repeated() {
    same_second(Protocol::Airbyte);
}

/// 70 records share one second; a previous sync emitted 10 of them and stopped there:
/// the next emits the other 60 and what follows, none twice (under every page order).
pub(crate) fn same_second(protocol: Protocol) {
    for order in ORDERS {
        same_second_under(protocol, order);
    }
}

fn same_second_under(protocol: Protocol, order: PageOrder) {
    let server = fake(FakeConfig {
        hot_second_records: 70,
        page_order: order,
        ..small()
    });
    let subs = server.records("subscriptions");
    // the hot second: the most shared updatedAt second
    let mut by_sec: HashMap<i64, Vec<&Value>> = HashMap::new();
    for r in &subs {
        by_sec
            .entry(ms(r["updatedAt"].as_str().unwrap()).div_euclid(1000))
            .or_default()
            .push(r);
    }
    let (hot, hot_recs) = by_sec.iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(hot_recs.len() >= 70, "fake has a hot second");
    // pretend a previous sync emitted 10 of them and stopped at that second
    let mut done: Vec<&Value> = hot_recs.clone();
    done.sort_by_key(|r| r["id"].as_i64());
    let done = &done[..10];
    let cursor = done
        .iter()
        .map(|r| ms(r["updatedAt"].as_str().unwrap()))
        .max()
        .unwrap();
    let state = input_state(
        protocol,
        "subscriptions",
        "updatedAt",
        &json!({
            "updatedAt": chrono::DateTime::from_timestamp_millis(cursor).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "boundary": done.iter().map(|r| json!({"id": r["id"], "at": r["updatedAt"]})).collect::<Vec<_>>()}),
    );
    for page_size in [50, 7] {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &server, json!({"page_size": page_size}));
        write_catalog(dir.path(), &["subscriptions"]);
        let r = read_as(protocol, dir.path(), Some(&state));
        assert_eq!(r.code, Some(0), "{protocol:?}: {}", r.stderr);
        let got: HashSet<String> = r
            .records("subscriptions")
            .iter()
            .map(|d| d["id"].to_string())
            .collect();
        assert_eq!(
            got.len(),
            r.records("subscriptions").len(),
            "{order:?}: duplicates"
        );
        let expected: HashSet<String> = subs
            .iter()
            .filter(|s| ms(s["updatedAt"].as_str().unwrap()).div_euclid(1000) >= *hot)
            .map(|s| s["id"].to_string())
            .filter(|id| !done.iter().any(|d| &d["id"].to_string() == id))
            .collect();
        assert_eq!(
            got, expected,
            "{protocol:?} {order:?} page size {page_size}"
        );
    }
}

#[test]
fn full_refresh_streams_survive_records_moving_while_paged() {
    for order in ORDERS {
        let server = fake(FakeConfig {
            page_order: order,
            ..small()
        });
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &server, json!({"page_size": 7}));
        write_catalog(dir.path(), &["customers", "products"]);
        let before: HashSet<String> = server
            .records("customers")
            .iter()
            .map(|r| r["id"].to_string())
            .collect();
        server.mutate_every(
            "/customer",
            2,
            Mutation::Touch {
                stream: "customers".into(),
                count: 1,
            },
        );
        let r = read(dir.path(), None);
        assert_eq!(r.code, Some(0), "{order:?}: {:?}", r.errors());
        let got: HashSet<String> = r
            .records("customers")
            .iter()
            .map(|d| d["id"].to_string())
            .collect();
        let missing: Vec<_> = before.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{order:?}: customers never emitted: {missing:?}"
        );
    }
}
