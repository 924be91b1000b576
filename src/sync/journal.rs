//! The webhook journal as a source: the `webhook_events` and `reconciliation_reports`
//! streams (incremental on their table's `seq`), and folding newer subscription/order versions from webhooks into
//! their API streams after the API read.

use std::path::Path;

use chrono::DateTime;
use loop_webhooks::journal::{JournalError, JournalReader, StoredEvent};
use serde_json::json;

use crate::event::Level;
use crate::normalize::format_instant;
use crate::state::StreamState;

use super::emit::Emitter;
use super::{Engine, SyncError};

/// Entities read from the journal per query while folding.
const FOLD_BATCH: usize = 500;
/// Events read from the journal per query (a checkpoint follows each batch).
const EVENTS_BATCH: usize = 1000;

/// Emit the webhook versions of `kind` newer than the API read (after `st.seq`), then
/// checkpoint with the new journal position.
pub(super) async fn fold_webhooks(
    engine: &Engine,
    em: &mut Emitter,
    kind: &str,
    path: &Path,
    st: &mut StreamState,
) -> Result<(), SyncError> {
    let Some(reader) = open_journal(em, path).await? else {
        return Ok(());
    };
    let upper_ms = engine.upper_sec * 1000 + 999;
    let mut seq = st.seq.unwrap_or(0);
    loop {
        let events = reader
            .newest_entities_after(kind, seq, FOLD_BATCH)
            .map_err(|e| SyncError::journal(path, e))?;
        if events.is_empty() {
            break;
        }
        for ev in events {
            seq = seq.max(ev.seq);
            match ev.entity_updated_at_ms {
                Some(t) if t > upper_ms && ev.payload.is_object() => {
                    let mut rec = ev.payload;
                    em.normalizer.normalize(&mut rec);
                    em.emit(rec).await?;
                    em.report.webhook_folded += 1;
                }
                _ => em.report.webhook_stale += 1,
            }
        }
    }
    st.seq = Some(seq);
    em.log(
        Level::Info,
        format!(
            "{}: folded {} newer versions from webhooks ({} older than the API read, skipped)",
            em.def.name, em.report.webhook_folded, em.report.webhook_stale
        ),
    )
    .await;
    em.checkpoint(st).await
}

/// The `webhook_events` stream: every journaled event after the saved `seq`.
pub(super) async fn read_events(
    em: &mut Emitter,
    path: Option<&Path>,
    st: StreamState,
) -> Result<(), SyncError> {
    read_table(em, path, st, |reader, seq| {
        let events = reader.events_after(seq, EVENTS_BATCH)?;
        Ok(events
            .into_iter()
            .map(|ev| (ev.seq, event_record(ev)))
            .collect())
    })
    .await
}

/// The `reconciliation_reports` stream: every `reconcile` run's report after the saved
/// `seq`, with its `seq`.
pub(super) async fn read_runs(
    em: &mut Emitter,
    path: Option<&Path>,
    st: StreamState,
) -> Result<(), SyncError> {
    read_table(em, path, st, |reader, seq| {
        let runs = reader.runs_after(seq, EVENTS_BATCH)?;
        Ok(runs
            .into_iter()
            .map(|run| {
                let mut rec = json!({"seq": run.seq});
                if let (Some(out), serde_json::Value::Object(report)) =
                    (rec.as_object_mut(), run.report)
                {
                    out.extend(report);
                }
                (run.seq, rec)
            })
            .collect())
    })
    .await
}

/// A journal table read in `seq` order from the saved position, a checkpoint after
/// each batch that `fetch` returns (empty: done).
async fn read_table(
    em: &mut Emitter,
    path: Option<&Path>,
    mut st: StreamState,
    fetch: impl Fn(&JournalReader, i64) -> Result<Vec<(i64, serde_json::Value)>, JournalError>,
) -> Result<(), SyncError> {
    let Some(path) = path else {
        return Err(SyncError::NoJournal);
    };
    let Some(reader) = open_journal(em, path).await? else {
        return em.checkpoint(&st).await;
    };
    let mut seq = st.seq.unwrap_or(0);
    loop {
        let batch = fetch(&reader, seq).map_err(|e| SyncError::journal(path, e))?;
        if batch.is_empty() {
            break;
        }
        for (row_seq, mut rec) in batch {
            seq = seq.max(row_seq);
            em.normalizer.normalize(&mut rec);
            em.emit(rec).await?;
        }
        st.seq = Some(seq);
        em.checkpoint(&st).await?;
    }
    st.seq = Some(seq);
    em.checkpoint(&st).await
}

/// A journaled event as a `webhook_events` record (before normalization); the loader's
/// webhook applier stores the same shape.
pub fn event_record(ev: StoredEvent) -> serde_json::Value {
    json!({
        "id": ev.webhook_id,
        "seq": ev.seq,
        "topic": ev.topic,
        "api_version": ev.api_version,
        "created_at": ev.created_at,
        "received_at": ev.received_at,
        "shop_domain": ev.shop_domain,
        "retry_count": ev.retry_count,
        "entity_kind": ev.entity_kind,
        "entity_id": ev.entity_id,
        "entity_updated_at": ev.entity_updated_at_ms.and_then(DateTime::from_timestamp_millis).map(format_instant),
        "payload": ev.payload,
    })
}

/// The webhook journal, or None (with a warning) while `serve` has not created it.
async fn open_journal(em: &Emitter, path: &Path) -> Result<Option<JournalReader>, SyncError> {
    if !path.exists() {
        em.log(
            Level::Warn,
            format!(
                "{}: webhook journal {} does not exist yet (start `source-loop serve`); nothing to read from it",
                em.def.name,
                path.display()
            ),
        )
        .await;
        return Ok(None);
    }
    JournalReader::open(path)
        .map(Some)
        .map_err(|e| SyncError::journal(path, e))
}
