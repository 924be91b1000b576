//! Reconciliation end to end: the fake Loop API sends signed webhooks for its changes to
//! a real `source-loop serve`, with planted faults (changes without a webhook, dropped,
//! duplicated and reordered deliveries, webhooks for versions the API does not show or
//! entities it does not have); `source-loop reconcile` must report exactly those, exit
//! by its tolerance, and `--repair` must close the missed ones while `serve` keeps
//! receiving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_loop::{
    Delivery, FakeServer, Fault, FaultKind, Mutation, PageOrder, SignatureEncoding, WebhookOnly,
    WebhookTarget,
};
use serde_json::{json, Value};

use crate::harness::{self, config_value, fake, p, run, write_catalog, write_json, Run};
use crate::webhooks::{metric, raw_get, Serve};

const SECRET: &str = "whsec-RECONCILE-5e1f";
/// How long the fake's outbox may take to post everything queued.
const DELIVERY_LIMIT: Duration = Duration::from_secs(15);

fn journal(dir: &Path) -> PathBuf {
    dir.join("journal.sqlite")
}

/// `serve` on a free port, journaling into `dir`, verifying base64 signatures.
fn start_serve(dir: &Path) -> Serve {
    let config = write_json(
        dir,
        "serve.json",
        &json!({"journal_path": journal(dir), "webhook_secrets": [SECRET],
                "webhook_signature_encoding": "base64"}),
    );
    Serve::start(&config, false, &[])
}

/// The fake, sending its webhooks to `serve`.
fn start_fake(serve: &Serve, page_order: PageOrder) -> FakeServer {
    let mut cfg = harness::small();
    cfg.page_order = page_order;
    cfg.counts.subscriptions = 40;
    cfg.counts.orders = 50;
    cfg.webhooks = Some(WebhookTarget {
        url: serve.url("/webhooks/loop"),
        secret: SECRET.into(),
        encoding: SignatureEncoding::Base64,
        plan: Default::default(),
    });
    fake(cfg)
}

/// The reconcile config: the fake's API, the journal, no settling time, and `extra`.
fn reconcile_config(dir: &Path, name: &str, server: &FakeServer, extra: Value) -> PathBuf {
    let mut c = config_value(
        server,
        json!({"journal_path": journal(dir), "reconcile_settle_seconds": 0}),
    );
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    write_json(dir, name, &c)
}

/// `reconcile` with its report parsed.
fn reconcile(config: &Path, extra: &[&str]) -> (Run, Value) {
    let mut args = vec!["reconcile", "--config", p(config)];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert!(
        r.code != Some(1),
        "reconcile failed:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.messages.len(),
        1,
        "one JSON object on stdout: {}",
        r.stdout
    );
    let report = r.messages[0].clone();
    (r, report)
}

