//! Reconciliation's part of the journal's database: the runs of `source-loop reconcile`
//! (one row per run, the report as JSON) and repair events, the API's version of an
//! entity whose webhook never arrived, journaled like a delivery so that every reader of
//! the journal (folding, `webhook_events`) sees it.
//!
//! Sharing the file with a running receiver: [`RepairWriter`] is a second writer beside
//! the receiver's writer thread. Each call is one IMMEDIATE transaction, so SQLite's write
//! lock serializes it with the receiver's group commits (WAL: readers never wait; a
//! writer waits up to the busy timeout). Repairs are marked as coming from the API by
//! their topic (`<kind>/repaired_from_api`) and webhook id (`repair:<kind>:<id>:<ms>`);
//! the id is derived from the version, so repairing the same version twice stores it
//! once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use loop_entities::ENTITIES;
use loop_time::format_ms;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::journal::{
    open_writer, write_transaction, AppendOutcome, EntityRef, JournalError, JournalReader, NewEvent,
};

/// How long a repair waits for the receiver's write lock (its batches commit in
/// milliseconds; this only bounds a stuck writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The topic of a repair event of `kind` (`subscription` or `order`).
pub fn repair_topic(kind: &str) -> String {
    format!("{kind}/repaired_from_api")
}

/// Whether a topic is a repair's.
pub fn is_repair_topic(topic: &str) -> bool {
    topic.ends_with("/repaired_from_api")
}

/// The webhook id of the repair of one version: the same version, the same id.
pub fn repair_webhook_id(kind: &str, id: &str, updated_at_ms: i64) -> String {
    format!("repair:{kind}:{id}:{updated_at_ms}")
}

/// The API's version of an entity, to journal as a repair.
#[derive(Debug, Clone)]
pub struct Repair {
    /// `subscription` or `order`.
    pub kind: String,
    pub id: String,
    pub updated_at_ms: i64,
    /// The record as the API returned it (JSON text).
    pub payload: String,
}

impl Repair {
    fn to_event(&self) -> NewEvent {
        NewEvent {
            webhook_id: repair_webhook_id(&self.kind, &self.id, self.updated_at_ms),
            topic: repair_topic(&self.kind),
            api_version: None,
            created_at: Some(format_ms(self.updated_at_ms)),
            delivery_at: None,
            retry_count: None,
            received_at: loop_time::now(),
            shop_domain: None,
            entity: Some(EntityRef {
                kind: self.kind.clone(),
                id: self.id.clone(),
                updated_at_ms: Some(self.updated_at_ms),
            }),
            payload: self.payload.clone(),
            body_sha256: hex::encode(Sha256::digest(self.payload.as_bytes())),
        }
    }
}

/// Writes repairs and runs into a journal that a receiver may be writing at the same time.
pub struct RepairWriter {
    conn: Connection,
}

impl std::fmt::Debug for RepairWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairWriter").finish_non_exhaustive()
    }
}

