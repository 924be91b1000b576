//! The emit pipeline of one stream: validation (per `on_invalid_record`), the RUNNING
//! status before the first record, record counts between checkpoints, and log lines. Every
//! record and checkpoint of a stream goes through its [`Emitter`].

use serde_json::value::RawValue;
use serde_json::Value;

use crate::client::{RetryNotice, RetryObserver};
use crate::config::OnInvalidRecord;
use crate::event::{Event, Level, OutputGone, Sink, StreamStatus};
use crate::normalize::Normalizer;
use crate::state::{id_key, StreamState};
use crate::streams::StreamDef;
use crate::validate::RecordValidator;

use super::{StreamReport, SyncError};

pub(crate) struct Emitter {
    pub def: &'static StreamDef,
    sink: Sink,
    /// Set when the front end's output went away before the engine noticed.
    output_gone: OutputGone,
    pub normalizer: Normalizer,
    validator: Option<RecordValidator>,
    on_invalid: OnInvalidRecord,
    running_sent: bool,
    /// Records emitted since the stream's previous checkpoint.
    since_checkpoint: u64,
    pub report: StreamReport,
}

impl Emitter {
    pub fn new(
        def: &'static StreamDef,
        sink: Sink,
        output_gone: OutputGone,
        normalizer: Normalizer,
        validator: Option<RecordValidator>,
        on_invalid: OnInvalidRecord,
    ) -> Self {
        Emitter {
            def,
            sink,
            output_gone,
            normalizer,
            validator,
            on_invalid,
            running_sent: false,
            since_checkpoint: 0,
            report: StreamReport {
                name: def.name,
                ..Default::default()
            },
        }
    }

    pub fn set_validator(&mut self, validator: Option<RecordValidator>) {
        self.validator = validator;
    }

    pub async fn send(&self, e: Event) -> Result<(), SyncError> {
        self.sink.send(e).await.map_err(|_| SyncError::OutputClosed)
    }

    pub async fn log(&self, level: Level, msg: String) {
        let _ = self.sink.send(Event::log(level, msg)).await;
    }

    /// Validate and emit one (already normalized) record.
    pub async fn emit(&mut self, record: Value) -> Result<(), SyncError> {
        match self.prepare(&record).await? {
            Some(data) => self.emit_prepared(data).await,
            None => Ok(()),
        }
    }

    /// Validate one normalized record (per `on_invalid_record`) and serialize it for the
    /// output: None when it is to be skipped. Windows keep records in this compact form
    /// until their read is verified.
    pub async fn prepare(&mut self, record: &Value) -> Result<Option<Box<RawValue>>, SyncError> {
        let violations = match &self.validator {
            Some(v) => v.check(record),
            None => Vec::new(),
        };
        if let Some(v) = violations.first() {
            self.report.invalid += 1;
            let key = record
                .get(self.def.primary_key)
                .and_then(id_key)
                .unwrap_or_else(|| "(no key)".into());
            match self.on_invalid {
                OnInvalidRecord::Fail => {
                    return Err(SyncError::InvalidRecord {
                        stream: self.def.name,
                        key,
                        path: v.path.clone(),
                        reason: v.reason.clone(),
                    })
                }
                OnInvalidRecord::Skip => {
                    self.report.skipped_invalid += 1;
                    self.log(
                        Level::Warn,
                        format!(
                            "{}: skipped record {}={key}: schema mismatch at {}: {}",
                            self.def.name, self.def.primary_key, v.path, v.reason
                        ),
                    )
                    .await;
                    return Ok(None);
                }
                OnInvalidRecord::Emit => {
                    self.log(
                        Level::Warn,
                        format!(
                            "{}: record {}={key} does not match the schema at {}: {} (emitted anyway)",
                            self.def.name, self.def.primary_key, v.path, v.reason
                        ),
                    )
                    .await;
                }
            }
        }
        serde_json::value::to_raw_value(record)
            .map(Some)
            .map_err(SyncError::Serialize)
    }

    /// Emit a record [`Emitter::prepare`] accepted.
    pub async fn emit_prepared(&mut self, data: Box<RawValue>) -> Result<(), SyncError> {
        if !self.running_sent {
            self.running_sent = true;
            self.send(Event::Status {
                stream: self.def.name,
                status: StreamStatus::Running,
            })
            .await?;
        }
        self.report.records += 1;
        self.since_checkpoint += 1;
        self.send(Event::Record {
            stream: self.def.name,
            data,
        })
        .await
    }

    /// A checkpoint: everything emitted so far is covered by `state`.
    pub async fn checkpoint(&mut self, state: &StreamState) -> Result<(), SyncError> {
        let record_count = std::mem::take(&mut self.since_checkpoint);
        self.send(Event::Checkpoint {
            stream: self.def,
            state: state.clone(),
            record_count,
        })
        .await
    }

    /// Where the client reports its retries for this stream.
    pub fn retry_log(&self) -> RetryLog {
        RetryLog {
            sink: self.sink.clone(),
            output_gone: self.output_gone.clone(),
        }
    }
}

/// Turns the client's retry notices into WARN lines of the output.
pub(crate) struct RetryLog {
    sink: Sink,
    output_gone: OutputGone,
}

impl RetryLog {
    /// The writer stopped (e.g. stdout closed): nothing more should be read.
    pub fn output_closed(&self) -> bool {
        self.sink.is_closed() || self.output_gone.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl RetryObserver for RetryLog {
    fn retrying(&self, notice: RetryNotice) {
        let event = Event::log(Level::Warn, notice.to_string());
        // The client is about to wait; a full channel must not lose the line, nor
        // block the client.
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(event)) = self.sink.try_send(event)
        {
            let sink = self.sink.clone();
            tokio::spawn(async move {
                let _ = sink.send(event).await;
            });
        }
    }
}
