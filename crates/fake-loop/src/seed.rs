//! Hand-made data instead of generated data (`fake-loop --data FILE`): a JSON object of
//! stream name → list of records, served exactly as written. Known-answer tests use it
//! (a weekly and a yearly subscription, one cancelled mid-month, one failed order…).
//! Streams left out are empty. Every record needs its key (`id`; `shopifyId` for
//! products) as an integer, unique within its stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Records by stream, checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeedData {
    pub streams: BTreeMap<String, Vec<Value>>,
}

/// A seed file that cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeedError {
    #[error("the seed data is not JSON: {0}")]
    NotJson(String),
    #[error("the seed data must be an object of stream name → list of records, e.g. {{\"subscriptions\": [{{\"id\": 1, ...}}]}}")]
    NotAnObject,
    #[error("unknown stream {0:?} in the seed data: use subscriptions, orders, customers, products or activity_logs")]
    UnknownStream(String),
    #[error("{stream}[{index}]: needs an integer `{key}`")]
    NoKey {
        stream: String,
        index: usize,
        key: &'static str,
    },
    #[error("{stream}: `{key}` {id} appears twice")]
    Duplicate {
        stream: String,
        key: &'static str,
        id: i64,
    },
    #[error("{stream}[{index}]: `{field}` {got} is not an RFC 3339 date-time")]
    BadTime {
        stream: String,
        index: usize,
        field: &'static str,
        got: String,
    },
}

pub(crate) const STREAMS: &[&str] = &[
    "subscriptions",
    "orders",
    "customers",
    "products",
    "activity_logs",
];

pub(crate) fn key_field(stream: &str) -> &'static str {
    if stream == "products" {
        "shopifyId"
    } else {
        "id"
    }
}

impl SeedData {
    pub fn from_json_str(text: &str) -> Result<SeedData, SeedError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SeedError::NotJson(e.to_string()))?;
        let Value::Object(m) = v else {
            return Err(SeedError::NotAnObject);
        };
        let mut streams = BTreeMap::new();
        for (name, records) in m {
            if !STREAMS.contains(&name.as_str()) {
                return Err(SeedError::UnknownStream(name));
            }
            let Value::Array(records) = records else {
                return Err(SeedError::NotAnObject);
            };
            let key = key_field(&name);
            let mut seen = std::collections::BTreeSet::new();
            for (index, r) in records.iter().enumerate() {
                let Some(id) = r.get(key).and_then(Value::as_i64) else {
                    return Err(SeedError::NoKey {
                        stream: name,
                        index,
                        key,
                    });
                };
                if !seen.insert(id) {
                    return Err(SeedError::Duplicate {
                        stream: name,
                        key,
                        id,
                    });
                }
                for field in ["createdAt", "updatedAt"] {
                    if let Some(t) = r.get(field).filter(|t| !t.is_null()) {
                        if t.as_str().and_then(loop_time::parse_rfc3339_ms).is_none() {
                            return Err(SeedError::BadTime {
                                stream: name,
                                index,
                                field,
                                got: t.to_string(),
                            });
                        }
                    }
                }
            }
            streams.insert(name, records);
        }
        Ok(SeedData { streams })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_file_is_checked_before_it_is_served() {
        assert!(SeedData::from_json_str(r#"{"subscriptions": [{"id": 1}]}"#).is_ok());
        assert_eq!(
            SeedData::from_json_str(r#"{"subscription": []}"#),
            Err(SeedError::UnknownStream("subscription".into()))
        );
        assert!(matches!(
            SeedData::from_json_str(r#"{"products": [{"id": 1}]}"#),
            Err(SeedError::NoKey {
                key: "shopifyId",
                ..
            })
        ));
        assert!(matches!(
            SeedData::from_json_str(r#"{"orders": [{"id": 1}, {"id": 1}]}"#),
            Err(SeedError::Duplicate { id: 1, .. })
        ));
        assert!(matches!(
            SeedData::from_json_str(r#"{"orders": [{"id": 1, "updatedAt": "yesterday"}]}"#),
            Err(SeedError::BadTime { .. })
        ));
    }
}
