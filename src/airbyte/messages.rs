//! Airbyte protocol messages: every engine [`Event`] as its Airbyte message, and the
//! JSON-lines writer on stdout.

use std::io::{self, Write};

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::event::{Event, FailureType, Level, StreamStatus};
use crate::output::Writer;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Airbyte's name for a failure class (`failure_type` of a TRACE ERROR).
pub fn failure_type(f: FailureType) -> &'static str {
    match f {
        FailureType::Config => "config_error",
        FailureType::Transient => "transient_error",
        FailureType::System => "system_error",
    }
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

fn stream_status(stream: &str, status: &str) -> Value {
    json!({
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": now_ms() as f64,
            "stream_status": {"stream_descriptor": descriptor(stream), "status": status}
        }
    })
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
    data: &'a RawValue,
    emitted_at: i64,
}

impl<'a> RecordMessage<'a> {
    fn new(stream: &'a str, data: &'a RawValue) -> Self {
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

/// Convert one engine event into its Airbyte message; `None` for the journal's position,
/// which only `serve --into`'s applier emits and Airbyte has no message for.
pub fn to_airbyte(event: &Event) -> Option<Value> {
    Some(match event {
        Event::JournalCheckpoint { .. } => return None,
        Event::StreamStarted(sel) => stream_status(sel.def.name, "STARTED"),
        // (a record of JSON values always serializes)
        Event::Record { stream, data } => {
            serde_json::to_value(RecordMessage::new(stream, data)).unwrap_or(Value::Null)
        }
        Event::Checkpoint {
            stream,
            state,
            record_count,
        } => json!({
            "type": "STATE",
            "state": {
                "type": "STREAM",
                "stream": {"stream_descriptor": descriptor(stream.name), "stream_state": state.to_value(stream)},
                "sourceStats": {"recordCount": *record_count as f64}
            }
        }),
        Event::Status { stream, status } => stream_status(
            stream,
            match status {
                StreamStatus::Running => "RUNNING",
                StreamStatus::Complete => "COMPLETE",
                StreamStatus::Incomplete => "INCOMPLETE",
            },
        ),
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
            error.insert("failure_type".into(), json!(failure_type(*failure)));
            if let Some(s) = stream {
                error.insert("stream_descriptor".into(), descriptor(s));
            }
            json!({
                "type": "TRACE",
                "trace": {"type": "ERROR", "emitted_at": now_ms() as f64, "error": error}
            })
        }
    })
}

/// Writes one Airbyte message per line. Flushes after every STATE and error so a
/// checkpoint reaches the platform as soon as it is made.
pub struct AirbyteWriter<W: Write> {
    out: W,
}

impl<W: Write> AirbyteWriter<W> {
    pub fn new(out: W) -> Self {
        AirbyteWriter { out }
    }

    pub fn write_value(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }
}

impl<W: Write + Send + 'static> Writer for AirbyteWriter<W> {
    type Output = ();
    type Error = io::Error;

    fn write(&mut self, e: &Event) -> io::Result<()> {
        if let Event::Record { stream, data } = e {
            // the hot path: serialized in place, no intermediate Value
            serde_json::to_writer(&mut self.out, &RecordMessage::new(stream, data))?;
            return self.out.write_all(b"\n");
        }
        if let Some(message) = to_airbyte(e) {
            self.write_value(&message)?;
        }
        if matches!(e, Event::Checkpoint { .. } | Event::Error { .. }) {
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}