/// Waits until the fake posted every queued webhook.
fn wait_delivered(server: &FakeServer) {
    let start = Instant::now();
    while server.webhook_stats().pending > 0 {
        assert!(
            start.elapsed() < DELIVERY_LIMIT,
            "webhooks still pending: {:?}",
            server.webhook_stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ids(server: &FakeServer, stream: &str) -> Vec<i64> {
    server
        .records(stream)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn touch(server: &FakeServer, stream: &str, ids: &[i64], how: Delivery) {
    let m = Mutation::TouchIds {
        stream: stream.into(),
        ids: ids.to_vec(),
    };
    assert_eq!(server.mutate_with(m, how).len(), ids.len());
    // the next change gets a later updatedAt
    server.clock().advance(Duration::from_millis(3));
}

/// The ids of one list of one stream of a report.
fn listed(report: &Value, stream: &str, list: &str) -> Vec<String> {
    report["streams"][stream][list]
        .as_array()
        .unwrap_or_else(|| panic!("{stream}.{list} missing: {report}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn strings(ids: &[i64]) -> Vec<String> {
    ids.iter().map(i64::to_string).collect()
}

/// Every timestamp replaced by a placeholder, for the snapshot of the report's shape.
fn redact(v: &mut Value) {
    match v {
        Value::String(s) if loop_time::parse_rfc3339_ms(s).is_some() => *s = "[timestamp]".into(),
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::Object(m) => m.values_mut().for_each(redact),
        _ => {}
    }
}

/// Under each page order Loop may use (undocumented): the API side is read through the
/// engine, whose windows and checks depend on it.
#[test]
fn reconcile_reports_exactly_the_planted_differences_and_repair_closes_the_missed_ones() {
    for order in [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc] {
        planted_differences_reported_and_repaired(order);
    }
}

fn planted_differences_reported_and_repaired(page_order: PageOrder) {
    let dir = tempfile::tempdir().unwrap();
    let serve = start_serve(dir.path());
    let server = start_fake(&serve, page_order);
    let s = ids(&server, "subscriptions");
    let o = ids(&server, "orders");
    let unknown_order = o.iter().max().unwrap() + 1000;

    // The journal begins with this change (agreeing).
    touch(&server, "subscriptions", &[s[12]], Delivery::Plan);
    wait_delivered(&server);
    server.clock().advance(Duration::from_millis(20));

    // Agreeing: delivered as Loop would, duplicated, or reordered.
    touch(&server, "subscriptions", &s[0..5], Delivery::Plan);
    touch(&server, "orders", &o[0..3], Delivery::Plan);
    touch(&server, "orders", &[o[4]], Delivery::Duplicate);
    touch(&server, "subscriptions", &[s[9]], Delivery::Hold);
    touch(&server, "subscriptions", &[s[9]], Delivery::Hold);
    server.release_webhooks();
    // Missed: changed without a webhook, or the webhook lost.
    touch(&server, "subscriptions", &[s[5], s[6]], Delivery::None);
    touch(&server, "subscriptions", &[s[7]], Delivery::Drop);
    touch(&server, "subscriptions", &[s[8]], Delivery::Plan);
    touch(&server, "subscriptions", &[s[8]], Delivery::None);
    touch(&server, "orders", &[o[3]], Delivery::None);
    // API behind: a webhook for a version the API does not show (one whose API version
    // predates `since`, one inside the range).
    touch(&server, "subscriptions", &[s[11]], Delivery::Plan);
    for id in [s[10], s[11]] {
        let w = WebhookOnly::NewerThanApi {
            stream: "subscriptions".into(),
            id,
        };
        server.webhook_only(w).unwrap();
    }
    // Only in the journal: an order the API does not have.
    let w = WebhookOnly::UnknownEntity {
        stream: "orders".into(),
        id: unknown_order,
    };
    server.webhook_only(w).unwrap();
    wait_delivered(&server);
    let stats = server.webhook_stats();
    assert_eq!((stats.failed, stats.held), (0, 0), "{stats:?}");
    harness::settle();

    let config = reconcile_config(dir.path(), "config.json", &server, json!({}));
    let (r, report) = reconcile(&config, &[]);
    assert_eq!(
        r.code,
        Some(3),
        "drift beyond a tolerance of 0:\n{}",
        r.stderr
    );
    let missed_subs = strings(&[s[5], s[6], s[7], s[8]]);
    assert_eq!(
        listed(&report, "subscriptions", "missed_webhooks"),
        missed_subs
    );
    assert_eq!(
        listed(&report, "subscriptions", "api_behind"),
        strings(&[s[10], s[11]])
    );
    assert!(listed(&report, "subscriptions", "only_in_journal").is_empty());
    assert_eq!(
        listed(&report, "orders", "missed_webhooks"),
        strings(&[o[3]])
    );
    assert!(listed(&report, "orders", "api_behind").is_empty());
    assert_eq!(
        listed(&report, "orders", "only_in_journal"),
        strings(&[unknown_order])
    );
    assert_eq!(report["streams"]["subscriptions"]["agree"], 7, "{report}");
    assert_eq!(report["streams"]["orders"]["agree"], 4, "{report}");
    assert_eq!(report["drift"], 8);
    assert_eq!(report["within_tolerance"], false);
    // s[8]'s journal holds its first, delivered version; the others none at all.
    let missed = &report["streams"]["subscriptions"]["missed_webhooks"];
    assert!(missed[3]["journal_updated_at"].is_string(), "{missed}");
    assert!(missed[0]["journal_updated_at"].is_null(), "{missed}");
    // The API's versions are the fake's.
    let fake_subs: BTreeMap<String, String> = server
        .records("subscriptions")
        .iter()
        .map(|r| (r["id"].to_string(), r["updatedAt"].as_str().unwrap().into()))
        .collect();
    for d in missed.as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        assert_eq!(
            harness::ms(d["api_updated_at"].as_str().unwrap()),
            harness::ms(&fake_subs[id]),
            "{d}"
        );
    }
    // Topics of the events received in the range (the duplicate stored once).
    assert_eq!(
        report["topics"],
        json!({"order/processed": 5, "subscription/updated": 12})
    );
    assert!(r.stderr.contains("BEYOND tolerance"), "{}", r.stderr);
    assert!(
        r.stderr.contains("subscriptions: 13 checked, 7 agree, 4 missed webhooks, 2 API behind, 0 only in the journal"),
        "{}",
        r.stderr
    );
    let mut shape = report.clone();
    redact(&mut shape);
    insta::assert_snapshot!(
        "reconcile_report",
        serde_json::to_string_pretty(&shape).unwrap()
    );

    // Within tolerance exactly at the drift, beyond it one below.
    let at = reconcile_config(
        dir.path(),
        "at.json",
        &server,
        json!({"reconcile_max_drift": 8}),
    );
    assert_eq!(reconcile(&at, &[]).0.code, Some(0));
    let below = reconcile_config(
        dir.path(),
        "below.json",
        &server,
        json!({"reconcile_max_drift": 7}),
    );
    assert_eq!(reconcile(&below, &[]).0.code, Some(3));
    // 8 of 19 checked: a fraction of 0.5 allows 9.
    let fraction = reconcile_config(
        dir.path(),
        "fraction.json",
        &server,
        json!({"reconcile_max_drift_fraction": 0.5}),
    );
    let (r, by_fraction) = reconcile(&fraction, &["--streams", "subscriptions,orders"]);
    assert_eq!(
        (r.code, &by_fraction["tolerance"]["allowed"]),
        (Some(0), &json!(9))
    );

    // --since: never before the journal began; later, it narrows the compared changes.
    let (r, early) = reconcile(&config, &["--since", "2020-01-01"]);
    assert!(
        r.stderr.contains("is before the journal began"),
        "{}",
        r.stderr
    );
    assert_eq!(early["since"], early["journal_started_at"]);
    assert_eq!(early["drift"], 8);
    let first = &report;
    let last_change = ["subscriptions", "orders"]
        .iter()
        .flat_map(|st| {
            ["missed_webhooks", "api_behind", "only_in_journal"]
                .iter()
                .flat_map(move |l| first["streams"][st][l].as_array().unwrap().clone())
        })
        .flat_map(|d| ["api_updated_at", "journal_updated_at"].map(|k| d[k].clone()))
        .filter_map(|t| t.as_str().map(harness::ms))
        .max()
        .unwrap();
    let after = loop_time::format_ms(last_change + 1);
    let (r, late) = reconcile(&config, &["--since", &after]);
    assert_eq!(
        (r.code, &late["checked"], &late["since"]),
        (Some(0), &json!(0), &json!(after))
    );

    // Repair while the receiver keeps receiving: changes to other orders are delivered
    // all along and journaled beside the repair's writes. The API read is slowed so that
    // they overlap; they start once the run is reading the API, in the second after the
    // one it began in (the fake's clock is moved there; the run keeps the time it was
    // started with), so they are younger than its `until` and not compared.
    server.inject(Fault {
        path: Some("/order".into()),
        kind: FaultKind::Slow { millis: 1500 },
        times: 1,
    });
    let receiving = AtomicBool::new(true);
    let before = server.webhook_stats().delivered;
    let requests_before: u64 = server.stats().requests.values().sum();
    let clock = harness::test_clock();
    let (r, repaired, during) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let start = Instant::now();
            while server.stats().requests.values().sum::<u64>() == requests_before {
                assert!(
                    start.elapsed() < DELIVERY_LIMIT,
                    "reconcile never read the API"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            harness::clock_into_next_second(&clock);
            while receiving.load(Ordering::Relaxed) {
                touch(&server, "orders", &o[10..14], Delivery::Plan);
                // pacing: a delivery every 20 ms for as long as the run lasts
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (r, report) = reconcile(&config, &["--repair"]);
        let during = server.webhook_stats().delivered - before;
        receiving.store(false, Ordering::Relaxed);
        (r, report, during)
    });
    assert!(during > 0, "no delivery overlapped the repair run");
    assert_eq!(r.code, Some(3), "the drift was found before repairing it");
    assert_eq!(repaired["repaired"], 5, "{repaired}");
    assert_eq!(repaired["streams"]["subscriptions"]["repaired"], 4);
    assert_eq!(repaired["streams"]["orders"]["repaired"], 1);
    wait_delivered(&server);
    let stats = server.webhook_stats();
    assert_eq!(
        stats.failed, 0,
        "the receiver refused deliveries: {stats:?}"
    );
    assert!(stats.delivered > 20, "{stats:?}");
    assert_eq!(raw_get(serve.addr, "/healthz").map(|x| x.0), Some(200));
    harness::settle();

    // A second reconcile finds no missed webhook; a second repair adds nothing.
    let (r, again) = reconcile(&config, &["--repair"]);
    for stream in ["subscriptions", "orders"] {
        assert!(
            listed(&again, stream, "missed_webhooks").is_empty(),
            "{again}"
        );
    }
    assert_eq!(again["repaired"], 0);
    assert_eq!(
        listed(&again, "subscriptions", "api_behind"),
        strings(&[s[10], s[11]])
    );
    assert_eq!(
        listed(&again, "orders", "only_in_journal"),
        strings(&[unknown_order])
    );
    assert_eq!((r.code, &again["drift"]), (Some(3), &json!(3)));

    // /metrics shows the last run and the repairs.
    let (status, text) = raw_get(serve.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "loop_reconcile_within_tolerance"), 0.0);
    assert_eq!(
        metric(&text, "loop_reconcile_drift{stream=\"subscriptions\"}"),
        2.0
    );
    assert_eq!(
        metric(&text, "loop_reconcile_drift{stream=\"orders\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "loop_reconcile_repairs_total{stream=\"subscriptions\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(&text, "loop_reconcile_repairs_total{stream=\"orders\"}"),
        1.0
    );
    let last = metric(&text, "loop_reconcile_last_run_timestamp_seconds");
    let generated = harness::ms(again["generated_at"].as_str().unwrap()) as f64 / 1000.0;
    assert!((last - generated).abs() < 0.001, "{last} vs {generated}");

    // `read`: every entity at its newest version, the repairs in webhook_events, one
    // report per run.
    write_catalog(
        dir.path(),
        &[
            "subscriptions",
            "orders",
            "webhook_events",
            "reconciliation_reports",
        ],
    );
    let out = harness::read(dir.path(), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mismatches: Vec<String> = out
        .logs()
        .into_iter()
        .filter(|l| l.contains("does not match the schema"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "repairs and reports fit their schemas: {mismatches:?}"
    );
    for stream in ["subscriptions", "orders"] {
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        for r in out.records(stream) {
            let t = harness::ms(r["updatedAt"].as_str().unwrap());
            let e = newest.entry(r["id"].to_string()).or_insert(t);
            *e = (*e).max(t);
        }
        let want: BTreeMap<String, i64> = server
            .records(stream)
            .iter()
            .map(|r| {
                (
                    r["id"].to_string(),
                    harness::ms(r["updatedAt"].as_str().unwrap()),
                )
            })
            .collect();
        assert_eq!(newest, want, "{stream}: every entity at its newest version");
    }
    let repairs: Vec<(String, i64)> = out
        .records("webhook_events")
        .iter()
        .filter(|e| e["topic"].as_str().unwrap().ends_with("/repaired_from_api"))
        .map(|e| {
            (
                e["entity_id"].as_str().unwrap().to_string(),
                harness::ms(e["entity_updated_at"].as_str().unwrap()),
            )
        })
        .collect();
    let mut want: Vec<(String, i64)> = ["subscriptions", "orders"]
        .iter()
        .flat_map(|st| {
            report["streams"][st]["missed_webhooks"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                harness::ms(d["api_updated_at"].as_str().unwrap()),
            )
        })
        .collect();
    let mut got = repairs.clone();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "one repair per missed entity, at the API's version"
    );
    let discovered = run(&["discover", "--config", p(&config)]);
    let names: Vec<&str> = discovered.messages[0]["catalog"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"reconciliation_reports"), "{names:?}");
    let runs = out.records("reconciliation_reports");
    assert_eq!(runs.len(), 8, "one record per reconcile run");
    let seqs: Vec<i64> = runs.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(runs[0]["drift"], 8);
    assert_eq!(runs[7]["drift"], 3);
    assert_eq!(runs[6]["repaired"], 5);
}

#[test]
fn reconcile_errors_exit_2_for_usage_1_for_failures_and_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = fake(harness::small());
    let expect = |code: i32, config: &Path, args: &[&str], needle: &str| {
        let mut all = vec!["reconcile", "--config", p(config)];
        all.extend_from_slice(args);
        let r = run(&all);
        assert_eq!(r.code, Some(code), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "no report on errors: {}", r.stdout);
        assert!(r.stderr.contains(needle), "{needle:?} not in: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    };
    let no_journal = write_json(dir.path(), "a.json", &config_value(&server, json!({})));
    let usage_error = |config: &Path, args: &[&str], needle: &str| expect(2, config, args, needle);
    usage_error(&no_journal, &[], "needs `journal_path`");
    let config = reconcile_config(dir.path(), "b.json", &server, json!({}));
    usage_error(&config, &[], "does not exist: start `source-loop serve`");
    usage_error(
        &config,
        &["--streams", "customers"],
        "\"customers\" is not a stream with webhooks",
    );
    usage_error(
        &config,
        &["--since", "last tuesday"],
        "--since \"last tuesday\" is not a date",
    );
    let bad = write_json(
        dir.path(),
        "c.json",
        &json!({"api_token": "t", "reconcile_max_drift": -1}),
    );
    usage_error(&bad, &[], "reconcile_max_drift");

    // A journal with events, an API that does not answer.
    let serve = start_serve(dir.path());
    let sender = start_fake(&serve, PageOrder::Id);
    touch(
        &sender,
        "subscriptions",
        &[ids(&sender, "subscriptions")[0]],
        Delivery::Plan,
    );
    wait_delivered(&sender);
    let unreachable = write_json(
        dir.path(),
        "d.json",
        &json!({"api_token": "t", "base_url": "http://127.0.0.1:9/admin/2023-10",
                "journal_path": journal(dir.path()), "reconcile_settle_seconds": 0,
                "retry": {"max_attempts": 1}}),
    );
    harness::settle();
    expect(1, &unreachable, &[], "reading the API failed");
}
