//! The Singer front end (`tap-loop`): its machine output (about, discover, the STATE
//! shape), its input checks, field selection, and the Airbyte scenarios of incremental
//! correctness and kill-and-resume run again through Singer's interface.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::*;

fn tap(args: &[&str]) -> Run {
    run_bin(tap_bin(), args)
}

/// A command that prints one document (`--about`, `--discover`): exit code, stdout,
/// stderr; the token must not leak.
fn tap_document(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(tap_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tap-loop");
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the token leaked"
    );
    (out.status.code(), stdout, stderr)
}

#[test]
fn about_json_lists_every_setting_with_type_default_and_secrecy() {
    let (code, stdout, stderr) = tap_document(&["--about", "--format", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let about: Value = serde_json::from_str(&stdout).unwrap();
    // every key of spec.json is a setting, with its default
    let spec: Value = serde_json::from_str(&std::fs::read_to_string("spec.json").unwrap()).unwrap();
    let settings = about["settings"].as_array().unwrap();
    for (key, prop) in spec["properties"].as_object().unwrap() {
        let s = settings
            .iter()
            .find(|s| s["name"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} is not in --about"));
        assert_eq!(
            s["default"],
            prop.get("default").cloned().unwrap_or(Value::Null),
            "{key}"
        );
        assert_eq!(s["type"], prop["type"], "{key}");
    }
    let secrets: Vec<&str> = settings
        .iter()
        .filter(|s| s["secret"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["api_token", "webhook_secrets"]);
    insta::assert_snapshot!(
        "singer_about",
        serde_json::to_string_pretty(&about).unwrap()
    );
    let (code, markdown, _) = tap_document(&["--about"]);
    assert_eq!(code, Some(0));
    insta::assert_snapshot!("singer_about_markdown", markdown);
}

#[test]
fn discover_prints_a_singer_catalog_with_standard_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_json(dir.path(), "config.json", &json!({"api_token": TOKEN}));
    let (code, stdout, stderr) = tap_document(&["--config", p(&cfg), "--discover"]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut cat: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = cat["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tap_stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    for s in cat["streams"].as_array_mut().unwrap() {
        let name = s["stream"].as_str().unwrap().to_string();
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("schemas/{name}.json")).unwrap())
                .unwrap();
        assert_eq!(s["schema"], file, "{name}");
        // one metadata entry per top-level field, after the stream's own
        let fields = file["properties"].as_object().unwrap().len();
        assert_eq!(
            s["metadata"].as_array().unwrap().len(),
            fields + 1,
            "{name}"
        );
        // the snapshot shows the catalog's shape; the schemas are the files
        s["schema"] = json!(format!("<schemas/{name}.json>"));
        let md = s["metadata"].as_array_mut().unwrap();
        md.retain(|e| e["breadcrumb"] == json!([]) || e["metadata"]["inclusion"] == "automatic");
    }
    insta::assert_snapshot!(
        "singer_discover",
        serde_json::to_string_pretty(&cat).unwrap()
    );
}

#[test]
fn singer_read_writes_schema_records_and_bookmarks_and_ends_with_state() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server,
        json!({"page_size": 20, "window_target_pages": 2}),
    );
    write_catalog(dir.path(), &["subscriptions", "customers"]);
    let r = read_as(Protocol::Singer, dir.path(), None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let types: HashSet<&str> = r
        .messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        HashSet::from(["SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION"]),
        "stdout is Singer only"
    );
    // the full-table stream's records carry the pass's version, activated after the last one
    let customer_versions: HashSet<i64> = r
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == "customers")
        .map(|m| {
            m["version"]
                .as_i64()
                .expect("a full-table RECORD has a version")
        })
        .collect();
    assert_eq!(customer_versions.len(), 1, "one version per pass");
    let activate_at = r
        .messages
        .iter()
        .position(|m| m["type"] == "ACTIVATE_VERSION")
        .unwrap();
    assert_eq!(
        r.messages[activate_at],
        json!({"type": "ACTIVATE_VERSION", "stream": "customers",
               "version": customer_versions.iter().next().unwrap()})
    );
    assert!(
        r.messages[activate_at..]
            .iter()
            .all(|m| m["stream"] != "customers" || m["type"] != "RECORD"),
        "activated after the pass's last record"
    );
    assert!(r
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == "subscriptions")
        .all(|m| m.get("version").is_none()));
    for stream in ["subscriptions", "customers"] {
        let schema_at = r
            .messages
            .iter()
            .position(|m| m["type"] == "SCHEMA" && m["stream"] == stream)
            .unwrap();
        let first_record = r
            .messages
            .iter()
            .position(|m| m["type"] == "RECORD" && m["stream"] == stream)
            .unwrap();
        assert!(
            schema_at < first_record,
            "{stream}: SCHEMA before the first RECORD"
        );
        assert_eq!(
            r.records(stream).len(),
            server.records(stream).len(),
            "{stream}"
        );
    }
    let schema = r.of_type("SCHEMA");
    let subs = schema
        .iter()
        .find(|m| m["stream"] == "subscriptions")
        .unwrap();
    assert_eq!(subs["key_properties"], json!(["id"]));
    assert_eq!(subs["bookmark_properties"], json!(["updatedAt"]));
    let customers = schema.iter().find(|m| m["stream"] == "customers").unwrap();
    assert!(customers.get("bookmark_properties").is_none());
    for m in r.of_type("RECORD") {
        let t = m["time_extracted"].as_str().unwrap();
        assert!(t.ends_with('Z') && ms(t) > 0, "{t}");
    }
    assert_eq!(
        r.messages.last().unwrap()["type"],
        "STATE",
        "the last STATE follows the last RECORD"
    );
    // the state's shape: Singer's two keys, plus what the engine resumes from
    let state = r.final_state();
    let bookmark = &state["bookmarks"]["subscriptions"];
    let keys: Vec<&str> = bookmark
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["replication_key", "replication_key_value", "boundary"]
    );
    assert_eq!(bookmark["replication_key"], "updatedAt");
    assert!(bookmark["replication_key_value"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let newest = server
        .records("subscriptions")
        .iter()
        .map(|s| ms(s["updatedAt"].as_str().unwrap()))
        .max()
        .unwrap();
    assert_eq!(
        ms(bookmark["replication_key_value"].as_str().unwrap()),
        newest
    );
    assert!(
        state["bookmarks"].get("customers").is_none(),
        "a full table has no bookmark"
    );
    // stderr has the engine's log lines
    assert!(
        r.logs().iter().any(|l| l.contains("sync summary")),
        "{}",
        r.stderr
    );
}

#[test]
fn deselected_fields_are_left_out_of_schema_and_records_but_keys_and_cursor_stay() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({}));
    write_catalog(dir.path(), &["subscriptions"]);
    let mut cat = singer_catalog(&["subscriptions"]);
    cat["streams"][0]["metadata"]
        .as_array_mut()
        .unwrap()
        .extend([
            json!({"breadcrumb": ["properties", "status"], "metadata": {"selected": false}}),
            json!({"breadcrumb": ["properties", "lineItems"], "metadata": {"selected": false}}),
            json!({"breadcrumb": ["properties", "id"], "metadata": {"inclusion": "automatic", "selected": true}}),
        ]);
    write_json(dir.path(), "singer_catalog.json", &cat);
    let r = read_as(Protocol::Singer, dir.path(), None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let schema = &r.of_type("SCHEMA")[0]["schema"]["properties"];
    assert!(schema.get("status").is_none() && schema.get("lineItems").is_none());
    assert!(schema.get("id").is_some() && schema.get("updatedAt").is_some());
    let records = r.records("subscriptions");
    assert_eq!(records.len(), server.records("subscriptions").len());
    let with_status = server
        .records("subscriptions")
        .iter()
        .filter(|s| s.get("status").is_some())
        .count();
    assert!(with_status > 0, "the fake's records have the field");
    for d in records {
        assert!(
            d.get("status").is_none() && d.get("lineItems").is_none(),
            "{d}"
        );
        assert!(d["id"].is_number() && d["updatedAt"].is_string(), "{d}");
    }
}

