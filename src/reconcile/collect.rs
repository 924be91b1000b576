//! Reading the API for a reconciliation: `run::read` (the engine, with the config's
//! pacing and retries) into a collecting `Writer` that keeps the newest version of every
//! entity.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::compare::{ApiVersion, ApiVersions};
use super::ReconcileError;
use crate::config::Config;
use crate::event::{Event, Level};
use crate::output::Writer;
use crate::run::{self, ReadRequest};
use crate::state::id_key;
use crate::streams::{Selected, StreamDef, SyncMode};

/// Each stream's journal versions (entity id → newest `updatedAt` ms).
pub type JournalVersions = HashMap<&'static str, HashMap<String, i64>>;

/// Collects the newest version of every record the engine emits, and its errors.
#[derive(Default)]
struct Collected {
    versions: HashMap<&'static str, ApiVersions>,
    errors: Vec<String>,
    unreadable: Vec<String>,
}

struct Collector {
    collected: Collected,
    journal: Arc<JournalVersions>,
}

#[derive(Deserialize)]
struct RecordKeys {
    id: Value,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
}

impl Writer for Collector {
    type Output = Collected;
    type Error = std::convert::Infallible;

    fn write(&mut self, event: &Event) -> Result<(), Self::Error> {
        let c = &mut self.collected;
        match event {
            Event::Record { stream, data } => {
                let keys = serde_json::from_str::<RecordKeys>(data.get()).ok();
                let parsed = keys.and_then(|k| {
                    let ms = k
                        .updated_at
                        .as_deref()
                        .and_then(loop_time::parse_rfc3339_ms)?;
                    Some((id_key(&k.id)?, ms))
                });
                let Some((id, updated_ms)) = parsed else {
                    c.unreadable
                        .push(format!("{stream}: a record without id or updatedAt"));
                    return Ok(());
                };
                let journaled = self.journal.get(stream).and_then(|j| j.get(&id));
                let record = journaled
                    .is_none_or(|j| *j < updated_ms)
                    .then(|| data.clone());
                let versions = c.versions.entry(stream).or_default();
                if versions.get(&id).is_none_or(|v| v.updated_ms < updated_ms) {
                    versions.insert(id, ApiVersion { updated_ms, record });
                }
            }
            Event::Error { message, .. } => c.errors.push(message.clone()),
            Event::Log {
                level: Level::Warn | Level::Error,
                message,
            } => crate::output::warning_line(message),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Collected, Self::Error> {
        Ok(self.collected)
    }
}

/// Reads `defs` from the API from `start`, through the engine, without folding webhooks.
pub(super) fn read_api(
    config: &Config,
    defs: &[&'static StreamDef],
    start: DateTime<Utc>,
    journal: &Arc<JournalVersions>,
) -> Result<HashMap<&'static str, ApiVersions>, ReconcileError> {
    let mut config = config.clone();
    config.sync.start_date = start;
    config.webhooks.journal_path = None;
    let request = ReadRequest {
        config,
        selected: defs
            .iter()
            .map(|d| Selected::new(d, SyncMode::Incremental))
            .collect(),
        state: Default::default(),
        notes: Vec::new(),
        progress: false,
        output_gone: None,
    };
    let collector = Collector {
        collected: Collected::default(),
        journal: Arc::clone(journal),
    };
    let outcome = run::read(request, collector)?;
    let Ok(mut c) = outcome.output;
    if !outcome.summary.all_ok() || !c.errors.is_empty() {
        c.errors.extend(
            outcome
                .summary
                .reports
                .iter()
                .filter(|r| !r.ok && r.error.is_none())
                .map(|r| format!("stream {} did not complete", r.name)),
        );
        return Err(ReconcileError::Api(c.errors.join("; ")));
    }
    if let Some(first) = c.unreadable.first() {
        return Err(ReconcileError::Api(format!(
            "{first} ({} in all): cannot compare it with the journal",
            c.unreadable.len()
        )));
    }
    Ok(c.versions)
}
