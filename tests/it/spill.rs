//! Windows past `held_memory_mb` hold their records in an unlinked temporary file: what a
//! read emits, and what a kill and a resume lose, are the same as when windows are held in
//! memory, and nothing is left in `spill_dir`.

use std::collections::HashMap;

use fake_loop::{FakeConfig, PageOrder};
use serde_json::json;

use crate::harness::*;

/// Every window spills (`held_memory_mb` 0), with windows of several pages.
fn spilling_config(spill_dir: &std::path::Path) -> serde_json::Value {
    json!({"page_size": 10, "window_target_pages": 3, "held_memory_mb": 0,
           "spill_dir": spill_dir.to_str().unwrap()})
}

#[test]
fn a_read_whose_windows_spill_to_disk_emits_the_fakes_records_once_each_and_leaves_no_file() {
    let server = fake(FakeConfig {
        seed: 3,
        page_order: PageOrder::UpdatedDesc,
        ..small()
    });
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, spilling_config(spill_dir.path()));
    write_catalog(dir.path(), INCREMENTAL);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for stream in INCREMENTAL {
        let cursor = if *stream == "activity_logs" {
            "createdAt"
        } else {
            "updatedAt"
        };
        let mut want: Vec<(String, i64)> = server
            .records(stream)
            .iter()
            .map(|d| (d["id"].to_string(), ms(d[cursor].as_str().unwrap())))
            .collect();
        let got: Vec<(String, i64)> = r
            .records(stream)
            .iter()
            .map(|d| (d["id"].to_string(), ms(d[cursor].as_str().unwrap())))
            .collect();
        // emitted in cursor order, each version once
        let mut sorted = got.clone();
        sorted.sort_by_key(|(_, t)| *t);
        assert_eq!(
            got.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            sorted.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            "{stream}: records come out in cursor order"
        );
        want.sort();
        let mut got = got;
        got.sort();
        assert_eq!(got, want, "{stream}: exactly the fake's records");
    }
    assert_eq!(
        std::fs::read_dir(spill_dir.path()).unwrap().count(),
        0,
        "the spill file never has a name in spill_dir"
    );
}

#[test]
fn a_kill_while_windows_spill_to_disk_loses_nothing_on_resume() {
    let server = fake(FakeConfig {
        seed: 11,
        page_order: PageOrder::Id,
        ..small()
    });
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, spilling_config(spill_dir.path()));
    write_catalog(dir.path(), &["subscriptions", "orders"]);
    let mut state = json!([]);
    let mut union: HashMap<String, i64> = HashMap::new();
    let mut finished = false;
    for kill_after in [2, 37, 151, usize::MAX] {
        let (msgs, done) = read_and_kill(dir.path(), &state, kill_after);
        for (stream, d) in msgs.iter().filter_map(record_of) {
            if stream == "subscriptions" {
                let t = ms(d["updatedAt"].as_str().unwrap());
                let e = union.entry(d["id"].to_string()).or_insert(t);
                *e = (*e).max(t);
            }
        }
        state = merge_states(&state, &last_states(&msgs));
        if done {
            finished = true;
            break;
        }
    }
    assert!(finished, "a run to the end completes");
    for d in server.records("subscriptions") {
        let id = d["id"].to_string();
        let t = ms(d["updatedAt"].as_str().unwrap());
        assert!(
            union.get(&id).is_some_and(|e| *e >= t),
            "subscription {id} lost across kills"
        );
    }
    assert_eq!(std::fs::read_dir(spill_dir.path()).unwrap().count(), 0);
}

#[test]
fn a_spill_dir_that_is_not_a_directory_is_a_config_error_naming_the_key() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server,
        json!({"spill_dir": dir.path().join("missing").to_str().unwrap()}),
    );
    write_catalog(dir.path(), &["subscriptions"]);
    let r = read(dir.path(), None);
    assert_ne!(r.code, Some(0));
    assert!(
        r.stdout.contains("`spill_dir`") || r.stderr.contains("`spill_dir`"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}
