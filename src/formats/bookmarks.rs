//! Singer's bookmark shape, both ways: a checkpoint's neutral state as a stream's
//! bookmark (what `tap-loop` writes and Meltano stores), and a bookmark back into the
//! neutral state. Read here, not in the Singer front end, because `source-loop read` and
//! `sync` accept a Meltano state too (users move between the two modes).
//!
//! A bookmark is the neutral stream state with its cursor under Singer's names:
//! `{"replication_key": "updatedAt", "replication_key_value": "2024-…Z", "boundary":
//! [{"id", "at"}…], "webhook_seq": n}`. `boundary` (the versions already emitted in the
//! cursor's second) and `webhook_seq` (the webhook journal position) are what the engine
//! needs to resume without a gap and without repeating the cursor's second.

use serde_json::{Map, Value};

use crate::state::{InputState, StreamState};
use crate::streams::{self, StreamDef};

const REPLICATION_KEY: &str = "replication_key";
const REPLICATION_KEY_VALUE: &str = "replication_key_value";

/// A `bookmarks` value the engine cannot resume from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BookmarkError {
    #[error("invalid state: `bookmarks` must be an object of stream bookmarks, got {0}")]
    BookmarksNotAnObject(String),
    #[error("invalid state: the bookmark of {stream:?} must be an object, got {got}")]
    BookmarkNotAnObject { stream: String, got: String },
    #[error("invalid state: the bookmark of {stream:?} has replication_key {got:?}, but this stream's is {want:?}; delete the stream's bookmark to resync it")]
    ReplicationKey {
        stream: String,
        want: String,
        got: String,
    },
}

/// A parsed state: the engine's per-stream input, and every bookmark as found (carried
/// into each Singer STATE a run writes, so that streams not read keep theirs).
#[derive(Debug, Default)]
pub struct Bookmarks {
    pub input: InputState,
    pub bookmarks: Map<String, Value>,
}

/// The value of `"bookmarks"`, read: the engine's input and the bookmarks to carry.
pub fn read_bookmarks(b: &Value) -> Result<Bookmarks, BookmarkError> {
    let Value::Object(bookmarks) = b else {
        return Err(BookmarkError::BookmarksNotAnObject(b.to_string()));
    };
    let mut out = Bookmarks::default();
    for (name, bookmark) in bookmarks {
        let carried = match streams::find(name) {
            Some(def) => {
                let neutral = neutral_from_bookmark(def, bookmark)?;
                out.input.insert(name.clone(), neutral.clone());
                bookmark_from_neutral(def, neutral)
            }
            // another version's stream: kept as it is, never read
            None => bookmark.clone(),
        };
        out.bookmarks.insert(name.clone(), carried);
    }
    Ok(out)
}

/// A checkpoint's state as the stream's bookmark; `None` when there is nothing to
/// resume from (a full-table stream).
pub fn to_bookmark(def: &StreamDef, state: &StreamState) -> Option<Value> {
    let v = bookmark_from_neutral(def, state.to_value(def));
    match &v {
        Value::Object(m) if m.is_empty() => None,
        _ => Some(v),
    }
}

/// The neutral state value with its cursor field renamed to Singer's two keys.
pub fn bookmark_from_neutral(def: &StreamDef, v: Value) -> Value {
    let Value::Object(mut m) = v else { return v };
    let Some(cursor) = def.cursor() else {
        return Value::Object(m);
    };
    let Some(value) = m.shift_remove(cursor) else {
        return Value::Object(m);
    };
    let mut out = Map::new();
    out.insert(REPLICATION_KEY.into(), Value::String(cursor.into()));
    out.insert(REPLICATION_KEY_VALUE.into(), value);
    out.extend(m);
    Value::Object(out)
}