#[test]
fn config_files_are_merged_in_order() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    // the first file points nowhere; the second, later, wins
    let base = write_json(
        dir.path(),
        "base.json",
        &json!({"api_token": TOKEN, "base_url": "http://127.0.0.1:9/nothing", "rate_limits": {"product": {"requests": 1, "per_seconds": 1}}}),
    );
    let over = write_json(
        dir.path(),
        "over.json",
        &config_value(
            &server,
            json!({"rate_limits": {"product": {"requests": 1000, "per_seconds": 1}}}),
        ),
    );
    write_catalog(dir.path(), &["products"]);
    let cat = dir.path().join("singer_catalog.json");
    let r = tap(&[
        "--config",
        p(&base),
        "--config",
        p(&over),
        "--properties",
        p(&cat),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.records("products").len(),
        server.records("products").len()
    );
}

#[test]
fn bad_input_files_are_named_with_the_problem_and_exit_2() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &server, json!({}));
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good_cat = write_json(dir.path(), "good.json", &singer_catalog(&["subscriptions"]));
    let mut pk = singer_catalog(&["subscriptions"]);
    pk["streams"][0]["metadata"]
        .as_array_mut()
        .unwrap()
        .push(json!({"breadcrumb": ["properties", "id"], "metadata": {"selected": false}}));
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec!["--catalog".into(), p(&write("broken.json", "{\"streams\": [")).into()],
            "broken.json".into(),
            "not valid JSON",
        ),
        (
            vec!["--catalog".into(), p(&write_json(dir.path(), "unknown.json", &singer_catalog(&["refunds"]))).into()],
            "unknown.json".into(),
            "\"refunds\" is selected but this tap has no such stream",
        ),
        (
            vec!["--catalog".into(), p(&write_json(dir.path(), "pk.json", &pk)).into()],
            "pk.json".into(),
            "field \"id\" is deselected, but it is the stream's primary key",
        ),
        (
            vec!["--catalog".into(), p(&good_cat).into(), "--state".into(), p(&write("state1.json", "{\"bookmarks\": ")).into()],
            "state1.json".into(),
            "not JSON",
        ),
        (
            vec!["--catalog".into(), p(&good_cat).into(), "--state".into(), p(&write("state2.json", r#"{"bookmarks": {"subscriptions": {"replication_key": "updatedAt", "replication_key_value": "last tuesday"}}}"#)).into()],
            "state2.json".into(),
            "\"last tuesday\" is not an RFC 3339 date-time",
        ),
    ];
    for (extra, file, want) in cases {
        let mut args = vec!["--config".to_string(), p(&cfg).to_string()];
        args.extend(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = tap(&refs);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&file) && r.stderr.contains(want),
            "{args:?}: {}\n  wanted: {want}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "nothing on stdout: {}", r.stdout);
    }
    // a bad config names its key, and not the token
    let bad = write_json(
        dir.path(),
        "bad.json",
        &json!({"api_token": TOKEN, "page_size": 0}),
    );
    let r = tap(&["--config", p(&bad), "--discover"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("page_size") && r.stderr.contains("bad.json"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_failed_stream_exits_1_naming_the_cause_and_the_others_keep_their_state() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    let base = server.base_url.replace("2023-10", "2026-04");
    write_config(dir.path(), &server, json!({"base_url": base}));
    write_catalog(dir.path(), &["orders", "subscriptions"]);
    let r = read_as(Protocol::Singer, dir.path(), None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("tap-loop: error: stream orders") && r.stderr.contains("404"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"));
    assert_eq!(
        r.records("subscriptions").len(),
        server.records("subscriptions").len()
    );
    let state = r.final_state();
    assert!(state["bookmarks"].get("subscriptions").is_some(), "{state}");
    assert!(state["bookmarks"].get("orders").is_none(), "{state}");
    assert_eq!(r.messages.last().unwrap()["type"], "STATE");
}

#[test]
fn without_a_catalog_every_stream_is_read() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &server, json!({}));
    let r = tap(&["--config", p(&cfg)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for s in ALL {
        assert_eq!(r.records(s).len(), server.records(s).len(), "{s}");
    }
}

#[test]
fn one_state_moves_between_the_airbyte_and_singer_modes() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"page_size": 20}));
    write_catalog(dir.path(), INCREMENTAL);
    // Airbyte first, then Singer from Airbyte's state, then Airbyte from Singer's
    let airbyte = read_as(Protocol::Airbyte, dir.path(), None);
    assert_eq!(airbyte.code, Some(0));
    let singer = read_as(Protocol::Singer, dir.path(), Some(&airbyte.final_state()));
    assert_eq!(singer.code, Some(0), "{}", singer.stderr);
    let back = read_as(Protocol::Airbyte, dir.path(), Some(&singer.final_state()));
    assert_eq!(back.code, Some(0));
    for s in INCREMENTAL {
        assert_eq!(airbyte.records(s).len(), server.records(s).len(), "{s}");
        assert_eq!(
            singer.records(s).len(),
            0,
            "{s}: Singer resumed from Airbyte's state"
        );
        assert_eq!(
            back.records(s).len(),
            0,
            "{s}: Airbyte resumed from Singer's state"
        );
        assert!(
            singer.final_state()["bookmarks"][s]["replication_key_value"].is_string(),
            "{s}"
        );
    }
}

// The Airbyte scenarios, through Singer's interface (the same helpers, the same fake).

#[test]
fn singer_first_sync_then_changes_between_syncs_under_every_page_order() {
    crate::incremental::first_sync_then_changes(Protocol::Singer);
}

#[test]
fn singer_records_changed_during_a_sync_are_not_lost_under_every_page_order() {
    crate::incremental::changes_during_a_sync(Protocol::Singer);
}

#[test]
fn singer_records_sharing_the_cursor_second_are_neither_lost_nor_repeated() {
    crate::incremental::same_second(Protocol::Singer);
}

#[test]
fn singer_sigkill_at_many_points_then_resume_loses_nothing() {
    crate::faults::sigkill_at_many_points_then_resume(Protocol::Singer);
}
