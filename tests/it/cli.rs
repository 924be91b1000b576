//! spec / check / discover and bad input, through the binary.

use serde_json::{json, Value};

use crate::harness::*;

#[test]
fn spec_matches_spec_json_and_snapshot() {
    let r = run(&["spec"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.messages.len(), 1);
    let spec = &r.messages[0];
    assert_eq!(spec["type"], "SPEC");
    let file: Value = serde_json::from_str(include_str!("../../spec.json")).unwrap();
    assert_eq!(
        spec["spec"]["connectionSpecification"], file,
        "spec.json drifted from `source-loop spec`"
    );
    assert_eq!(
        spec["spec"]["connectionSpecification"]["properties"]["api_token"]["airbyte_secret"],
        true
    );
    insta::assert_snapshot!("spec", serde_json::to_string_pretty(&spec).unwrap());
}

#[test]
fn discover_lists_every_stream_with_keys_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_json(dir.path(), "config.json", &json!({"api_token": TOKEN}));
    let r = run(&["discover", "--config", p(&cfg)]);
    assert_eq!(r.code, Some(0));
    let cat = &r.messages[0];
    assert_eq!(cat["type"], "CATALOG");
    let names: Vec<&str> = cat["catalog"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    for s in cat["catalog"]["streams"].as_array().unwrap() {
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("schemas/{}.json", s["name"].as_str().unwrap()))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(s["json_schema"], file);
        assert_eq!(
            s["json_schema"]["additionalProperties"], true,
            "unknown upstream fields must pass"
        );
    }
    insta::assert_snapshot!("discover", serde_json::to_string_pretty(&cat).unwrap());

    // the opt-out: money typed as decimal strings, in the catalog as in the records
    let cfg = write_json(
        dir.path(),
        "config.json",
        &json!({"api_token": TOKEN, "money_type": "string"}),
    );
    let r = run(&["discover", "--config", p(&cfg)]);
    assert_eq!(r.code, Some(0));
    let orders = &r.messages[0]["catalog"]["streams"][1]["json_schema"]["properties"];
    assert_eq!(orders["totalPrice"]["type"], json!(["string", "null"]));
    assert_eq!(
        orders["lines"]["items"]["properties"]["price"]["type"],
        json!(["string", "null"])
    );
}

#[test]
fn check_succeeds_and_fails_with_a_useful_message() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &server, json!({}));
    let r = run(&["check", "--config", p(&cfg)]);
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.messages[0]["connectionStatus"]["status"], "SUCCEEDED",
        "{:?}",
        r.messages
    );

    let status = |extra: Value| {
        let cfg = write_config(dir.path(), &server, extra);
        let r = run(&["check", "--config", p(&cfg)]);
        assert_eq!(r.code, Some(0), "a failed check still exits 0");
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0]["connectionStatus"]["status"], "FAILED");
        r.messages[0]["connectionStatus"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let wrong = status(json!({"api_token": "wrong-token"}));
    assert!(
        wrong.contains("api_token") && wrong.contains("401"),
        "{wrong}"
    );
    let bad_date = status(json!({"start_date": "last tuesday"}));
    assert!(
        bad_date.contains("start_date") && bad_date.contains("RFC 3339"),
        "{bad_date}"
    );
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = status(
        json!({"base_url": format!("http://127.0.0.1:{port}/admin/2023-10"),
        "retry": {"max_attempts": 2, "initial_backoff_ms": 1}}),
    );
    assert!(unreachable.contains("could not connect"), "{unreachable}");
    let missing = {
        let cfg = write_json(dir.path(), "c2.json", &json!({"start_date": "2024-01-01"}));
        run(&["check", "--config", p(&cfg)]).messages[0]["connectionStatus"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(missing.contains("`api_token` is missing"), "{missing}");
}

#[test]
fn bad_config_catalog_and_state_are_config_errors() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"page_size": 500}));
    write_catalog(dir.path(), &["subscriptions"]);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(2));
    let e = r.errors();
    assert_eq!(e[0]["failure_type"], "config_error");
    assert!(e[0]["message"].as_str().unwrap().contains("page_size"));

    write_config(dir.path(), &server, json!({}));
    std::fs::write(
        dir.path().join("catalog.json"),
        "{\"streams\": [{\"stream\": {\"name\": \"refunds\"}}]}",
    )
    .unwrap();
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(2));
    let msg = r.errors()[0]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("refunds") && msg.contains("subscriptions"),
        "{msg}"
    );

    write_catalog(dir.path(), &["subscriptions"]);
    std::fs::write(dir.path().join("state.json"), "{oops").unwrap();
    let r = run(&[
        "read",
        "--config",
        p(&dir.path().join("config.json")),
        "--catalog",
        p(&dir.path().join("catalog.json")),
        "--state",
        p(&dir.path().join("state.json")),
    ]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.errors()[0]["failure_type"], "config_error");
    assert!(r.errors()[0]["message"].as_str().unwrap().contains("state"));

    let bad_cursor = json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": {"updatedAt": "soon"}}}]);
    let r = read(dir.path(), Some(&bad_cursor));
    assert_eq!(r.code, Some(1));
    assert_eq!(r.errors()[0]["failure_type"], "config_error");
    assert_eq!(r.statuses("subscriptions"), ["STARTED", "INCOMPLETE"]);

    // a missing state file is a first sync
    let r = run(&[
        "read",
        "--config",
        p(&dir.path().join("config.json")),
        "--catalog",
        p(&dir.path().join("catalog.json")),
        "--state",
        p(&dir.path().join("nope.json")),
    ]);
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.records("subscriptions").len(),
        server.records("subscriptions").len()
    );
}

