//! The webhook journal as a live source (`serve --into`): the events after a `seq`, as
//! the neutral events a sync emits, so that the same [`crate::output::Writer`] (the
//! loader) applies them. Each journaled subscription or order payload becomes a record of
//! its stream (normalized as a sync normalizes), every event a `webhook_events` record,
//! and a batch ends with one [`Event::JournalCheckpoint`] for its last `seq`: the batch
//! touches several tables, and its position is the journal's, not a stream's.

use std::path::Path;

use loop_webhooks::journal::{JournalError, JournalReader};
use serde_json::value::RawValue;

use super::journal::event_record;
use crate::event::Event;
use crate::normalize::Normalizer;
use crate::streams::{self, WEBHOOK_EVENTS};

/// Reads the journal from a position, batch by batch.
pub struct JournalTail {
    reader: JournalReader,
    normalizer: Normalizer,
}

/// One batch: its events (ending in a [`Event::JournalCheckpoint`]), and when each event
/// was received (unix ms), for latency.
#[derive(Default)]
pub struct TailBatch {
    pub events: Vec<Event>,
    pub received_ms: Vec<i64>,
}

impl JournalTail {
    pub fn open(journal: &Path, normalizer: Normalizer) -> Result<JournalTail, JournalError> {
        Ok(JournalTail {
            reader: JournalReader::open(journal)?,
            normalizer,
        })
    }

    /// Up to `max` journal events after `seq`; an empty batch when there are none.
    pub fn next_batch(&self, seq: i64, max: usize) -> Result<TailBatch, JournalError> {
        let stored = self.reader.events_after(seq, max)?;
        let Some(last) = stored.last().map(|e| e.seq) else {
            return Ok(TailBatch::default());
        };
        let mut batch = TailBatch {
            events: Vec::with_capacity(stored.len() * 2 + 1),
            received_ms: Vec::with_capacity(stored.len()),
        };
        for ev in stored {
            batch
                .received_ms
                .extend(loop_time::parse_rfc3339_ms(&ev.received_at));
            let entity = ev
                .entity_kind
                .as_deref()
                .and_then(streams::for_webhook_kind);
            if let Some(def) = entity.filter(|_| ev.payload.is_object()) {
                let mut payload = ev.payload.clone();
                self.normalizer.normalize(&mut payload);
                batch.events.push(record(def.name, &payload));
            }
            let mut rec = event_record(ev);
            self.normalizer.normalize(&mut rec);
            batch.events.push(record(WEBHOOK_EVENTS, &rec));
        }
        batch.events.push(Event::JournalCheckpoint { seq: last });
        Ok(batch)
    }
}

fn record(stream: &'static str, value: &serde_json::Value) -> Event {
    // (a Value of JSON values always serializes)
    let data: Box<RawValue> = serde_json::value::to_raw_value(value).unwrap_or_default();
    Event::Record { stream, data }
}
