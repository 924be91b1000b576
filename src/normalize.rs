//! Record normalization: UTC millisecond timestamps and exact money.
//!
//! * Every string under a key ending in `At` (createdAt, updatedAt, pausedAt, …) that
//!   parses as RFC 3339 is rewritten as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Values that do
//!   not parse are left untouched (validation reports them). `*Epoch` fields stay numbers.
//! * Money (the [`MONEY_KEYS`]) is never a float. Its exact decimal text is read (serde_json
//!   `arbitrary_precision` keeps a number's digits), converted from minor units when
//!   `money_unit = minor` (integers only, by the currency's exponent), and written back as one type, the one
//!   the schemas declare ([`money_schema`]): a JSON number with exactly those digits
//!   (`money_type = number`, so destinations create numeric columns) or a decimal string
//!   (`money_type = string`). A value that is not a plain decimal is left as it came, and
//!   validation reports it.

use std::borrow::Cow;
use std::str::FromStr;

use loop_time::parse_instant;
use serde_json::{json, Map, Number, Value};

use crate::config::{MoneyType, MoneyUnit};

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

/// What a money string must look like (`money_type = string`): a plain decimal.
pub const MONEY_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

/// The JSON Schema type of every money field, per `money_type`: one type (and null), so a
/// destination maps it to one column type (`number` → DECIMAL/NUMERIC).
pub fn money_schema(money_type: MoneyType, description: Option<&Value>) -> Value {
    let mut s = match money_type {
        MoneyType::Number => json!({"type": ["number", "null"]}),
        MoneyType::String => json!({"type": ["string", "null"], "pattern": MONEY_PATTERN}),
    };
    if let Some(d) = description {
        s["description"] = d.clone();
    }
    s
}

/// Give every money property of a stream schema (any depth, under `properties` and
/// `items`) the type of [`money_schema`]. The bundled schema files are written in the
/// `number` form; `string` is this rewrite of them.
pub fn type_money_fields(schema: &mut Value, money_type: MoneyType) {
    let Value::Object(m) = schema else { return };
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        for (k, p) in props.iter_mut() {
            if MONEY_KEYS.contains(&k.as_str()) {
                *p = money_schema(money_type, p.get("description"));
            } else {
                type_money_fields(p, money_type);
            }
        }
    }
    if let Some(items) = m.get_mut("items") {
        type_money_fields(items, money_type);
    }
}

