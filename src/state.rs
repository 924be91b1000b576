//! A stream's resumable state, independent of any protocol: the cursor instant, the
//! record versions emitted in the cursor's second, and the webhook journal position.
//! The front ends wrap it in their own messages (`airbyte::state` reads and writes
//! Airbyte's forms); its JSON shape here is what lands inside them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::config::parse_instant;
use crate::normalize::format_instant;
use crate::streams::{StreamDef, StreamKind};

/// Raw per-stream states by stream name, as a front end found them in its input.
pub type InputState = HashMap<String, Value>;

/// A stream's saved state that cannot be resumed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid state: stream {stream:?}: {problem}; fix or delete this stream's entry in the state to resync it from start_date")]
pub struct StreamStateError {
    pub stream: &'static str,
    pub problem: StateProblem,
}

/// What is wrong inside one stream's state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateProblem {
    #[error("state must be an object, got {0}")]
    NotAnObject(String),
    #[error("`{field}` must be an integer, got {got}")]
    NotAnInteger { field: &'static str, got: String },
    #[error("cursor `{field}` {got} is not an RFC 3339 date-time")]
    BadCursor { field: &'static str, got: String },
    #[error("cursor `{field}` {got} is not a whole number")]
    FractionalCursor { field: &'static str, got: String },
    #[error("cursor `{field}` must be a date-time string, got {got}")]
    CursorType { field: &'static str, got: String },
    #[error("`boundary` must be a list, got {0}")]
    BoundaryNotAList(String),
    #[error("`boundary` entry {0} needs `id` and `at`")]
    BoundaryEntry(String),
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
    /// Record that version `at_ms` of `id` was emitted, in cursor order: the cursor moves
    /// to it, and the boundary holds every version emitted in the cursor's second.
    pub fn advance(&mut self, id: String, at_ms: i64) {
        let sec = at_ms.div_euclid(1000);
        match self.cursor.map(|c| c.timestamp_millis().div_euclid(1000)) {
            Some(cur) if cur > sec => return,
            Some(cur) if cur == sec => {}
            _ => self.boundary.clear(),
        }
        if self.cursor.is_none_or(|c| c.timestamp_millis() < at_ms) {
            self.cursor = DateTime::from_timestamp_millis(at_ms);
        }
        self.boundary.push(Emitted { id, at_ms });
    }

    pub fn from_value(def: &StreamDef, v: &Value) -> Result<StreamState, StreamStateError> {
        let bad = |problem: StateProblem| StreamStateError {
            stream: def.name,
            problem,
        };
        let integer = |field: &'static str, v: &Value| {
            v.as_i64().ok_or_else(|| {
                bad(StateProblem::NotAnInteger {
                    field,
                    got: v.to_string(),
                })
            })
        };
        let mut st = StreamState::default();
        let Some(m) = v.as_object() else {
            if v.is_null() {
                return Ok(st);
            }
            return Err(bad(StateProblem::NotAnObject(v.to_string())));
        };
        let field = match def.kind {
            StreamKind::Journal(_) => {
                if let Some(s) = m.get("seq") {
                    st.seq = Some(integer("seq", s)?);
                }
                return Ok(st);
            }
            StreamKind::Incremental(w) => Some(w.cursor),
            StreamKind::FullRefresh(_) => None,
        };
        if let Some(field) = field {
            match m.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    st.cursor = Some(parse_instant(s).ok_or_else(|| {
                        bad(StateProblem::BadCursor {
                            field,
                            got: format!("{s:?}"),
                        })
                    })?)
                }
                Some(Value::Number(n)) => {
                    let secs = n.as_i64().ok_or_else(|| {
                        bad(StateProblem::FractionalCursor {
                            field,
                            got: n.to_string(),
                        })
                    })?;
                    st.cursor = DateTime::from_timestamp(secs, 0);
                }
                Some(other) => {
                    return Err(bad(StateProblem::CursorType {
                        field,
                        got: other.to_string(),
                    }))
                }
            }
        }
        if let Some(b) = m.get("boundary") {
            let arr = b
                .as_array()
                .ok_or_else(|| bad(StateProblem::BoundaryNotAList(b.to_string())))?;
            for e in arr {
                let id = e.get("id").and_then(id_key);
                let at = e.get("at").and_then(Value::as_str).and_then(parse_instant);
                match (id, at) {
                    (Some(id), Some(at)) => st.boundary.push(Emitted {
                        id,
                        at_ms: at.timestamp_millis(),
                    }),
                    _ => return Err(bad(StateProblem::BoundaryEntry(e.to_string()))),
                }
            }
        }
        if let Some(s) = m.get("webhook_seq") {
            st.seq = Some(integer("webhook_seq", s)?);
        }
        Ok(st)
    }

    pub fn to_value(&self, def: &StreamDef) -> Value {
        let field = match def.kind {
            StreamKind::Journal(_) => return json!({"seq": self.seq.unwrap_or(0)}),
            StreamKind::Incremental(w) => Some(w.cursor),
            StreamKind::FullRefresh(_) => None,
        };
        let mut m = Map::new();
        if let (Some(field), Some(c)) = (field, self.cursor) {
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
    use proptest::prelude::*;

    proptest! {
        /// Whatever versions are emitted in cursor order, on top of whatever state: the
        /// cursor is the newest instant emitted, and the boundary is exactly the versions
        /// emitted in the cursor's second (what the next sync must not send again).
        #[test]
        fn advancing_keeps_the_cursor_and_its_seconds_versions(
            start in proptest::option::of(0i64..10_000),
            mut emitted in proptest::collection::vec((0u32..50, 0i64..10_000), 0..60),
        ) {
            emitted.sort_by_key(|(_, t)| *t);
            let mut st = StreamState::default();
            let mut all: Vec<(String, i64)> = Vec::new();
            if let Some(t) = start {
                st.advance("start".into(), t);
                all.push(("start".into(), t));
            }
            for (id, t) in &emitted {
                // in cursor order from the saved cursor's second on, as a sync emits
                if start.is_some_and(|s| t.div_euclid(1000) < s.div_euclid(1000)) {
                    continue;
                }
                st.advance(id.to_string(), *t);
                all.push((id.to_string(), *t));
            }
            let newest = all.iter().map(|(_, t)| *t).max();
            prop_assert_eq!(st.cursor.map(|c| c.timestamp_millis()), newest);
            if let Some(newest) = newest {
                let sec = newest.div_euclid(1000);
                let mut want: Vec<Emitted> = all
                    .iter()
                    .filter(|(_, t)| t.div_euclid(1000) == sec)
                    .map(|(id, t)| Emitted { id: id.clone(), at_ms: *t })
                    .collect();
                let mut got = st.boundary.clone();
                want.sort();
                got.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