/// A bookmark back into the neutral state value (a neutral value passes unchanged).
fn neutral_from_bookmark(def: &StreamDef, v: &Value) -> Result<Value, BookmarkError> {
    let m = match v {
        Value::Object(m) => m,
        Value::Null => return Ok(Value::Null),
        other => {
            return Err(BookmarkError::BookmarkNotAnObject {
                stream: def.name.to_string(),
                got: other.to_string(),
            })
        }
    };
    let mut out = m.clone();
    let key = out.shift_remove(REPLICATION_KEY);
    let value = out.shift_remove(REPLICATION_KEY_VALUE);
    let cursor = def.cursor().unwrap_or_default();
    if let Some(key) = key.filter(|k| !k.is_null()) {
        if key.as_str() != Some(cursor) {
            return Err(BookmarkError::ReplicationKey {
                stream: def.name.to_string(),
                want: cursor.to_string(),
                got: key.as_str().map_or_else(|| key.to_string(), str::to_string),
            });
        }
    }
    if let (Some(value), Some(cursor)) = (value, def.cursor()) {
        out.insert(cursor.into(), value);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::state::parse_bookmarked_state as parse_state;
    use crate::state::Emitted;
    use crate::streams::find;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn meltano_state_and_airbyte_forms_are_read() {
        let cursor = "2024-01-01T00:00:00.000Z";
        for text in [
            json!({"bookmarks": {"subscriptions": {"replication_key": "updatedAt", "replication_key_value": cursor}}}).to_string(),
            json!({"bookmarks": {"subscriptions": {"updatedAt": cursor}}, "currently_syncing": null}).to_string(),
            json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "subscriptions"}, "stream_state": {"updatedAt": cursor}}}]).to_string(),
            json!({"subscriptions": {"updatedAt": cursor}}).to_string(),
        ] {
            let s = parse_state(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.input["subscriptions"]["updatedAt"], cursor, "{text}");
            assert_eq!(
                s.bookmarks["subscriptions"]["replication_key_value"], cursor,
                "{text}"
            );
        }
        // the tap's own output, or its last STATE message
        let value = json!({"bookmarks": {"subscriptions": {"replication_key": "updatedAt", "replication_key_value": cursor}}});
        let older = json!({"bookmarks": {"subscriptions": {"replication_key": "updatedAt", "replication_key_value": "2020-01-01T00:00:00Z"}}});
        for text in [
            json!({"type": "STATE", "value": value}).to_string(),
            format!(
                "{}\n{}\n{}\n",
                json!({"type": "STATE", "value": older}),
                json!({"type": "RECORD", "stream": "subscriptions", "record": {"id": 1}}),
                json!({"type": "STATE", "value": value})
            ),
        ] {
            let s = parse_state(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.input["subscriptions"]["updatedAt"], cursor, "{text}");
        }
        for empty in ["", "{}", "[]", r#"{"bookmarks": {}}"#] {
            assert!(parse_state(empty).unwrap().input.is_empty(), "{empty}");
        }
    }

    #[test]
    fn malformed_bookmarks_are_clear_errors() {
        let e = parse_state(r#"{"bookmarks": []}"#).unwrap_err().to_string();
        assert!(e.contains("bookmarks"), "{e}");
        let e = parse_state(r#"{"bookmarks": {"orders": 5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("orders") && e.contains("object"), "{e}");
        let e = parse_state(
            r#"{"bookmarks": {"orders": {"replication_key": "createdAt", "replication_key_value": "x"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("createdAt") && e.contains("updatedAt"), "{e}");
        assert!(parse_state("{nope")
            .unwrap_err()
            .to_string()
            .contains("JSON"));
    }

    proptest! {
        /// Whatever the cursor, boundary and journal position, a bookmark written is read
        /// back as the same state.
        #[test]
        fn bookmarks_round_trip(
            ms in 0i64..4_102_444_800_000,
            ids in proptest::collection::btree_set(0u64..1_000_000, 0..20),
            seq in proptest::option::of(0i64..1_000_000),
            stream in prop_oneof![Just("subscriptions"), Just("activity_logs"), Just("webhook_events")],
        ) {
            let def = find(stream).unwrap();
            let sec = ms.div_euclid(1000);
            let mut st = StreamState {
                cursor: chrono::DateTime::from_timestamp_millis(ms),
                boundary: ids.iter().enumerate().map(|(i, id)| Emitted {
                    id: id.to_string(),
                    at_ms: sec * 1000 + (i as i64 * 37) % 1000,
                }).collect(),
                seq,
            };
            if stream == "webhook_events" {
                st = StreamState { seq: Some(seq.unwrap_or(0)), ..Default::default() };
            }
            st.boundary.sort();
            let value = json!({"bookmarks": {stream: to_bookmark(def, &st)}});
            let back = parse_state(&value.to_string()).unwrap();
            let mut got = StreamState::from_value(def, &back.input[stream]).unwrap();
            got.boundary.sort();
            prop_assert_eq!(got, st);
        }
    }
}
