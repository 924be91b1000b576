//! What a source produces, independent of any wire protocol: the sync engine (the API)
//! and the journal tail (`serve --into`: the webhook journal). A
//! [`crate::output::Writer`] turns these into its output (Airbyte or Singer messages,
//! database rows, a reconciliation's collection). An event carries everything a writer
//! needs, so a writer never looks anything up: a stream's start carries its definition and
//! mode, a checkpoint its typed state.
//!
//! A position comes in two shapes. A sync's position is per stream ([`Event::Checkpoint`]:
//! a stream's cursor, boundary and journal seq). The journal tail's position is one number
//! for the whole journal ([`Event::JournalCheckpoint`]: the last applied `seq`), because
//! one batch of journal events touches several tables at once and must be committed with
//! all of them.

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
    /// Everything emitted before it (records of any stream) covers the webhook journal up
    /// to and including `seq`: a writer that persists positions commits it atomically
    /// with those records.
    JournalCheckpoint {
        seq: i64,
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
