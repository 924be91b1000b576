//! What the sync engine produces, independent of any wire protocol. A front end's
//! [`crate::output::Writer`] turns these into its messages (Airbyte today; Singer and a
//! database loader plug in the same way). An event carries everything a writer needs, so
//! a writer never looks anything up: a stream's start carries its definition and mode,
//! a checkpoint its typed state.

use serde_json::value::RawValue;

use crate::state::StreamState;
use crate::streams::{Selected, StreamDef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A stream's progress after it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// The first record is on its way.
    Running,
    Complete,
    Incomplete,
}

/// Who has to act on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureType {
    /// The user must change something (token, config, catalog, state).
    Config,
    /// Worth retrying later (rate limits, outages, network).
    Transient,
    /// A bug or an environment problem.
    System,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A stream begins: its definition (keys, cursor, schema) and how it is read.
    StreamStarted(Selected),
    Record {
        stream: &'static str,
        /// The record as JSON (validated, normalized, serialized once).
        data: Box<RawValue>,
    },
    /// Everything this stream emitted before it is covered by `state`.
    Checkpoint {
        stream: &'static StreamDef,
        state: StreamState,
        /// Records emitted since the stream's previous checkpoint.
        record_count: u64,
    },
    Status {
        stream: &'static str,
        status: StreamStatus,
    },
    Log {
        level: Level,
        message: String,
    },
    Error {
        stream: Option<&'static str>,
        message: String,
        internal: String,
        failure: FailureType,
    },
}

impl Event {
    pub fn log(level: Level, message: impl Into<String>) -> Event {
        Event::Log {
            level,
            message: message.into(),
        }
    }
}

/// Where the engine sends its events.
pub type Sink = tokio::sync::mpsc::Sender<Event>;

/// Set by the front end when its output went away (e.g. `read | head` exited): the engine
/// stops before its next request instead of reading pages nobody will see.
pub type OutputGone = std::sync::Arc<std::sync::atomic::AtomicBool>;
