//! Timestamps, money and schema validation through the binary.

use fake_loop::{FakeConfig, FakeServer, Mutation};
use serde_json::{json, Value};
use source_loop::normalize::MONEY_KEYS;

use crate::harness::*;

fn walk<'a>(v: &'a Value, key: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.ends_with("At") {
                    out.push((format!("{key}.{k}"), x));
                }
                walk(x, k, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
        _ => {}
    }
}

#[test]
fn every_timestamp_goes_out_as_utc_milliseconds() {
    let server = fake(FakeConfig {
        messy_timestamps: true,
        ..small()
    });
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({}));
    write_catalog(dir.path(), ALL);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0));
    let re = |s: &str| {
        s.len() == 24
            && s.ends_with('Z')
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
            && &s[19..20] == "."
    };
    let mut n = 0;
    for s in ALL {
        for rec in r.records(s) {
            let mut ts = Vec::new();
            walk(rec, s, &mut ts);
            for (path, v) in ts {
                if let Some(s) = v.as_str() {
                    assert!(re(s), "{path} = {s}");
                    n += 1;
                }
            }
        }
    }
    assert!(n > 1000);
    // the instants are the fake's instants
    let raw: std::collections::HashMap<String, i64> = server
        .records("subscriptions")
        .iter()
        .map(|r| (r["id"].to_string(), ms(r["updatedAt"].as_str().unwrap())))
        .collect();
    for rec in r.records("subscriptions") {
        assert_eq!(
            raw[&rec["id"].to_string()],
            ms(rec["updatedAt"].as_str().unwrap())
        );
    }
    assert!(
        r.logs()
            .iter()
            .all(|l| !l.contains("does not match the schema")),
        "fake data is valid"
    );
}

/// Every money value of `v` (any depth), with its path.
fn amounts<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if MONEY_KEYS.contains(&k.as_str()) && !x.is_object() {
                    out.push((p, x));
                } else {
                    amounts(x, p, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                amounts(x, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every amount of every record of `streams`, as the fake holds it (decimal strings) and
/// as `read` emitted it, matched by key and path.
fn amounts_in_and_out(
    server: &FakeServer,
    r: &Run,
    streams: &[&str],
) -> Vec<(String, Value, Value)> {
    let mut pairs = Vec::new();
    for &stream in streams {
        let key = if stream == "products" {
            "shopifyId"
        } else {
            "id"
        };
        let fake: std::collections::HashMap<String, Value> = server
            .records(stream)
            .into_iter()
            .map(|rec| (rec[key].to_string(), rec))
            .collect();
        for rec in r.records(stream) {
            let orig = &fake[&rec[key].to_string()];
            let (mut a, mut b) = (Vec::new(), Vec::new());
            amounts(orig, stream.to_string(), &mut a);
            amounts(rec, stream.to_string(), &mut b);
            assert_eq!(a.len(), b.len(), "{stream} {key}={}", rec[key]);
            for ((path, want), (path_out, got)) in a.into_iter().zip(b) {
                assert_eq!(path, path_out);
                pairs.push((path, want.clone(), got.clone()));
            }
        }
    }
    pairs
}

const MONEY_STREAMS: &[&str] = &["subscriptions", "orders", "products"];

/// A read of the streams with amounts under `config`: every amount as the fake holds it and
/// as it went out. The records match their schemas (as typed by that config).
fn read_amounts(config: Value) -> Vec<(String, Value, Value)> {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, config.clone());
    write_catalog(dir.path(), MONEY_STREAMS);
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0));
    let pairs = amounts_in_and_out(&server, &r, MONEY_STREAMS);
    assert!(pairs.len() > 500, "{} amounts", pairs.len());
    let mismatches: Vec<String> = r
        .logs()
        .into_iter()
        .filter(|l| l.contains("does not match the schema"))
        .collect();
    assert!(mismatches.is_empty(), "{config}: {mismatches:?}");
    pairs
}