/// `s` if it is a plain decimal (`-?[0-9]+(.[0-9]+)?`), with redundant leading zeros of
/// the integer part removed (`007.50` → `7.50`, what JSON's number grammar requires);
/// every other digit is kept. None for anything else (`1e3`, `+5`, `.5`, `5.`, `5,39`).
pub fn plain_decimal(s: &str) -> Option<Cow<'_, str>> {
    let (sign, body) = match s.strip_prefix('-') {
        Some(b) => ("-", b),
        None => ("", s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    let trimmed = int.trim_start_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    if trimmed.len() == int.len() {
        return Some(Cow::Borrowed(s));
    }
    let mut out = format!("{sign}{trimmed}");
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(Cow::Owned(out))
}

fn is_timestamp_key(k: &str) -> bool {
    k.ends_with("At") || k.ends_with("_at")
}

#[derive(Debug, Clone, Copy)]
pub struct Normalizer {
    pub money_unit: MoneyUnit,
    pub money_type: MoneyType,
}

impl Normalizer {
    /// The normalizer the sync settings ask for (`money_unit`, `money_type`).
    pub fn of(sync: &crate::config::SyncSettings) -> Normalizer {
        Normalizer {
            money_unit: sync.money_unit,
            money_type: sync.money_type,
        }
    }

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
                _ if MONEY_KEYS.contains(&k.as_str()) => {
                    // totalPriceUsd is in USD whatever the record's currency.
                    let cur = if k == "totalPriceUsd" {
                        Some("USD")
                    } else {
                        currency
                    };
                    if let Some(amount) = self.amount(v, cur) {
                        *v = amount;
                    }
                }
                _ => {}
            }
        }
    }

    /// A money value in the output form, or None to leave it as it came (not a plain
    /// decimal: validation reports it).
    fn amount(&self, v: &Value, currency: Option<&str>) -> Option<Value> {
        let raw: Cow<str> = match v {
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::String(s) => Cow::Borrowed(s),
            _ => return None,
        };
        let decimal: Cow<str> = match self.money_unit {
            MoneyUnit::Major => plain_decimal(&raw)?,
            // An amount with a fraction is no count of minor units: kept as it is, as before.
            MoneyUnit::Minor => {
                let exp = currency.map(currency_exponent).unwrap_or(2);
                match minor_to_major(&raw, exp) {
                    Some(major) => Cow::Owned(major),
                    None => plain_decimal(&raw)?,
                }
            }
        };
        Some(match self.money_type {
            // The decimal text becomes the number's text, digit for digit (never an f64).
            MoneyType::Number => Value::Number(Number::from_str(&decimal).ok()?),
            MoneyType::String => Value::String(decimal.into_owned()),
        })
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
            money_type: MoneyType::Number,
        }
    }

    fn normalized(n: Normalizer, text: &str) -> String {
        let mut r: Value = serde_json::from_str(text).unwrap();
        n.normalize(&mut r);
        serde_json::to_string(&r).unwrap()
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
    fn money_becomes_numbers_with_the_same_digits() {
        let out = normalized(
            major(),
            r#"{"currencyCode":"USD","totalPrice":"12345678901234567890.10","totalTax":0.1,
                "totalDiscount":"007.50","deliveryPrice":"-0.00","lines":[{"price":"5.390"}]}"#,
        );
        assert!(
            out.contains(r#""totalPrice":12345678901234567890.10,"#),
            "{out}"
        );
        assert!(out.contains(r#""totalTax":0.1,"#), "{out}");
        assert!(out.contains(r#""totalDiscount":7.50,"#), "{out}");
        assert!(out.contains(r#""deliveryPrice":-0.00,"#), "{out}");
        assert!(out.contains(r#""price":5.390}"#), "{out}");
    }

    #[test]
    fn money_that_is_not_a_plain_decimal_is_left_as_it_came() {
        for bad in [
            r#""5,39""#,
            r#""+5""#,
            r#"".5""#,
            r#""5.""#,
            r#""1e3""#,
            r#""""#,
            "1e3",
            "5.39E2",
            "true",
            "null",
            r#"{"amount":"5.39"}"#,
        ] {
            let text = format!(r#"{{"totalPrice":{bad}}}"#);
            // as parsed (serde_json writes `1e3` as `1e+3`), not normalized
            let parsed = serde_json::from_str::<Value>(&text).unwrap().to_string();
            for money_type in [MoneyType::Number, MoneyType::String] {
                let n = Normalizer {
                    money_type,
                    ..major()
                };
                assert_eq!(normalized(n, &text), parsed, "{money_type:?}");
            }
        }
    }

    #[test]
    fn money_as_strings_keeps_the_same_digits() {
        let strings = Normalizer {
            money_unit: MoneyUnit::Major,
            money_type: MoneyType::String,
        };
        let out = normalized(
            strings,
            r#"{"totalPrice":"12345678901234567890.10","totalTax":0.1,"lines":[{"price":5.390,"basePrice":"5.39"}]}"#,
        );
        assert_eq!(
            out,
            r#"{"totalPrice":"12345678901234567890.10","totalTax":"0.1","lines":[{"price":"5.390","basePrice":"5.39"}]}"#
        );
    }

    #[test]
    fn minor_units_become_exact_major_amounts_of_either_type() {
        let text = r#"{"currencyCode":"JPY","totalPrice":1200,"totalPriceUsd":"805","lines":[{"price":99999999999999999999}],
                "other":{"currencyCode":"KWD","price":"-5"},"totalTax":"5.39"}"#;
        let minor = |money_type| Normalizer {
            money_unit: MoneyUnit::Minor,
            money_type,
        };
        let out = normalized(minor(MoneyType::Number), text);
        for want in [
            r#""totalPrice":1200,"#,
            r#""totalPriceUsd":8.05,"#,
            r#""price":99999999999999999999}"#,
            r#""price":-0.005}"#,
            r#""totalTax":5.39}"#, // a fraction is no count of cents: kept as it is
        ] {
            assert!(out.contains(want), "{want} in {out}");
        }
        let out = normalized(minor(MoneyType::String), text);
        for want in [
            r#""totalPrice":"1200","#,
            r#""totalPriceUsd":"8.05","#,
            r#""price":"99999999999999999999"}"#,
            r#""price":"-0.005"}"#,
            r#""totalTax":"5.39"}"#,
        ] {
            assert!(out.contains(want), "{want} in {out}");
        }
    }

    #[test]
    fn plain_decimals() {
        assert_eq!(plain_decimal("5.39").as_deref(), Some("5.39"));
        assert!(matches!(plain_decimal("5.39"), Some(Cow::Borrowed(_))));
        assert_eq!(plain_decimal("-0012.300").as_deref(), Some("-12.300"));
        assert_eq!(plain_decimal("000").as_deref(), Some("0"));
        assert_eq!(plain_decimal("-00.5").as_deref(), Some("-0.5"));
        for bad in [
            "", "-", ".", "5.", ".5", "+5", "5e2", "5.3.9", "٣", " 5", "0x10",
        ] {
            assert_eq!(plain_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn money_schemas_are_one_type_each() {
        let mut s = json!({"properties": {
            "totalPrice": {"type": ["string", "number", "null"], "description": "d"},
            "lines": {"type": ["array", "null"], "items": {"properties": {"price": {}, "sku": {"type": "string"}}}},
        }});
        type_money_fields(&mut s, MoneyType::Number);
        assert_eq!(
            s["properties"]["totalPrice"],
            json!({"type": ["number", "null"], "description": "d"})
        );
        assert_eq!(
            s["properties"]["lines"]["items"]["properties"]["price"],
            json!({"type": ["number", "null"]})
        );
        type_money_fields(&mut s, MoneyType::String);
        assert_eq!(
            s["properties"]["totalPrice"],
            json!({"type": ["string", "null"], "pattern": MONEY_PATTERN, "description": "d"})
        );
        assert_eq!(
            s["properties"]["lines"]["items"]["properties"]["sku"],
            json!({"type": "string"})
        );
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

        #[test]
        fn money_keeps_every_digit_as_a_number_and_back(int in "-?[1-9][0-9]{0,29}|-?0", frac in proptest::option::of("[0-9]{1,12}")) {
            let text = match &frac {
                Some(f) => format!("{int}.{f}"),
                None => int.clone(),
            };
            let mut r = json!({"currencyCode": "EUR", "totalPrice": text});
            major().normalize(&mut r);
            prop_assert!(r["totalPrice"].is_number());
            prop_assert_eq!(serde_json::to_string(&r["totalPrice"]).unwrap(), text.clone());
            let strings = Normalizer { money_type: MoneyType::String, ..major() };
            strings.normalize(&mut r);
            prop_assert_eq!(r["totalPrice"].as_str(), Some(text.as_str()));
        }
    }
}
