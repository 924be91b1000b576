//! Shared helpers: start the fake API, write config/catalog/state files, run the binary
//! with a time limit, pick messages apart.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_loop::{FakeConfig, FakeServer};
use serde_json::{json, Value};

pub const TOKEN: &str = "tok-SECRET-3f9a7c1e";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_source-loop")
}

/// The Singer tap, the same engine behind Singer's interface.
pub fn tap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tap-loop")
}

/// Which front end a scenario drives: the same scenario, the same fake, either protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `source-loop read --config --catalog catalog.json [--state]`
    Airbyte,
    /// `tap-loop --config --catalog singer_catalog.json [--state]`
    Singer,
}

pub fn fake(cfg: FakeConfig) -> FakeServer {
    FakeServer::start_in_thread_with_clock(
        FakeConfig {
            token: TOKEN.to_string(),
            ..cfg
        },
        test_clock(),
    )
    .expect("fake Loop API starts")
}

thread_local! {
    /// This test's clock: libtest runs each test on a thread of its own, so each test
    /// has one. Every fake the test starts tells time by it, and every binary it starts
    /// gets its offset ([`command`]), so the test moves time forward instead of sleeping.
    static TEST_CLOCK: loop_time::Clock = loop_time::Clock::new();
}

/// This test's clock (a handle sharing it).
pub fn test_clock() -> loop_time::Clock {
    TEST_CLOCK.with(Clone::clone)
}

/// A command running `bin` on this test's clock: its "now" is the test's
/// ([`loop_time::TEST_CLOCK_OFFSET_ENV`]). The offset is fixed when the process starts,
/// so a long-running one (`serve`) stays at the time it was started with.
pub fn command(bin: &str) -> Command {
    let mut c = Command::new(bin);
    c.env(
        loop_time::TEST_CLOCK_OFFSET_ENV,
        test_clock().offset_ms().to_string(),
    );
    c
}

/// Moves this test's clock (its fakes, the binaries it starts from now on) forward by
/// `by` instead of waiting that long.
pub fn advance_clock(by: Duration) {
    test_clock().advance(by);
}

/// Moves this test's clock just past the start of the next whole second (by 20 ms): a
/// change made now and a sync started now then share that second.
pub fn advance_clock_into_next_second() {
    clock_into_next_second(&test_clock());
}

/// [`advance_clock_into_next_second`] for a test's clock handed to another thread.
pub fn clock_into_next_second(clock: &loop_time::Clock) {
    let into = clock.now().timestamp_subsec_millis().min(999);
    clock.advance(Duration::from_millis(u64::from(1000 - into) + 20));
}

pub fn small() -> FakeConfig {
    FakeConfig {
        counts: fake_loop::Counts {
            subscriptions: 220,
            orders: 260,
            customers: 60,
            products: 12,
            activity_logs: 150,
        },
        ..FakeConfig::default()
    }
}

/// Fast pacing for tests (the fake has no limits unless asked).
pub fn fast_limits() -> Value {
    let l = json!({"requests": 1000, "per_seconds": 1});
    json!({"subscription": l, "order": l, "customer": l, "product": l, "activityLog": l})
}