#[test]
fn money_goes_out_as_numbers_with_exactly_the_fakes_digits() {
    for (path, want, got) in read_amounts(json!({})) {
        let want = want.as_str().expect("the fake sends decimal strings");
        assert!(got.is_number(), "{path}: {got} is not a JSON number");
        // the number's text is the fake's decimal text, digit for digit (never an f64)
        assert_eq!(got.to_string(), want, "{path}");
    }
}

#[test]
fn money_type_string_keeps_the_fakes_decimal_strings() {
    for (path, want, got) in read_amounts(json!({"money_type": "string"})) {
        assert!(got.is_string(), "{path}: {got}");
        assert_eq!(got, want, "{path}");
    }
}

#[test]
fn invalid_records_are_reported_in_each_mode() {
    let server = fake(small());
    let bad_id = server.records("subscriptions")[3]["id"].as_i64().unwrap();
    server.mutate(Mutation::Patch {
        stream: "subscriptions".into(),
        id: bad_id,
        fields: serde_json::from_value(json!({"isPrepaid": "yes", "completedOrdersCount": "many"}))
            .unwrap(),
    });
    let n = server.records("subscriptions").len();
    settle();
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), &["subscriptions"]);

    write_config(dir.path(), &server, json!({"on_invalid_record": "emit"}));
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.records("subscriptions").len(), n);
    let warn = r
        .logs()
        .into_iter()
        .find(|l| l.contains("does not match the schema"))
        .expect("a WARN names the record");
    assert!(
        warn.contains(&format!("id={bad_id}"))
            && (warn.contains("/isPrepaid") || warn.contains("/completedOrdersCount")),
        "{warn}"
    );
    let summary = r
        .logs()
        .into_iter()
        .find(|l| l.starts_with("subscriptions: complete"))
        .unwrap();
    assert!(summary.contains("1 invalid (0 skipped)"), "{summary}");

    write_config(dir.path(), &server, json!({"on_invalid_record": "skip"}));
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.records("subscriptions").len(), n - 1);
    assert!(r
        .logs()
        .iter()
        .any(|l| l.contains("skipped record") && l.contains(&bad_id.to_string())));
    assert!(r.logs().iter().any(|l| l.contains("1 invalid (1 skipped)")));

    write_config(dir.path(), &server, json!({"on_invalid_record": "fail"}));
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(1));
    let e = &r.errors()[0];
    assert_eq!(e["failure_type"], "config_error");
    assert!(e["message"].as_str().unwrap().contains(&bad_id.to_string()));
    assert_eq!(r.statuses("subscriptions").last().unwrap(), "INCOMPLETE");
}

#[test]
fn minor_units_become_exact_major_amounts_and_new_fields_pass_through() {
    let server = fake(small());
    let orders = server.records("orders");
    let usd = orders.iter().find(|o| o["currencyCode"] == "USD").unwrap()["id"]
        .as_i64()
        .unwrap();
    server.mutate(Mutation::Patch {
        stream: "orders".into(),
        id: usd,
        fields: serde_json::from_value(json!({
            "totalPrice": 123456789012345678u64, "totalTax": "5", "loyaltyTier": {"name": "gold", "points": 12}
        }))
        .unwrap(),
    });
    settle();
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), &["orders"]);
    write_config(dir.path(), &server, json!({"money_unit": "minor"}));
    let r = read(dir.path(), None);
    assert_eq!(r.code, Some(0));
    let out = r
        .records("orders")
        .into_iter()
        .find(|o| o["id"].as_i64() == Some(usd))
        .unwrap()
        .clone();
    // exact major units, as JSON numbers (money_type's default) with exactly these digits
    assert_eq!(out["totalPrice"].to_string(), "1234567890123456.78");
    assert_eq!(out["totalTax"].to_string(), "0.05");
    assert!(out["totalPrice"].is_number() && out["totalTax"].is_number());
    assert_eq!(
        out["loyaltyTier"],
        json!({"name": "gold", "points": 12}),
        "unknown fields pass through"
    );
    assert!(
        r.logs()
            .iter()
            .all(|l| !l.contains("does not match the schema")),
        "new upstream fields are allowed by the schemas: {:?}",
        r.logs()
    );
}
