//! Singer messages out: every engine [`Event`] as its Singer message on stdout — SCHEMA
//! when a stream starts, RECORD (deselected fields left out, `time_extracted` in UTC),
//! STATE with the whole `{"bookmarks": {...}}` at every checkpoint — and the engine's
//! log lines on stderr, where Singer taps log. The last STATE always follows the last
//! RECORD.
//!
//! A full-table stream's records carry the pass's table version (its start, in unix
//! milliseconds), and an ACTIVATE_VERSION follows the pass once it completed: a target
//! that supports it then drops the rows of older versions (customers or products deleted
//! in Loop); a pass that failed activates nothing, so the target keeps the previous one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Write};

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::config::MoneyType;
use crate::event::{Event, Level, StreamStatus};
use crate::output::Writer;
use crate::streams::{StreamDef, SyncMode};

use super::catalog::FieldSelection;
use crate::formats::bookmarks::to_bookmark;

/// The SCHEMA message of a stream as this run emits it: its schema without the
/// deselected fields, its key, and its bookmark field when read incrementally.
pub fn schema_message(
    def: &StreamDef,
    mode: SyncMode,
    money_type: MoneyType,
    dropped: &HashSet<String>,
) -> Value {
    let mut schema = def.schema_value(money_type);
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.retain(|k, _| !dropped.contains(k));
    }
    let mut m = json!({
        "type": "SCHEMA",
        "stream": def.name,
        "schema": schema,
        "key_properties": [def.primary_key],
    });
    if let (SyncMode::Incremental, Some(cursor)) = (mode, def.cursor()) {
        m["bookmark_properties"] = json!([cursor]);
    }
    m
}

/// RFC 3339 in UTC with milliseconds and `Z`, as every date-time this connector writes.
fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One level of a log line on stderr.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warning",
        Level::Error => "error",
    }
}

/// Writes Singer messages, one per line, to `out`; logs go to `log` (stderr).
pub struct SingerWriter<W: Write, L: Write> {
    out: W,
    log: L,
    money_type: MoneyType,
    /// Fields left out of each stream's records (only streams with any).
    dropped: HashMap<&'static str, HashSet<String>>,
    /// Every stream's bookmark: the input state's, replaced at each checkpoint.
    bookmarks: Map<String, Value>,
    /// A RECORD was written since the last STATE (or no STATE was written yet).
    state_due: bool,
    /// Reused for filtered records.
    scratch: Vec<u8>,
    /// The table version of each full-table stream being read.
    versions: HashMap<&'static str, i64>,
}

