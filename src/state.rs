//! Input state parsing (lenient) and the per-stream state shape.
//!
//! Accepted inputs: the per-stream array (`[{"type":"STREAM","stream":{...}}]`), with or
//! without namespace; a single STREAM object; GLOBAL and LEGACY states; a legacy
//! `{stream: state}` object; JSON lines of STATE messages (the last one per stream wins).
//! An empty file, `[]` or `{}` is a first sync.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::config::parse_instant;
use crate::normalize::format_instant;
use crate::streams::{Mode, StreamDef};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid state: {0}")]
pub struct StateError(pub String);

/// Raw per-stream states by stream name.
pub type InputState = HashMap<String, Value>;

pub fn parse_input_state(text: &str) -> Result<InputState, StateError> {
    let mut out = InputState::new();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(out);
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(v) => collect(&v, &mut out)?,
        Err(whole_err) => {
            // JSON lines of STATE messages?
            let mut any = false;
            for (i, line) in trimmed.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    StateError(format!(
                        "the state file is not JSON ({whole_err}) nor JSON lines (line {}: {e}); pass the last STATE message(s) the connector printed, or an empty array [] for a first sync",
                        i + 1
                    ))
                })?;
                collect(&v, &mut out)?;
                any = true;
            }
            if !any {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

fn collect(v: &Value, out: &mut InputState) -> Result<(), StateError> {
    match v {
        Value::Array(items) => {
            for item in items {
                collect(item, out)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            if m.is_empty() {
                return Ok(());
            }
            let ty = m.get("type").and_then(Value::as_str);
            match ty {
                Some("STATE") => match m.get("state") {
                    Some(s) => collect(s, out),
                    None => Err(StateError("a STATE message without `state`".into())),
                },
                Some("STREAM") | None if m.contains_key("stream") => {
                    let stream = &m["stream"];
                    let name = stream
                        .pointer("/stream_descriptor/name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            StateError(
                                "a STREAM state without `stream.stream_descriptor.name`".into(),
                            )
                        })?;
                    let st = stream.get("stream_state").cloned().unwrap_or(Value::Null);
                    out.insert(name.to_string(), st);
                    Ok(())
                }
                Some("GLOBAL") => {
                    let states = v
                        .pointer("/global/stream_states")
                        .and_then(Value::as_array)
                        .ok_or_else(|| {
                            StateError("a GLOBAL state without `global.stream_states`".into())
                        })?;
                    for s in states {
                        let name = s
                            .pointer("/stream_descriptor/name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                StateError("a GLOBAL stream state without a name".into())
                            })?;
                        out.insert(
                            name.to_string(),
                            s.get("stream_state").cloned().unwrap_or(Value::Null),
                        );
                    }
                    Ok(())
                }
                Some("LEGACY") => match m.get("data") {
                    Some(d) => collect(d, out),
                    None => Ok(()),
                },
                Some(other)
                    if m.len() > 1 || m.get("type").is_some() && !m.contains_key("data") =>
                {
                    Err(StateError(format!(
                        "unknown state type {other:?}; expected STREAM, GLOBAL or LEGACY"
                    )))
                }
                _ => {
                    // legacy {stream_name: state, ...} (also Singer's {"bookmarks": {...}})
                    if let Some(Value::Object(b)) = m.get("bookmarks") {
                        for (k, v) in b {
                            out.insert(k.clone(), v.clone());
                        }
                        return Ok(());
                    }
                    for (k, v) in m {
                        if !v.is_object() && !v.is_null() {
                            return Err(StateError(format!(
                                "state for {k:?} must be an object, got {v}"
                            )));
                        }
                        out.insert(k.clone(), v.clone());
                    }
                    Ok(())
                }
            }
        }
        Value::Null => Ok(()),
        other => Err(StateError(format!(
            "the state must be a JSON array of STATE messages (or an object), got {other}"
        ))),
    }
}

/// One record version already emitted at the cursor's second.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Emitted {
    pub id: String,
    pub at_ms: i64,
}

/// The state of one incremental stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamState {
    /// Latest cursor value emitted (UTC, ms).
    pub cursor: Option<DateTime<Utc>>,
    /// Record versions emitted in the cursor's second (not re-emitted next sync).
    pub boundary: Vec<Emitted>,
    /// Webhook journal position folded into this stream, or the journal stream's cursor.
    pub seq: Option<i64>,
}

