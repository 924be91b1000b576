//! The Airbyte protocol: message shapes and the JSON-lines writer on stdout.
//!
//! Only this module knows what an Airbyte message looks like; the engine emits
//! [`Event`]s.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use crate::event::{Event, Level, StreamStatus};

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn spec_message(connection_specification: &Value) -> Value {
    json!({
        "type": "SPEC",
        "spec": {
            "documentationUrl": "https://github.com/source-loop/source-loop#readme",
            "connectionSpecification": connection_specification,
            "supportsIncremental": true,
            "supported_destination_sync_modes": ["overwrite", "append", "append_dedup"]
        }
    })
}

pub fn connection_status(ok: bool, message: &str) -> Value {
    json!({
        "type": "CONNECTION_STATUS",
        "connectionStatus": {
            "status": if ok { "SUCCEEDED" } else { "FAILED" },
            "message": message
        }
    })
}

pub fn log_message(level: Level, message: &str) -> Value {
    let level = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    json!({"type": "LOG", "log": {"level": level, "message": message}})
}

fn descriptor(stream: &str) -> Value {
    json!({"name": stream})
}

/// The RECORD message, borrowing the record (no copy on the hot path).
#[derive(serde::Serialize)]
struct RecordMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    record: RecordBody<'a>,
}

#[derive(serde::Serialize)]
struct RecordBody<'a> {
    stream: &'a str,
    data: &'a Value,
    emitted_at: i64,
}

impl<'a> RecordMessage<'a> {
    fn new(stream: &'a str, data: &'a Value) -> Self {
        RecordMessage {
            kind: "RECORD",
            record: RecordBody {
                stream,
                data,
                emitted_at: now_ms(),
            },
        }
    }
}

/// Convert one engine event into its Airbyte message.
pub fn to_airbyte(event: &Event) -> Value {
    match event {
        Event::Record { stream, data } => {
            serde_json::to_value(RecordMessage::new(stream, data)).expect("a record serializes")
        }
        Event::State {
            stream,
            state,
            record_count,
        } => json!({
            "type": "STATE",
            "state": {
                "type": "STREAM",
                "stream": {"stream_descriptor": descriptor(stream), "stream_state": state},
                "sourceStats": {"recordCount": *record_count as f64}
            }
        }),
        Event::Status { stream, status } => {
            let status = match status {
                StreamStatus::Started => "STARTED",
                StreamStatus::Running => "RUNNING",
                StreamStatus::Complete => "COMPLETE",
                StreamStatus::Incomplete => "INCOMPLETE",
            };
            json!({
                "type": "TRACE",
                "trace": {
                    "type": "STREAM_STATUS",
                    "emitted_at": now_ms() as f64,
                    "stream_status": {"stream_descriptor": descriptor(stream), "status": status}
                }
            })
        }
        Event::Log { level, message } => log_message(*level, message),
        Event::Error {
            stream,
            message,
            internal,
            failure,
        } => {
            let mut error = Map::new();
            error.insert("message".into(), json!(message));
            error.insert("internal_message".into(), json!(internal));
            error.insert("failure_type".into(), json!(failure.as_airbyte()));
            if let Some(s) = stream {
                error.insert("stream_descriptor".into(), descriptor(s));
            }
            json!({
                "type": "TRACE",
                "trace": {"type": "ERROR", "emitted_at": now_ms() as f64, "error": error}
            })
        }
    }
}

/// Writes one JSON message per line. Flushes after every STATE so a checkpoint
/// reaches the platform as soon as it is made.
pub struct LineWriter<W: Write> {
    out: W,
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W) -> Self {
        LineWriter { out }
    }

    pub fn write_value(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }

    pub fn write_event(&mut self, e: &Event) -> io::Result<()> {
        if let Event::Record { stream, data } = e {
            // the hot path: serialized in place, no intermediate Value
            serde_json::to_writer(&mut self.out, &RecordMessage::new(stream, data))?;
            return self.out.write_all(b"\n");
        }
        self.write_value(&to_airbyte(e))?;
        if matches!(e, Event::State { .. } | Event::Error { .. }) {
            self.out.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
