//! The Airbyte front end: every Airbyte shape lives here — the spec, the discovered
//! catalog, the messages out (RECORD, STATE, TRACE, LOG, CONNECTION_STATUS) and failure
//! types. The input forms it shares with other commands (configured catalog, state) are
//! in [`crate::formats`]; the four Airbyte commands (`spec`, `check`, `discover`, `read`)
//! are in [`crate::command`].

pub mod catalog;
pub mod messages;

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::event::{Event, FailureType};

use messages::{to_airbyte, AirbyteWriter};

/// The connection specification (`spec.json` at the top of the repository).
pub const SPEC_JSON: &str = include_str!("../../spec.json");
/// Loop's developer reference: where a user finds how API tokens are made and what the
/// endpoints return (the connector has no public home of its own yet; README.md ships
/// with it).
pub const DOCUMENTATION_URL: &str = "https://developer.loopwork.co/";

pub fn spec_message(connection_specification: &Value) -> Value {
    json!({
        "type": "SPEC",
        "spec": {
            "documentationUrl": DOCUMENTATION_URL,
            "connectionSpecification": connection_specification,
            "supportsIncremental": true,
            "supported_destination_sync_modes": ["overwrite", "append", "append_dedup"]
        }
    })
}

/// Writes one message straight to stdout (for the short commands).
pub fn print_message(v: &Value) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = AirbyteWriter::new(stdout.lock());
    w.write_value(v)?;
    io::stdout().flush()
}

/// A failure before any stream started: a TRACE ERROR on stdout, and the same in one
/// line on stderr.
pub fn print_error(message: &str, failure: FailureType) -> io::Result<()> {
    crate::output::error_line(message);
    let error = Event::Error {
        stream: None,
        message: message.to_string(),
        internal: message.to_string(),
        failure,
    };
    match to_airbyte(&error) {
        Some(m) => print_message(&m),
        None => Ok(()),
    }
}
