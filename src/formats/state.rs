//! Every state form a front end reads, in one place: whatever a platform hands back
//! becomes the engine's [`InputState`] (per-stream raw states). Accepted: Airbyte's
//! per-stream array (`[{"type":"STREAM","stream":{...}}]`), with or without namespace; a
//! single STREAM object; GLOBAL and LEGACY states; a legacy `{stream: state}` object; a
//! Singer state (`{"bookmarks": {...}}`, read by [`super::bookmarks`]), also as a Singer
//! STATE message or a tap's output; JSON lines of STATE messages (the last one per stream
//! wins). An empty file, `[]` or `{}` is a first sync.
//!
//! Out is each front end's own business: `airbyte::messages` wraps each checkpoint in a
//! per-stream STATE message, `singer::messages` writes bookmarks.

use serde_json::Value;

use super::bookmarks::{bookmark_from_neutral, read_bookmarks, BookmarkError, Bookmarks};
use crate::state::InputState;
use crate::streams;

/// A state file that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateFormError {
    #[error("invalid state: the state file is not JSON ({whole}) nor JSON lines (line {line}: {reason}); pass the last STATE message(s) the connector printed, or an empty array [] for a first sync")]
    NotJson {
        whole: String,
        line: usize,
        reason: String,
    },
    #[error("invalid state: {0}")]
    Missing(&'static str),
    #[error("invalid state: unknown state type {0:?}; expected STREAM, GLOBAL or LEGACY")]
    UnknownType(String),
    #[error("invalid state: state for {stream:?} must be an object, got {got}")]
    StreamNotAnObject { stream: String, got: String },
    #[error(
        "invalid state: the state must be a JSON array of STATE messages (or an object), got {0}"
    )]
    NotAnArrayOrObject(String),
    #[error(transparent)]
    Bookmarks(#[from] BookmarkError),
}

pub fn parse_input_state(text: &str) -> Result<InputState, StateFormError> {
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
                let v: Value = serde_json::from_str(line).map_err(|e| StateFormError::NotJson {
                    whole: whole_err.to_string(),
                    line: i + 1,
                    reason: e.to_string(),
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

/// `{"stream_descriptor": {"name": ...}, "stream_state": ...}` into `out`.
fn insert_stream_state(
    v: &Value,
    unnamed: &'static str,
    out: &mut InputState,
) -> Result<(), StateFormError> {
    let name = v
        .pointer("/stream_descriptor/name")
        .and_then(Value::as_str)
        .ok_or(StateFormError::Missing(unnamed))?;
    let state = v.get("stream_state").cloned().unwrap_or(Value::Null);
    out.insert(name.to_string(), state);
    Ok(())
}

fn collect(v: &Value, out: &mut InputState) -> Result<(), StateFormError> {
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
                    None => Err(StateFormError::Missing("a STATE message without `state`")),
                },
                Some("STREAM") | None if m.contains_key("stream") => insert_stream_state(
                    &m["stream"],
                    "a STREAM state without `stream.stream_descriptor.name`",
                    out,
                ),
                Some("GLOBAL") => {
                    let states = v
                        .pointer("/global/stream_states")
                        .and_then(Value::as_array)
                        .ok_or(StateFormError::Missing(
                            "a GLOBAL state without `global.stream_states`",
                        ))?;
                    for s in states {
                        insert_stream_state(s, "a GLOBAL stream state without a name", out)?;
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
                    Err(StateFormError::UnknownType(other.to_string()))
                }
                _ => {
                    // Singer's {"bookmarks": {...}} (tap-loop's, as Meltano stores it)
                    if let Some(b @ Value::Object(_)) = m.get("bookmarks") {
                        out.extend(read_bookmarks(b)?.input);
                        return Ok(());
                    }
                    // legacy {stream_name: state, ...}
                    for (k, v) in m {
                        if !v.is_object() && !v.is_null() {
                            return Err(StateFormError::StreamNotAnObject {
                                stream: k.clone(),
                                got: v.to_string(),
                            });
                        }
                        out.insert(k.clone(), v.clone());
                    }
                    Ok(())
                }
            }
        }
        Value::Null => Ok(()),
        other => Err(StateFormError::NotAnArrayOrObject(other.to_string())),
    }
}

/// A Singer STATE message's value (`{"type": "STATE", "value": …}`), or `v` itself.
fn state_value(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.get("type").and_then(Value::as_str) == Some("STATE") => {
            m.remove("value").unwrap_or(Value::Object(m))
        }
        other => other,
    }
}

/// The state as Meltano passes it (`{"bookmarks": …}`), a Singer STATE message, a tap's
/// output (the last STATE line wins), or any Airbyte form; with every bookmark as found,
/// for a Singer writer to carry.
pub fn parse_bookmarked_state(text: &str) -> Result<Bookmarks, StateFormError> {
    let text = text.trim();
    let value = serde_json::from_str::<Value>(text).ok().or_else(|| {
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .find(|v| v["type"] == "STATE" && v.get("value").is_some())
    });
    if let Some(Value::Object(top)) = value.map(state_value) {
        if let Some(b) = top.get("bookmarks") {
            return Ok(read_bookmarks(b)?);
        }
    }
    // the Airbyte forms
    let mut out = Bookmarks {
        input: parse_input_state(text)?,
        ..Default::default()
    };
    for (name, v) in &out.input {
        let bookmark = match streams::find(name) {
            Some(def) => bookmark_from_neutral(def, v.clone()),
            None => v.clone(),
        };
        out.bookmarks.insert(name.clone(), bookmark);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Emitted, StreamState};
    use crate::streams::find;
    use chrono::DateTime;
    use serde_json::json;

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
        // what tap-loop wrote and Meltano stores: the same cursor
        let singer = json!({"bookmarks": {"subscriptions": {"replication_key": "updatedAt", "replication_key_value": "2024-01-01T00:00:00Z"}}});
        let s = parse_input_state(&singer.to_string()).unwrap();
        assert_eq!(s["subscriptions"]["updatedAt"], "2024-01-01T00:00:00Z");
        for empty in ["", "  ", "[]", "{}", "null"] {
            assert!(parse_input_state(empty).unwrap().is_empty());
        }
    }

    #[test]
    fn malformed_state_is_a_clear_error() {
        assert!(parse_input_state("{not json")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(parse_input_state("42").is_err());
        let def = find("subscriptions").unwrap();
        let e = StreamState::from_value(def, &json!({"updatedAt": "yesterday"})).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("subscriptions") && e.contains("updatedAt"),
            "{e}"
        );
    }

    #[test]
    fn stream_state_round_trips() {
        let def = find("orders").unwrap();
        let st = StreamState {
            cursor: crate::config::parse_instant("2024-03-05T10:11:12.345Z"),
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