impl<W: Write, L: Write> SingerWriter<W, L> {
    /// `bookmarks` is the input state's (carried into every STATE, so that a stream not
    /// read this run keeps its bookmark).
    pub fn new(
        out: W,
        log: L,
        money_type: MoneyType,
        selection: &FieldSelection,
        bookmarks: Map<String, Value>,
    ) -> Self {
        SingerWriter {
            out,
            log,
            money_type,
            dropped: selection
                .dropped
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(s, d)| (*s, d.clone()))
                .collect(),
            bookmarks,
            state_due: true,
            scratch: Vec::new(),
            versions: HashMap::new(),
        }
    }

    fn write_value(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }

    fn write_state(&mut self) -> io::Result<()> {
        let state = json!({"type": "STATE", "value": {"bookmarks": self.bookmarks}});
        self.write_value(&state)?;
        self.state_due = false;
        self.out.flush()
    }

    fn write_record(&mut self, stream: &'static str, data: &RawValue) -> io::Result<()> {
        let record: &[u8] = match self.dropped.get(stream) {
            None => data.get().as_bytes(),
            Some(dropped) => {
                self.scratch.clear();
                let seed = Filtered {
                    dropped,
                    out: &mut self.scratch,
                };
                let mut de = serde_json::Deserializer::from_str(data.get());
                seed.deserialize(&mut de).map_err(io::Error::other)?;
                &self.scratch
            }
        };
        // written by hand: the record's text goes out as it is (no parse, no tree)
        self.out.write_all(br#"{"type":"RECORD","stream":"#)?;
        serde_json::to_writer(&mut self.out, stream)?;
        self.out.write_all(br#","record":"#)?;
        self.out.write_all(record)?;
        if let Some(version) = self.versions.get(stream) {
            write!(self.out, r#","version":{version}"#)?;
        }
        write!(self.out, r#","time_extracted":"{}"}}"#, now_utc())?;
        self.state_due = true;
        self.out.write_all(b"\n")
    }
}

impl<W: Write + Send + 'static, L: Write + Send + 'static> Writer for SingerWriter<W, L> {
    type Output = ();
    type Error = io::Error;

    fn write(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Record { stream, data } => self.write_record(stream, data),
            Event::StreamStarted(sel) => {
                let none = HashSet::new();
                let dropped = self.dropped.get(sel.def.name).unwrap_or(&none);
                let m = schema_message(sel.def, sel.mode, self.money_type, dropped);
                if sel.mode == SyncMode::FullRefresh {
                    let version = chrono::Utc::now().timestamp_millis();
                    self.versions.insert(sel.def.name, version);
                }
                self.write_value(&m)
            }
            Event::Checkpoint { stream, state, .. } => {
                match to_bookmark(stream, state) {
                    Some(b) => self.bookmarks.insert(stream.name.to_string(), b),
                    None => self.bookmarks.remove(stream.name),
                };
                self.write_state()
            }
            Event::Log { level, message } => {
                writeln!(self.log, "tap-loop: {}: {message}", level_name(*level))
            }
            Event::Status {
                stream,
                status: StreamStatus::Complete,
            } => match self.versions.remove(stream) {
                Some(version) => self.write_value(&json!({
                    "type": "ACTIVATE_VERSION",
                    "stream": stream,
                    "version": version,
                })),
                None => Ok(()),
            },
            // the writer thread already printed the error on stderr; the exit code
            // tells Meltano the run failed
            // (only `serve --into`'s applier emits a journal position)
            Event::Error { .. } | Event::Status { .. } | Event::JournalCheckpoint { .. } => Ok(()),
        }
    }

    fn finish(mut self) -> io::Result<()> {
        if self.state_due {
            self.write_state()?;
        }
        self.out.flush()?;
        self.log.flush()
    }
}

/// Streams one JSON object into `out` without the `dropped` keys; the values are copied
/// as raw text, never parsed into a tree.
struct Filtered<'a> {
    dropped: &'a HashSet<String>,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Filtered<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Filtered<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            if self.dropped.contains(key.as_ref()) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.out, key.as_ref()).map_err(A::Error::custom)?;
            self.out.push(b':');
            self.out.extend_from_slice(value.get().as_bytes());
        }
        self.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StreamState;
    use crate::streams::{find, Selected};

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn writer(dropped: &[&str]) -> (SingerWriter<Shared, Shared>, Shared) {
        let out = Shared::default();
        let mut sel = FieldSelection::default();
        sel.dropped.insert(
            "subscriptions",
            dropped.iter().map(|s| s.to_string()).collect(),
        );
        let w = SingerWriter::new(
            out.clone(),
            Shared::default(),
            MoneyType::Number,
            &sel,
            Map::new(),
        );
        (w, out)
    }

    #[test]
    fn deselected_fields_leave_schema_and_record_and_escapes_survive() {
        let (mut w, out) = writer(&["status", "note\"x"]);
        let def = find("subscriptions").unwrap();
        w.write(&Event::StreamStarted(Selected::new(
            def,
            SyncMode::Incremental,
        )))
        .unwrap();
        let rec = json!({"id": 1, "status": "ACTIVE", "note\"x": [1, {"a": 2}], "updatedAt": "2024-01-01T00:00:00.000Z", "title": "é \"q\" \\ \u{1}"});
        w.write(&Event::Record {
            stream: "subscriptions",
            data: raw(rec.clone()),
        })
        .unwrap();
        w.finish().unwrap();
        let lines = out.lines();
        assert_eq!(lines[0]["type"], "SCHEMA");
        assert!(lines[0]["schema"]["properties"].get("status").is_none());
        assert!(lines[0]["schema"]["properties"].get("id").is_some());
        assert_eq!(lines[0]["bookmark_properties"], json!(["updatedAt"]));
        assert_eq!(lines[0]["key_properties"], json!(["id"]));
        let mut want = rec.clone();
        want.as_object_mut().unwrap().remove("status");
        want.as_object_mut().unwrap().remove("note\"x");
        assert_eq!(lines[1]["record"], want);
        assert!(lines[1]["time_extracted"].as_str().unwrap().ends_with('Z'));
        // the last STATE follows the last RECORD
        assert_eq!(lines[2]["type"], "STATE");
    }

    #[test]
    fn a_full_table_pass_versions_its_records_and_activates_only_once_complete() {
        for (status, activated) in [
            (StreamStatus::Complete, true),
            (StreamStatus::Incomplete, false),
        ] {
            let (mut w, out) = writer(&[]);
            let def = find("customers").unwrap();
            w.write(&Event::StreamStarted(Selected::new(
                def,
                SyncMode::FullRefresh,
            )))
            .unwrap();
            for id in [1, 2] {
                w.write(&Event::Record {
                    stream: "customers",
                    data: raw(json!({"id": id})),
                })
                .unwrap();
            }
            w.write(&Event::Status {
                stream: "customers",
                status,
            })
            .unwrap();
            w.finish().unwrap();
            let lines = out.lines();
            let version = &lines[1]["version"];
            assert!(version.as_i64().is_some(), "{:?}", lines[1]);
            assert_eq!(&lines[2]["version"], version, "one version per pass");
            let activate: Vec<&Value> = lines
                .iter()
                .filter(|l| l["type"] == "ACTIVATE_VERSION")
                .collect();
            if activated {
                assert_eq!(
                    activate,
                    [
                        &json!({"type": "ACTIVATE_VERSION", "stream": "customers", "version": version})
                    ]
                );
            } else {
                assert!(activate.is_empty(), "a failed pass activates nothing");
            }
        }
        // incremental streams carry no version
        let (mut w, out) = writer(&[]);
        let def = find("subscriptions").unwrap();
        w.write(&Event::StreamStarted(Selected::new(
            def,
            SyncMode::Incremental,
        )))
        .unwrap();
        w.write(&Event::Record {
            stream: "subscriptions",
            data: raw(json!({"id": 1})),
        })
        .unwrap();
        w.finish().unwrap();
        assert!(out.lines()[1].get("version").is_none());
    }

    #[test]
    fn every_state_carries_all_bookmarks_in_singer_form() {
        let out = Shared::default();
        let mut input = Map::new();
        input.insert("orders".into(), json!({"replication_key": "updatedAt", "replication_key_value": "2020-01-01T00:00:00.000Z"}));
        let mut w = SingerWriter::new(
            out.clone(),
            Shared::default(),
            MoneyType::Number,
            &FieldSelection::default(),
            input,
        );
        let def = find("subscriptions").unwrap();
        let state = StreamState {
            cursor: crate::config::parse_instant("2024-03-05T10:11:12.345Z"),
            boundary: vec![],
            seq: Some(4),
        };
        w.write(&Event::Checkpoint {
            stream: def,
            state,
            record_count: 0,
        })
        .unwrap();
        w.finish().unwrap();
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "no second STATE without a RECORD after it");
        let b = &lines[0]["value"]["bookmarks"];
        assert_eq!(
            b["orders"]["replication_key_value"],
            "2020-01-01T00:00:00.000Z"
        );
        assert_eq!(
            b["subscriptions"],
            json!({"replication_key": "updatedAt", "replication_key_value": "2024-03-05T10:11:12.345Z", "boundary": [], "webhook_seq": 4})
        );
    }
}
