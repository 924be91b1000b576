//! Record normalization: UTC millisecond timestamps and exact money.
//!
//! * Every string under a key ending in `At` (createdAt, updatedAt, pausedAt, …) that
//!   parses as RFC 3339 is rewritten as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Values that do
//!   not parse are left untouched (validation reports them). `*Epoch` fields stay numbers.
//! * Money is never a float: numbers are kept as their exact decimal text
//!   (serde_json `arbitrary_precision`). With `money_unit = minor`, integer amounts are
//!   converted to exact major-unit decimal strings using the currency's exponent.

use loop_time::parse_instant;
use serde_json::{Map, Value};

use crate::config::MoneyUnit;

/// The one output form of an instant (`2024-03-05T10:11:12.345Z`), kept here for the
/// modules that import it from `normalize`.
pub use loop_time::format_instant;

/// Keys that hold an amount of money.
pub const MONEY_KEYS: &[&str] = &[
    "price",
    "basePrice",
    "discountedPrice",
    "totalPrice",
    "totalPriceUsd",
    "totalTax",
    "totalDiscount",
    "totalShippingPrice",
    "totalLineItemPrice",
    "totalLineItemDiscountedPrice",
    "deliveryPrice",
];

/// ISO 4217 minor-unit exponent.
pub fn currency_exponent(code: &str) -> u32 {
    match code.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `"539"` with exponent 2 → `"5.39"`; exact, any size. None if not an integer.
pub fn minor_to_major(raw: &str, exponent: u32) -> Option<String> {
    let (neg, digits) = match raw.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e = exponent as usize;
    let padded = format!("{:0>width$}", digits, width = e + 1);
    let (int, frac) = padded.split_at(padded.len() - e);
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut s = String::new();
    if neg && digits.bytes().any(|b| b != b'0') {
        s.push('-');
    }
    s.push_str(int);
    if e > 0 {
        s.push('.');
        s.push_str(frac);
    }
    Some(s)
}

fn is_timestamp_key(k: &str) -> bool {
    k.ends_with("At") || k.ends_with("_at")
}

#[derive(Debug, Clone, Copy)]
pub struct Normalizer {
    pub money_unit: MoneyUnit,
}

impl Normalizer {
    pub fn normalize(&self, record: &mut Value) {
        self.walk(record, None);
    }

    fn walk(&self, v: &mut Value, currency: Option<&str>) {
        match v {
            Value::Object(m) => {
                let own = m
                    .get("currencyCode")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let currency = own.as_deref().or(currency);
                self.object(m, currency);
            }
            Value::Array(items) => {
                for i in items {
                    self.walk(i, currency);
                }
            }
            _ => {}
        }
    }

    fn object(&self, m: &mut Map<String, Value>, currency: Option<&str>) {
        for (k, v) in m.iter_mut() {
            match v {
                Value::String(s) if is_timestamp_key(k) => {
                    if let Some(t) = parse_instant(s) {
                        let n = format_instant(t);
                        if *s != n {
                            *s = n;
                        }
                    }
                }
                Value::Object(_) | Value::Array(_) => self.walk(v, currency),
                _ if self.money_unit == MoneyUnit::Minor && MONEY_KEYS.contains(&k.as_str()) => {
                    let cur = if k == "totalPriceUsd" {
                        Some("USD")
                    } else {
                        currency
                    };
                    let exp = cur.map(currency_exponent).unwrap_or(2);
                    let raw = match v {
                        Value::Number(n) => Some(n.to_string()),
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    };
                    if let Some(major) = raw.as_deref().and_then(|r| minor_to_major(r, exp)) {
                        *v = Value::String(major);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The instant held in `field`, in UTC milliseconds.
pub fn instant_ms(record: &Value, field: &str) -> Option<i64> {
    record
        .get(field)
        .and_then(Value::as_str)
        .and_then(parse_instant)
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, SecondsFormat};
    use proptest::prelude::*;
    use serde_json::json;

    fn major() -> Normalizer {
        Normalizer {
            money_unit: MoneyUnit::Major,
        }
    }

    #[test]
    fn timestamps_known_answers() {
        let cases = [
            ("2024-03-05T10:11:12.000Z", "2024-03-05T10:11:12.000Z"),
            ("2024-03-05T10:11:12Z", "2024-03-05T10:11:12.000Z"),
            ("2024-03-05T10:11:12+00:00", "2024-03-05T10:11:12.000Z"),
            ("2024-03-05T12:11:12.5+02:00", "2024-03-05T10:11:12.500Z"),
            ("2024-03-04T23:30:00-05:00", "2024-03-05T04:30:00.000Z"),
            ("2024-02-29T23:59:59.999999Z", "2024-02-29T23:59:59.999Z"),
            ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00.000Z"),
            ("2023-12-31T23:59:59.1234-00:30", "2024-01-01T00:29:59.123Z"),
        ];
        for (input, want) in cases {
            let mut r = json!({"updatedAt": input, "nested": {"pausedAt": input}, "lines": [{"createdAt": input}]});
            major().normalize(&mut r);
            assert_eq!(r["updatedAt"], want, "{input}");
            assert_eq!(r["nested"]["pausedAt"], want);
            assert_eq!(r["lines"][0]["createdAt"], want);
        }
    }

    #[test]
    fn non_timestamps_and_epochs_untouched() {
        let mut r = json!({"nextBillingDateEpoch": 1709633472, "cancelledAt": null, "status": "2024-01-01T00:00:00Z", "updatedAt": "garbage"});
        let before = r.clone();
        major().normalize(&mut r);
        assert_eq!(r, before);
    }

    #[test]
    fn money_is_exact() {
        let mut r: Value = serde_json::from_str(
            r#"{"currencyCode":"USD","totalPrice":"12345678901234567890.10","totalTax":0.1,"lines":[{"price":"5.39"}]}"#,
        )
        .unwrap();
        major().normalize(&mut r);
        let out = serde_json::to_string(&r).unwrap();
        assert!(out.contains(r#""totalPrice":"12345678901234567890.10""#));
        assert!(out.contains(r#""totalTax":0.1"#));

        let minor = Normalizer {
            money_unit: MoneyUnit::Minor,
        };
        let mut r: Value = serde_json::from_str(
            r#"{"currencyCode":"JPY","totalPrice":1200,"totalPriceUsd":"805","lines":[{"price":99999999999999999999}],
                "other":{"currencyCode":"KWD","price":"-5"}}"#,
        )
        .unwrap();
        minor.normalize(&mut r);
        assert_eq!(r["totalPrice"], "1200");
        assert_eq!(r["totalPriceUsd"], "8.05");
        assert_eq!(r["lines"][0]["price"], "99999999999999999999");
        assert_eq!(r["other"]["price"], "-0.005");
    }

    #[test]
    fn minor_units() {
        assert_eq!(minor_to_major("539", 2).as_deref(), Some("5.39"));
        assert_eq!(minor_to_major("5", 2).as_deref(), Some("0.05"));
        assert_eq!(minor_to_major("0", 2).as_deref(), Some("0.00"));
        assert_eq!(minor_to_major("-0", 2).as_deref(), Some("0.00"));
        assert_eq!(minor_to_major("1200", 0).as_deref(), Some("1200"));
        assert_eq!(minor_to_major("5.39", 2), None);
    }

    fn arb_ts() -> impl Strategy<Value = String> {
        (0i64..4_102_444_800, 0u32..1000, -14i32..14, 0usize..3).prop_map(
            |(s, ms, off_h, style)| {
                let t = DateTime::from_timestamp(s, ms * 1_000_000).unwrap();
                let off = chrono::FixedOffset::east_opt(off_h * 3600).unwrap();
                match style {
                    0 => t
                        .with_timezone(&off)
                        .to_rfc3339_opts(SecondsFormat::Millis, false),
                    1 => t.to_rfc3339_opts(SecondsFormat::Micros, true),
                    _ => format_instant(t),
                }
            },
        )
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent_and_keeps_every_field(ts in arb_ts(), extra in "[a-z]{1,8}", n in any::<i64>()) {
            let mut r = json!({"updatedAt": ts, extra.clone(): n, "deep": {"createdAt": ts, "list": [1, "x", null]}});
            let keys: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
            major().normalize(&mut r);
            let once = r.clone();
            major().normalize(&mut r);
            prop_assert_eq!(&once, &r);
            let after: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
            prop_assert_eq!(keys, after);
            prop_assert_eq!(parse_instant(&ts).unwrap().timestamp_millis(), instant_ms(&r, "updatedAt").unwrap());
            prop_assert!(r["updatedAt"].as_str().unwrap().ends_with('Z'));
        }
    }
}