pub fn config_value(server: &FakeServer, extra: Value) -> Value {
    let mut c = json!({
        "api_token": TOKEN,
        "base_url": server.base_url,
        "start_date": "2015-01-01T00:00:00Z",
        "rate_limits": fast_limits(),
        "retry": {"max_attempts": 6, "initial_backoff_ms": 5, "max_backoff_ms": 50, "max_elapsed_seconds": 30},
    });
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

pub fn write_config(dir: &Path, server: &FakeServer, extra: Value) -> PathBuf {
    write_json(dir, "config.json", &config_value(server, extra))
}

pub const INCREMENTAL: &[&str] = &["subscriptions", "orders", "activity_logs"];
pub const ALL: &[&str] = &[
    "subscriptions",
    "orders",
    "customers",
    "products",
    "activity_logs",
];

pub fn catalog(streams: &[&str]) -> Value {
    let items: Vec<Value> = streams
        .iter()
        .map(|s| {
            let incremental = INCREMENTAL.contains(s) || *s == "webhook_events";
            json!({
                "stream": {"name": s, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
                "sync_mode": if incremental { "incremental" } else { "full_refresh" },
                "destination_sync_mode": if incremental { "append_dedup" } else { "overwrite" },
            })
        })
        .collect();
    json!({"streams": items})
}

/// The Singer catalog selecting `streams` (incremental where the stream can be).
pub fn singer_catalog(streams: &[&str]) -> Value {
    let items: Vec<Value> = streams
        .iter()
        .map(|s| {
            let incremental = INCREMENTAL.contains(s) || *s == "webhook_events";
            json!({
                "tap_stream_id": s,
                "stream": s,
                "schema": {},
                "metadata": [{"breadcrumb": [], "metadata": {
                    "selected": true,
                    "replication-method": if incremental { "INCREMENTAL" } else { "FULL_TABLE" },
                }}],
            })
        })
        .collect();
    json!({"streams": items})
}

/// Writes the Airbyte catalog (catalog.json) and the Singer one (singer_catalog.json).
pub fn write_catalog(dir: &Path, streams: &[&str]) -> PathBuf {
    write_json(dir, "singer_catalog.json", &singer_catalog(streams));
    write_json(dir, "catalog.json", &catalog(streams))
}

/// The arguments of a read of `dir`'s config and catalog (and `state`, if any).
pub fn read_command(
    protocol: Protocol,
    dir: &Path,
    state: Option<&Path>,
) -> (&'static str, Vec<String>) {
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let (bin, mut args) = match protocol {
        Protocol::Airbyte => (
            bin(),
            vec![
                "read".to_string(),
                "--config".into(),
                s(dir.join("config.json")),
                "--catalog".into(),
                s(dir.join("catalog.json")),
            ],
        ),
        Protocol::Singer => (
            tap_bin(),
            vec![
                "--config".to_string(),
                s(dir.join("config.json")),
                "--catalog".into(),
                s(dir.join("singer_catalog.json")),
            ],
        ),
    };
    if let Some(p) = state {
        args.push("--state".into());
        args.push(s(p.to_path_buf()));
    }
    (bin, args)
}

/// A stream's state (the neutral stream state value) as `protocol`'s input state.
pub fn input_state(protocol: Protocol, stream: &str, cursor: &str, value: &Value) -> Value {
    match protocol {
        Protocol::Airbyte => {
            json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": stream}, "stream_state": value}}])
        }
        Protocol::Singer => {
            let mut b = value.clone();
            let m = b.as_object_mut().expect("a stream state is an object");
            if let Some(v) = m.remove(cursor) {
                m.insert("replication_key".into(), json!(cursor));
                m.insert("replication_key_value".into(), v);
            }
            json!({"bookmarks": {stream: b}})
        }
    }
}

/// A record message's stream and data, in either protocol.
pub fn record_of(m: &Value) -> Option<(&str, &Value)> {
    if m["type"] != "RECORD" {
        return None;
    }
    if let Some(stream) = m["record"]["stream"].as_str() {
        return Some((stream, &m["record"]["data"])); // Airbyte
    }
    m["stream"].as_str().map(|s| (s, &m["record"])) // Singer
}

#[derive(Debug)]
pub struct Run {
    pub protocol: Protocol,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub messages: Vec<Value>,
}

impl Run {
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["type"] == t).collect()
    }
    pub fn records(&self, stream: &str) -> Vec<&Value> {
        self.messages
            .iter()
            .filter_map(record_of)
            .filter(|(s, _)| *s == stream)
            .map(|(_, d)| d)
            .collect()
    }
    /// What to resume from: Airbyte's last STATE of every stream as an input state
    /// array; Singer's last STATE value (as Meltano keeps it).
    pub fn final_state(&self) -> Value {
        last_states(&self.messages)
    }
    pub fn errors(&self) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "TRACE" && m["trace"]["type"] == "ERROR")
            .map(|m| &m["trace"]["error"])
            .collect()
    }
    pub fn statuses(&self, stream: &str) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "TRACE" && m["trace"]["type"] == "STREAM_STATUS")
            .filter(|m| m["trace"]["stream_status"]["stream_descriptor"]["name"] == stream)
            .map(|m| {
                m["trace"]["stream_status"]["status"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
    /// Log lines: Airbyte's LOG messages; Singer's stderr lines (where taps log).
    pub fn logs(&self) -> Vec<String> {
        if self.protocol == Protocol::Singer {
            return self
                .stderr
                .lines()
                .filter_map(|l| l.strip_prefix("tap-loop: "))
                .map(str::to_string)
                .collect();
        }
        self.of_type("LOG")
            .iter()
            .map(|m| m["log"]["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// What a run's output resumes from (see [`Run::final_state`]); Singer's is `null` when
/// no STATE was printed.
pub fn last_states(messages: &[Value]) -> Value {
    if let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE" && m.get("value").is_some())
    {
        return last["value"].clone();
    }
    if messages.iter().any(|m| m["type"] == "SCHEMA") {
        return Value::Null;
    }
    let mut order: Vec<String> = Vec::new();
    let mut latest = std::collections::HashMap::new();
    for m in messages.iter().filter(|m| m["type"] == "STATE") {
        let name = m["state"]["stream"]["stream_descriptor"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        if !latest.contains_key(&name) {
            order.push(name.clone());
        }
        latest.insert(name, m["state"].clone());
    }
    Value::Array(
        order
            .into_iter()
            .map(|n| latest.remove(&n).unwrap())
            .collect(),
    )
}

pub fn parse_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The state to resume from after a run that printed `new` (its [`last_states`]) on top
/// of `old`: per stream, the newest.
pub fn merge_states(old: &Value, new: &Value) -> Value {
    if new.is_null() || new.as_array().is_some_and(Vec::is_empty) {
        return old.clone();
    }
    if let Some(b) = new.get("bookmarks").and_then(Value::as_object) {
        // Singer: a STATE carries every bookmark; still, never forget an older one
        let mut all = old.get("bookmarks").cloned().unwrap_or(json!({}));
        for (k, v) in b {
            all[k] = v.clone();
        }
        return json!({"bookmarks": all});
    }
    let mut out: Vec<Value> = Vec::new();
    let name = |s: &Value| s["stream"]["stream_descriptor"]["name"].clone();
    for s in new.as_array().unwrap() {
        out.push(s.clone());
    }
    for s in old.as_array().into_iter().flatten() {
        if !out.iter().any(|o| name(o) == name(s)) {
            out.push(s.clone());
        }
    }
    Value::Array(out)
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("source-loop did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    let messages = parse_lines(&stdout);
    Run {
        protocol: Protocol::Airbyte,
        code: status.code(),
        stdout,
        stderr,
        messages,
    }
}

pub fn run(args: &[&str]) -> Run {
    run_bin(bin(), args)
}

/// Runs `bin` (either front end) with a time limit; the token must not leak.
pub fn run_bin(bin: &str, args: &[&str]) -> Run {
    let child = command(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn source-loop");
    let mut r = wait_with_timeout(child, Duration::from_secs(120));
    if bin == tap_bin() {
        r.protocol = Protocol::Singer;
    }
    assert!(
        !r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN),
        "the API token leaked into the output of {args:?}"
    );
    r
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `read` with config and catalog (and state, if any) from `dir`.
pub fn read(dir: &Path, state: Option<&Value>) -> Run {
    read_as(Protocol::Airbyte, dir, state)
}

/// A read of `dir` through `protocol`'s front end.
pub fn read_as(protocol: Protocol, dir: &Path, state: Option<&Value>) -> Run {
    let sp = state.map(|s| write_json(dir, "state.json", s));
    let (bin, args) = read_command(protocol, dir, sp.as_deref());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_bin(bin, &refs)
}

/// Key of a record: (id, updatedAt or createdAt).
pub fn version(stream: &str, r: &Value) -> (String, String) {
    let key = if stream == "products" {
        "shopifyId"
    } else {
        "id"
    };
    let cursor = if stream == "activity_logs" {
        "createdAt"
    } else {
        "updatedAt"
    };
    (
        r[key].to_string(),
        r.get(cursor)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )
}

/// Instant of an ISO timestamp in ms, for comparing the fake's raw values with output.
pub fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

/// Ends the second of every change made so far, by moving this test's clock on 1.1 s
/// (it used to sleep that long): what comes next (a sync, `reconcile`) starts in a later
/// second than the changes. `reconcile` compares only whole seconds before it starts (a
/// change later in its start second may or may not be in the engine's pages); a sync
/// sees a change made in its own start second, but a test that asserts exact counts
/// keeps such changes out of the sync's live second (see `sync::incremental`).
pub fn settle() {
    advance_clock(Duration::from_millis(1100));
}

/// Run a read, SIGKILL it once `kill_after` lines have been read from its stdout (any
/// point: mid-window, mid-page, right after a STATE); returns the messages printed before
/// the kill and whether it finished on its own.
pub fn read_and_kill(
    dir: &std::path::Path,
    state: &Value,
    kill_after: usize,
) -> (Vec<Value>, bool) {
    read_and_kill_as(Protocol::Airbyte, dir, state, kill_after)
}

/// [`read_and_kill`] through `protocol`'s front end.
pub fn read_and_kill_as(
    protocol: Protocol,
    dir: &std::path::Path,
    state: &Value,
    kill_after: usize,
) -> (Vec<Value>, bool) {
    let sp = write_json(dir, "state.json", state);
    let (bin, args) = read_command(protocol, dir, Some(&sp));
    let mut child = command(bin)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut msgs = Vec::new();
    let mut killed = false;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            break;
        };
        msgs.push(v);
        if msgs.len() >= kill_after && !killed {
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    (msgs, !killed && status.success())
}

/// A first sync, SIGKILLed once `kill_after` lines were read from its stdout.
pub fn read_until(dir: &Path, kill_after: usize) -> Vec<Value> {
    read_and_kill(dir, &json!([]), kill_after).0
}
