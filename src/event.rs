//! What the sync engine produces, independent of any wire protocol. The protocol layer
//! (`protocol.rs` for Airbyte; a Singer writer later) turns these into messages.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Started,
    Running,
    Complete,
    Incomplete,
}

/// Protocol-level classification of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureType {
    /// The user must change something (token, config, catalog, state).
    Config,
    /// Worth retrying later (rate limits, outages, network).
    Transient,
    /// A bug or an environment problem.
    System,
}

impl FailureType {
    pub fn as_airbyte(self) -> &'static str {
        match self {
            FailureType::Config => "config_error",
            FailureType::Transient => "transient_error",
            FailureType::System => "system_error",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Record {
        stream: &'static str,
        data: Value,
    },
    /// A checkpoint: everything this stream emitted before it is covered by `state`.
    State {
        stream: &'static str,
        state: Value,
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