#[test]
fn empty_state_forms_mean_first_sync() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({}));
    write_catalog(dir.path(), &["activity_logs"]);
    let n = server.records("activity_logs").len();
    for s in [
        json!([]),
        json!({}),
        json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "activity_logs", "namespace": null}, "stream_state": {}}}]),
    ] {
        let r = read(dir.path(), Some(&s));
        assert_eq!(r.code, Some(0));
        assert_eq!(r.records("activity_logs").len(), n, "state {s}");
    }
}

#[test]
fn output_is_pure_protocol_and_statuses_are_ordered() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({}));
    write_catalog(dir.path(), ALL);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for m in &r.messages {
        assert!(
            ["RECORD", "STATE", "LOG", "TRACE"].contains(&m["type"].as_str().unwrap()),
            "{m}"
        );
    }
    for s in ALL {
        assert_eq!(r.statuses(s), ["STARTED", "RUNNING", "COMPLETE"], "{s}");
        let states: Vec<&Value> = r
            .of_type("STATE")
            .into_iter()
            .filter(|m| m["state"]["stream"]["stream_descriptor"]["name"] == *s)
            .collect();
        assert!(!states.is_empty(), "every stream ends with a STATE");
        let counted: f64 = states
            .iter()
            .map(|m| m["state"]["sourceStats"]["recordCount"].as_f64().unwrap())
            .sum();
        assert_eq!(
            counted as usize,
            r.records(s).len(),
            "recordCount counts the records since the previous STATE"
        );
    }
    let summary = r
        .logs()
        .into_iter()
        .find(|l| l.starts_with("sync summary"))
        .expect("final summary");
    assert!(summary.contains("ratio"), "{summary}");
    for s in ["subscriptions", "orders"] {
        let part = format!("{s} {}", r.records(s).len());
        assert!(summary.contains(&part), "records per stream: {summary}");
    }
    for part in [
        " retries",
        " rate-limited (429)",
        " invalid records (",
        " records in ",
    ] {
        assert!(summary.contains(part), "{part:?} in {summary}");
    }
}

#[test]
fn progress_goes_to_stderr_and_stdout_stays_protocol() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"page_size": 5}));
    write_catalog(dir.path(), &["subscriptions"]);
    let r = run(&[
        "read",
        "--progress",
        "--config",
        p(&dir.path().join("config.json")),
        "--catalog",
        p(&dir.path().join("catalog.json")),
    ]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stderr.contains("subscriptions"),
        "progress line on stderr: {:?}",
        r.stderr
    );
    assert!(r.stderr.contains("rec/s"));
    assert_eq!(
        r.records("subscriptions").len(),
        server.records("subscriptions").len()
    );
}

#[test]
fn a_failed_read_says_why_on_stderr_too() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), &["subscriptions"]);
    // a config error, before any stream starts
    write_json(
        dir.path(),
        "config.json",
        &json!({"start_date": "2024-13-01"}),
    );
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("api_token") && r.stderr.contains("start_date"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    // a wrong token: the stream's error
    write_config(dir.path(), &server, json!({"api_token": "wrong-token"}));
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("error:") && r.stderr.contains("api_token"),
        "{}",
        r.stderr
    );
    // stdout stays protocol
    assert!(r.messages.iter().all(|m| m["type"].is_string()));
}

#[test]
fn help_shows_every_way_to_run_the_exit_codes_and_what_every_flag_takes() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    for way in [
        "read",
        "Airbyte",
        "tap-loop",
        "sync",
        "serve",
        "reconcile",
        "Exit codes",
    ] {
        assert!(top.contains(way), "{way} missing from --help:\n{top}");
    }
    insta::assert_snapshot!("help", top);
    insta::assert_snapshot!("read_help", help(&["read", "--help"]));
    // --progress only where it does something
    let check = help(&["check", "--help"]);
    assert!(!check.contains("--progress"), "{check}");
    assert!(check.contains("--config <FILE>"), "{check}");
}

#[test]
fn config_typos_are_warned_about_with_a_suggestion() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({"start_dat": "2024-01-01"}));
    write_catalog(dir.path(), &["products"]);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0), "{:?}", r.errors());
    assert!(
        r.stderr
            .contains("warning: unknown config key `start_dat`: did you mean `start_date`?"),
        "{}",
        r.stderr
    );
    assert!(
        r.logs()
            .iter()
            .any(|l| l.contains("did you mean `start_date`?")),
        "also a LOG line for platforms that keep only the output"
    );
    let c = run(&["check", "--config", p(&dir.path().join("config.json"))]);
    assert!(
        c.stderr.contains("did you mean `start_date`?"),
        "{}",
        c.stderr
    );
    // an endpoint that does not exist is an error that lists the real ones
    write_config(
        dir.path(),
        &server,
        json!({"rate_limits": {"subscriptions": {"requests": 1, "per_seconds": 1}}}),
    );
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("`rate_limits.subscriptions` is not one of Loop's endpoints: did you mean `subscription`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_against_nothing_listening_blames_base_url_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_json(
        dir.path(),
        "config.json",
        &json!({"api_token": TOKEN, "base_url": format!("http://127.0.0.1:{port}/admin/2023-10"),
                "retry": {"max_attempts": 2, "initial_backoff_ms": 5}}),
    );
    let r = run(&["check", "--config", p(&dir.path().join("config.json"))]);
    let status = &r.of_type("CONNECTION_STATUS")[0]["connectionStatus"];
    assert_eq!(status["status"], "FAILED");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("check `base_url`"), "{message}");
    assert!(!message.contains("STATE"), "no STATE in check: {message}");
    assert!(!message.contains("os error"), "{message}");
    assert!(
        !message.contains("over 0s") && !message.contains("over 2s"),
        "{message}"
    );
}
