//! Timestamps, money and schema validation through the binary.

use fake_loop::{FakeConfig, Mutation};
use serde_json::{json, Value};

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

#[test]
fn money_is_passed_through_exactly() {
    let server = fake(small());
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server, json!({}));
    write_catalog(dir.path(), &["orders"]);
    let r = read(dir.path(), None);
    let raw: std::collections::HashMap<String, Value> = server
        .records("orders")
        .into_iter()
        .map(|r| (r["id"].to_string(), r))
        .collect();
    for rec in r.records("orders") {
        let orig = &raw[&rec["id"].to_string()];
        for k in [
            "totalPrice",
            "totalPriceUsd",
            "totalTax",
            "totalDiscount",
            "totalShippingPrice",
            "currencyCode",
        ] {
            assert_eq!(rec[k], orig[k], "{k}");
        }
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
    assert_eq!(out["totalPrice"], "1234567890123456.78");
    assert_eq!(out["totalTax"], "0.05");
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