impl RepairWriter {
    /// Opens an existing journal for writing (check it with [`JournalReader::open`]
    /// first: this creates the file when it is missing).
    pub fn open(path: &Path) -> Result<RepairWriter, JournalError> {
        let conn = open_writer(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(RepairWriter { conn })
    }

    /// Journals every repair in one transaction; a version already journaled (by an
    /// earlier repair) is a `Duplicate`.
    pub fn repair(&mut self, repairs: &[Repair]) -> Result<Vec<AppendOutcome>, JournalError> {
        let events: Vec<NewEvent> = repairs.iter().map(Repair::to_event).collect();
        let refs: Vec<&NewEvent> = events.iter().collect();
        Ok(write_transaction(&mut self.conn, &refs, false)?)
    }

    /// Stores one run's report; returns its seq.
    pub fn record_run(
        &mut self,
        generated_at_ms: i64,
        within_tolerance: bool,
        report: &serde_json::Value,
    ) -> Result<i64, JournalError> {
        self.conn.execute(
            "INSERT INTO reconcile_runs (generated_at_ms, within_tolerance, report) VALUES (?1, ?2, ?3)",
            params![generated_at_ms, within_tolerance, report.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }
}

/// One stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub seq: i64,
    pub generated_at_ms: i64,
    pub within_tolerance: bool,
    pub report: serde_json::Value,
}

/// What an operator alerts on: the last run, and the repairs made so far per stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileSummary {
    pub last_run: Option<StoredRun>,
    /// Stream name (`subscriptions`, `orders`) → repair events in the journal after the
    /// seq asked for, up to `counted_to`.
    pub repairs: BTreeMap<String, i64>,
    /// The journal's last event seq when counted: the next summary counts from there.
    pub counted_to: i64,
}

impl JournalReader {
    fn has_runs_table(&self) -> Result<bool, JournalError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'reconcile_runs'",
            [],
            |row| row.get::<_, i64>(0),
        )? > 0)
    }

    /// When the journal began (None when empty): the change its first event is about
    /// (`payload.updatedAt`), or when that event was received if earlier or unknown. A
    /// change's webhook arrives after the change, so the first change the receiver
    /// caught precedes its receipt.
    pub fn started_ms(&self) -> Result<Option<i64>, JournalError> {
        let first: Option<(Option<String>, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT received_at, entity_updated_at_ms FROM events ORDER BY seq LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(first.and_then(|(received, changed)| {
            let received = received.and_then(|s| loop_time::parse_rfc3339_ms(&s));
            match (received, changed) {
                (Some(r), Some(c)) => Some(r.min(c)),
                (r, c) => r.or(c),
            }
        }))
    }

    /// Per entity of `kind`, the newest `updatedAt` the journal holds at or before
    /// `until_ms` (what the journal knew of that instant).
    pub fn versions_as_of(
        &self,
        kind: &str,
        until_ms: i64,
    ) -> Result<HashMap<String, i64>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT entity_id, max(entity_updated_at_ms) FROM events
             WHERE entity_kind = ?1 AND entity_id IS NOT NULL AND entity_updated_at_ms <= ?2
             GROUP BY entity_id",
        )?;
        let rows = stmt.query_map(params![kind, until_ms], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Events received in `[since_ms, until_ms]`, by topic.
    pub fn topic_counts(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<BTreeMap<String, i64>, JournalError> {
        // received_at is always written by format_instant, so text order is time order
        let mut stmt = self.conn.prepare_cached(
            "SELECT coalesce(topic, ''), count(*) FROM events
             WHERE received_at >= ?1 AND received_at <= ?2 GROUP BY topic",
        )?;
        let rows = stmt.query_map(params![format_ms(since_ms), format_ms(until_ms)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` runs with seq greater than `seq`, in seq order (none when no run
    /// was ever recorded).
    pub fn runs_after(&self, seq: i64, limit: usize) -> Result<Vec<StoredRun>, JournalError> {
        if !self.has_runs_table()? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, generated_at_ms, within_tolerance, report FROM reconcile_runs
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, crate::journal::limit_param(limit)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, generated_at_ms, within_tolerance, text) = row?;
            out.push(StoredRun {
                seq,
                generated_at_ms,
                within_tolerance,
                report: serde_json::from_str(&text)
                    .map_err(|source| JournalError::BadPayload { seq, source })?,
            });
        }
        Ok(out)
    }

    /// The last run, and the repairs journaled after event `repairs_after` (0: all), for
    /// `/metrics`. Events are never deleted and their seq only grows (one writer at a
    /// time), so counting from the last summary's `counted_to` reads only the new events,
    /// not the whole journal on every scrape.
    pub fn reconcile_summary(&self, repairs_after: i64) -> Result<ReconcileSummary, JournalError> {
        let mut summary = ReconcileSummary::default();
        if self.has_runs_table()? {
            let last_seq: Option<i64> =
                self.conn
                    .query_row("SELECT max(seq) FROM reconcile_runs", [], |row| row.get(0))?;
            if let Some(seq) = last_seq {
                summary.last_run = self.runs_after(seq - 1, 1)?.into_iter().next();
            }
        }
        let last_event: Option<i64> =
            self.conn
                .query_row("SELECT max(seq) FROM events", [], |row| row.get(0))?;
        summary.counted_to = last_event.unwrap_or(0).max(repairs_after);
        for entity in ENTITIES {
            let n: i64 = self.conn.query_row(
                "SELECT count(*) FROM events WHERE seq > ?1 AND seq <= ?2 AND topic = ?3",
                params![repairs_after, summary.counted_to, repair_topic(entity.kind)],
                |row| row.get(0),
            )?;
            summary.repairs.insert(entity.stream.to_string(), n);
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalOptions};

    fn repair(id: &str, ms: i64) -> Repair {
        Repair {
            kind: "subscription".into(),
            id: id.into(),
            updated_at_ms: ms,
            payload: format!(r#"{{"id":{id},"updatedAt":"{}"}}"#, format_ms(ms)),
        }
    }

    #[tokio::test]
    async fn repairs_are_journaled_once_while_the_receiver_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let journal = Journal::open(&path, JournalOptions::default()).unwrap();
        let mut writer = RepairWriter::open(&path).unwrap();
        let first = writer
            .repair(&[repair("7", 5_000), repair("8", 6_000)])
            .unwrap();
        assert!(matches!(first[0], AppendOutcome::Accepted { seq: 1, .. }));
        // the receiver's writer thread keeps committing beside the repair writer
        let mut delivery = Repair::to_event(&repair("9", 1_000));
        delivery.webhook_id = "wh-1".into();
        delivery.topic = "subscription/updated".into();
        assert!(matches!(
            journal.append(delivery).await.unwrap(),
            AppendOutcome::Accepted { seq: 3, .. }
        ));
        let again = writer.repair(&[repair("7", 5_000)]).unwrap();
        assert_eq!(again, [AppendOutcome::Duplicate]);

        let reader = JournalReader::open(&path).unwrap();
        // the first event's change precedes its receipt
        assert_eq!(reader.started_ms().unwrap(), Some(5_000));
        assert_eq!(
            reader.entity_version("subscription", "7").unwrap(),
            Some((5_000, 1))
        );
        let as_of = reader.versions_as_of("subscription", 5_500).unwrap();
        assert_eq!(as_of.len(), 2, "{as_of:?}");
        assert_eq!(as_of["7"], 5_000);
        assert!(
            !as_of.contains_key("8"),
            "8 is newer than the instant asked"
        );
        let summary = reader.reconcile_summary(0).unwrap();
        assert_eq!(summary.repairs["subscriptions"], 2);
        assert_eq!(summary.repairs["orders"], 0);
        assert!(summary.last_run.is_none());
        // counting on from there finds no repair twice
        let next = reader.reconcile_summary(summary.counted_to).unwrap();
        assert_eq!(next.repairs["subscriptions"], 0);
        assert_eq!(next.counted_to, summary.counted_to);

        writer
            .record_run(42, false, &serde_json::json!({"drift": 3}))
            .unwrap();
        let seq = writer
            .record_run(43, true, &serde_json::json!({"drift": 0}))
            .unwrap();
        let last = reader.reconcile_summary(0).unwrap().last_run.unwrap();
        assert_eq!(
            (last.seq, last.generated_at_ms, last.within_tolerance),
            (seq, 43, true)
        );
        assert_eq!(reader.runs_after(0, 10).unwrap().len(), 2);
        journal.shutdown().await;
    }
}