/// A record's primary key as a stable string.
pub fn id_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl StreamState {
    pub fn from_value(def: &StreamDef, v: &Value) -> Result<StreamState, StateError> {
        let bad = |what: String| {
            StateError(format!(
                "stream {:?}: {what}; fix or delete this stream's entry in the state to resync it from start_date",
                def.name
            ))
        };
        let mut st = StreamState::default();
        let Some(m) = v.as_object() else {
            if v.is_null() {
                return Ok(st);
            }
            return Err(bad(format!("state must be an object, got {v}")));
        };
        if matches!(def.mode, Mode::Journal) {
            if let Some(s) = m.get("seq") {
                st.seq = Some(
                    s.as_i64()
                        .ok_or_else(|| bad(format!("`seq` must be an integer, got {s}")))?,
                );
            }
            return Ok(st);
        }
        if let Some(field) = def.cursor {
            match m.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    st.cursor = Some(parse_instant(s).ok_or_else(|| {
                        bad(format!(
                            "cursor `{field}` {s:?} is not an RFC 3339 date-time"
                        ))
                    })?)
                }
                Some(Value::Number(n)) => {
                    let secs = n.as_i64().ok_or_else(|| {
                        bad(format!("cursor `{field}` {n} is not a whole number"))
                    })?;
                    st.cursor = DateTime::from_timestamp(secs, 0);
                }
                Some(other) => {
                    return Err(bad(format!(
                        "cursor `{field}` must be a date-time string, got {other}"
                    )))
                }
            }
        }
        if let Some(b) = m.get("boundary") {
            let arr = b
                .as_array()
                .ok_or_else(|| bad(format!("`boundary` must be a list, got {b}")))?;
            for e in arr {
                let id = e.get("id").and_then(id_key);
                let at = e.get("at").and_then(Value::as_str).and_then(parse_instant);
                match (id, at) {
                    (Some(id), Some(at)) => st.boundary.push(Emitted {
                        id,
                        at_ms: at.timestamp_millis(),
                    }),
                    _ => return Err(bad(format!("`boundary` entry {e} needs `id` and `at`"))),
                }
            }
        }
        if let Some(s) = m.get("webhook_seq") {
            st.seq = Some(
                s.as_i64()
                    .ok_or_else(|| bad(format!("`webhook_seq` must be an integer, got {s}")))?,
            );
        }
        Ok(st)
    }

    pub fn to_value(&self, def: &StreamDef) -> Value {
        if matches!(def.mode, Mode::Journal) {
            return json!({"seq": self.seq.unwrap_or(0)});
        }
        let mut m = Map::new();
        if let (Some(field), Some(c)) = (def.cursor, self.cursor) {
            m.insert(field.to_string(), Value::String(format_instant(c)));
            let mut b = self.boundary.clone();
            b.sort();
            m.insert(
                "boundary".into(),
                Value::Array(
                    b.iter()
                        .map(|e| {
                            json!({"id": e.id, "at": format_instant(DateTime::from_timestamp_millis(e.at_ms).unwrap_or_default())})
                        })
                        .collect(),
                ),
            );
        }
        if let Some(s) = self.seq {
            m.insert("webhook_seq".into(), json!(s));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::find;

    #[test]
    fn accepts_every_documented_form() {
        let subs = json!({"updatedAt": "2024-01-01T00:00:00.000Z"});
        let forms = [
            json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": subs}}]).to_string(),
            json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions", "namespace": null}, "stream_state": subs}}]).to_string(),
            json!({"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": subs}}).to_string(),
            json!({"subscriptions": subs}).to_string(),
            json!({"type": "LEGACY", "data": {"subscriptions": subs}}).to_string(),
            json!([{"type": "GLOBAL", "global": {"stream_states": [{"stream_descriptor": {"name": "subscriptions"}, "stream_state": subs}]}}]).to_string(),
            format!(
                "{}\n{}\n",
                json!({"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": {"updatedAt": "2020-01-01T00:00:00Z"}}}}),
                json!({"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": subs}}})
            ),
        ];
        for f in forms {
            let s = parse_input_state(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(s.get("subscriptions"), Some(&subs), "{f}");
        }
        for empty in ["", "  ", "[]", "{}", "null"] {
            assert!(parse_input_state(empty).unwrap().is_empty());
        }
    }

    #[test]
    fn malformed_state_is_a_clear_error() {
        assert!(parse_input_state("{not json")
            .unwrap_err()
            .0
            .contains("not JSON"));
        assert!(parse_input_state("42").is_err());
        let def = find("subscriptions").unwrap();
        let e = StreamState::from_value(def, &json!({"updatedAt": "yesterday"})).unwrap_err();
        assert!(
            e.0.contains("subscriptions") && e.0.contains("updatedAt"),
            "{e}"
        );
    }

    #[test]
    fn stream_state_round_trips() {
        let def = find("orders").unwrap();
        let st = StreamState {
            cursor: parse_instant("2024-03-05T10:11:12.345Z"),
            boundary: vec![Emitted {
                id: "7".into(),
                at_ms: 1709633472345,
            }],
            seq: Some(9),
        };
        let v = st.to_value(def);
        assert_eq!(StreamState::from_value(def, &v).unwrap(), st);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the cursor and boundary, the state written is read back the same,
        /// through every input form a platform may hand back.
        #[test]
        fn state_survives_every_round_trip(
            ms in 0i64..4_102_444_800_000,
            ids in proptest::collection::btree_set(0u64..1_000_000, 0..20),
            seq in proptest::option::of(0i64..1_000_000),
        ) {
            let def = find("subscriptions").unwrap();
            let sec = ms.div_euclid(1000);
            let st = StreamState {
                cursor: DateTime::from_timestamp_millis(ms),
                boundary: ids.iter().enumerate().map(|(i, id)| Emitted {
                    id: id.to_string(),
                    at_ms: sec * 1000 + (i as i64 * 37) % 1000,
                }).collect(),
                seq,
            };
            let mut want = st.clone();
            want.boundary.sort();
            let v = st.to_value(def);
            let msg = json!({"type": "STATE", "state": {"type": "STREAM", "stream": {
                "stream_descriptor": {"name": "subscriptions"}, "stream_state": v}}});
            for text in [
                json!([msg["state"]]).to_string(),
                msg.to_string(),
                json!({"subscriptions": v}).to_string(),
            ] {
                let input = parse_input_state(&text).unwrap();
                let mut back = StreamState::from_value(def, &input["subscriptions"]).unwrap();
                back.boundary.sort();
                prop_assert_eq!(&back, &want);
            }
        }
    }
}
