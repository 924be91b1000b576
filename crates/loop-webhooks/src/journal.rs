//! The journal: a SQLite file that is the receiver's source of truth. One writer
//! thread owns the only read-write connection and group-commits whatever deliveries are
//! queued (up to [`JournalOptions::max_batch`]) in one transaction, then answers every
//! waiting request. A delivery is acknowledged only after its transaction committed.
//!
//! Durability: WAL mode with `synchronous=FULL`, so every commit fsyncs the WAL before
//! it returns. `synchronous=NORMAL` in WAL mode would survive a killed process but could
//! lose the last commits on power loss or an OS crash, and an acknowledged event must
//! never be lost; group commit pays the fsync once per batch instead of once per event.
//!
//! Deduplication: `events.webhook_id` is UNIQUE and inserts use `ON CONFLICT DO
//! NOTHING`, so a redelivery (concurrent or not) is stored once. Ordering:
//! `entity_versions` keeps, per (kind, entity id), the newest `updatedAt` seen and the
//! seq of the event that carried it; an older version never replaces a newer one, and
//! on a tie the later delivery wins.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use loop_time::format_instant;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Largest number of deliveries written in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 512;

/// How many commands may wait for the writer before senders wait for room.
const QUEUE_CAPACITY: usize = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT UNIQUE NOT NULL,
    topic TEXT,
    api_version TEXT,
    created_at TEXT,
    delivery_at TEXT,
    retry_count INTEGER,
    received_at TEXT,
    shop_domain TEXT,
    entity_kind TEXT,
    entity_id TEXT,
    entity_updated_at_ms INTEGER,
    payload TEXT,
    body_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS entity_versions (
    kind TEXT,
    entity_id TEXT,
    updated_at_ms INTEGER,
    seq INTEGER,
    PRIMARY KEY (kind, entity_id)
);
CREATE INDEX IF NOT EXISTS entity_versions_by_kind_seq ON entity_versions (kind, seq);
CREATE TABLE IF NOT EXISTS receiver_probe (
    id INTEGER PRIMARY KEY,
    probed_at TEXT
);
";

/// Reconciliation's runs (see `reconciliation`). The journal owns the DDL of every table
/// in its file, so every writer creates the same tables and reconciliation depends on
/// the journal, not the other way round.
const RECONCILE_RUNS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reconcile_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    generated_at_ms INTEGER NOT NULL,
    within_tolerance INTEGER NOT NULL,
    report TEXT NOT NULL
);
";

const INSERT_EVENT: &str = "
INSERT INTO events (webhook_id, topic, api_version, created_at, delivery_at, retry_count,
    received_at, shop_domain, entity_kind, entity_id, entity_updated_at_ms, payload, body_sha256)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (webhook_id) DO NOTHING";

/// Seq only grows, so "later delivery wins on a tie" is `excluded.seq > seq`.
const UPSERT_VERSION: &str = "
INSERT INTO entity_versions (kind, entity_id, updated_at_ms, seq) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (kind, entity_id) DO UPDATE SET updated_at_ms = excluded.updated_at_ms, seq = excluded.seq
WHERE excluded.updated_at_ms > entity_versions.updated_at_ms
   OR (excluded.updated_at_ms = entity_versions.updated_at_ms AND excluded.seq > entity_versions.seq)";

const SELECT_EVENT_COLUMNS: &str = "e.seq, e.webhook_id, e.topic, e.api_version, e.created_at, \
    e.received_at, e.shop_domain, e.retry_count, e.entity_kind, e.entity_id, \
    e.entity_updated_at_ms, e.payload";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "cannot open journal {path}: {source} (check that the directory exists and is writable)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not a webhook journal (its tables events/entity_versions are missing): point `journal_path` at the file `source-loop serve` writes", path.display())]
    NotAJournal { path: PathBuf },
    #[error("cannot open journal {}: SQLite keeps it in {mode} mode, but the journal needs WAL (is the file on a network filesystem?)", path.display())]
    WalUnavailable { path: PathBuf, mode: String },
    #[error("journal database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal write failed: {0}")]
    Write(String),
    #[error("journal writer has stopped")]
    Closed,
    #[error("journal event {seq} has a payload that is not JSON: {source}")]
    BadPayload {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// One journaled delivery, as `source-loop read` and the `--emit` lines show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub webhook_id: String,
    pub topic: String,
    pub api_version: Option<String>,
    pub created_at: Option<String>,
    pub received_at: String,
    pub shop_domain: Option<String>,
    pub retry_count: Option<i64>,
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    pub entity_updated_at_ms: Option<i64>,
    pub payload: serde_json::Value,
}

/// The entity a delivery is about, when its topic and payload say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef {
    /// `subscription` or `order`.
    pub kind: String,
    pub id: String,
    /// `payload.updatedAt` as a UTC instant; `None` when missing or unparseable, and
    /// then the event does not touch `entity_versions`.
    pub updated_at_ms: Option<i64>,
}

/// A verified delivery to journal.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub webhook_id: String,
    pub topic: String,
    pub api_version: Option<String>,
    pub created_at: Option<String>,
    pub delivery_at: Option<String>,
    pub retry_count: Option<i64>,
    pub received_at: DateTime<Utc>,
    pub shop_domain: Option<String>,
    pub entity: Option<EntityRef>,
    /// The `payload` JSON text exactly as it appeared in the body.
    pub payload: String,
    /// Hex SHA-256 of the raw body.
    pub body_sha256: String,
}

impl NewEvent {
    /// The event as stored under `seq`.
    pub fn to_stored(&self, seq: i64) -> Result<StoredEvent, JournalError> {
        Ok(StoredEvent {
            seq,
            webhook_id: self.webhook_id.clone(),
            topic: self.topic.clone(),
            api_version: self.api_version.clone(),
            created_at: self.created_at.clone(),
            received_at: format_instant(self.received_at),
            shop_domain: self.shop_domain.clone(),
            retry_count: self.retry_count,
            entity_kind: self.entity.as_ref().map(|e| e.kind.clone()),
            entity_id: self.entity.as_ref().map(|e| e.id.clone()),
            entity_updated_at_ms: self.entity.as_ref().and_then(|e| e.updated_at_ms),
            payload: serde_json::from_str(&self.payload)
                .map_err(|source| JournalError::BadPayload { seq, source })?,
        })
    }
}

/// What happened to an appended delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under `seq`. `stale` is true when a newer version of its entity was
    /// already known, so `entity_versions` kept the newer one.
    Accepted { seq: i64, stale: bool },
    /// A delivery with this webhook id is already in the journal.
    Duplicate,
}

/// A delivery that has been committed, in commit order; fed to the `--emit` writer.
#[derive(Debug)]
pub struct CommittedEvent {
    pub seq: i64,
    pub event: NewEvent,
}

#[derive(Debug, Clone)]
pub struct JournalOptions {
    pub max_batch: usize,
    /// When set, every accepted (non-duplicate) delivery is sent here after commit, in
    /// commit order. The channel is unbounded so the writer never waits on a consumer.
    pub committed: Option<mpsc::UnboundedSender<CommittedEvent>>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            max_batch: DEFAULT_MAX_BATCH,
            committed: None,
        }
    }
}

enum Command {
    Append(
        Box<NewEvent>,
        oneshot::Sender<Result<AppendOutcome, JournalError>>,
    ),
    Probe(oneshot::Sender<Result<(), JournalError>>),
    Shutdown,
}

/// Numbers the writer keeps up to date for the metrics endpoint.
#[derive(Debug)]
pub struct JournalStats {
    events: AtomicI64,
    /// Unix ms of the newest accepted delivery's `received_at`; -1 when none.
    last_received_ms: AtomicI64,
}

impl JournalStats {
    pub fn events(&self) -> i64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn last_received_ms(&self) -> Option<i64> {
        Some(self.last_received_ms.load(Ordering::Relaxed)).filter(|ms| *ms >= 0)
    }
}

struct Shared {
    path: PathBuf,
    stats: JournalStats,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The writer handle. Cloning is cheap; all clones feed the same writer thread.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal and starts its writer thread.
    pub fn open(path: &Path, options: JournalOptions) -> Result<Journal, JournalError> {
        let conn = open_writer(path)?;
        let (events, last_received): (i64, Option<String>) = conn.query_row(
            "SELECT count(*), (SELECT received_at FROM events ORDER BY seq DESC LIMIT 1) FROM events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let last_received_ms = last_received
            .and_then(|s| loop_time::parse_rfc3339_ms(&s))
            .unwrap_or(-1);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            stats: JournalStats {
                events: AtomicI64::new(events),
                last_received_ms: AtomicI64::new(last_received_ms),
            },
            writer: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            max_batch: options.max_batch.max(1),
            committed: options.committed,
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::Write(format!("cannot start writer thread: {e}")))?;
        *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(Journal { tx, shared })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn stats(&self) -> &JournalStats {
        &self.shared.stats
    }

    /// Journals a delivery; resolves once it is committed (or found to be a duplicate).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Append(Box::new(event), reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Commits a small write through the writer; Ok means the journal is writable.
    pub async fn probe(&self) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Probe(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Lets the writer commit everything queued before this call, then stops it and
    /// waits for the thread to exit. Later appends on any clone fail with `Closed`.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
        let handle = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

pub(crate) fn open_writer(path: &Path) -> Result<Connection, JournalError> {
    let opened = |source| JournalError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(opened)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(opened)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(opened)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::WalUnavailable {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .and_then(|()| conn.execute_batch(SCHEMA))
        .and_then(|()| conn.execute_batch(RECONCILE_RUNS_SCHEMA))
        .map_err(opened)?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    max_batch: usize,
    committed: Option<mpsc::UnboundedSender<CommittedEvent>>,
}

type Pending = (
    Box<NewEvent>,
    oneshot::Sender<Result<AppendOutcome, JournalError>>,
);

impl Writer {
    fn run(mut self) {
        let mut appends: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut probes = Vec::new();
        loop {
            let mut stop = false;
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(event, reply) => appends.push((event, reply)),
                    Command::Probe(reply) => probes.push(reply),
                    Command::Shutdown => {
                        stop = true;
                        break;
                    }
                }
                if appends.len() + probes.len() >= self.max_batch {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.commit_batch(&mut appends, &mut probes);
            if stop {
                break;
            }
        }
        // Anything sent after Shutdown is answered with Closed when `rx` drops.
    }

    fn commit_batch(
        &mut self,
        appends: &mut Vec<Pending>,
        probes: &mut Vec<oneshot::Sender<Result<(), JournalError>>>,
    ) {
        if appends.is_empty() && probes.is_empty() {
            return;
        }
        let events: Vec<&NewEvent> = appends.iter().map(|(e, _)| e.as_ref()).collect();
        match write_transaction(&mut self.conn, &events, !probes.is_empty()) {
            Ok(outcomes) => {
                for reply in probes.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                self.finish(appends.drain(..).zip(outcomes.into_iter().map(Ok)));
            }
            Err(batch_error) => {
                for reply in probes.drain(..) {
                    let _ = reply.send(Err(JournalError::Write(batch_error.to_string())));
                }
                // One bad event must not fail the rest of its batch: retry each alone.
                let mut results = Vec::with_capacity(appends.len());
                for (event, _) in appends.iter() {
                    let result = write_transaction(&mut self.conn, &[event.as_ref()], false)
                        .map(|mut o| o.remove(0))
                        .map_err(|e| JournalError::Write(e.to_string()));
                    results.push(result);
                }
                eprintln!(
                    "loop-webhooks: ERROR journal batch of {} failed ({batch_error}); retried one by one, {} failed",
                    results.len(),
                    results.iter().filter(|r| r.is_err()).count()
                );
                self.finish(appends.drain(..).zip(results));
            }
        }
    }

    /// Answers waiters, updates stats and feeds the emit channel, in commit order.
    fn finish(
        &mut self,
        done: impl Iterator<Item = (Pending, Result<AppendOutcome, JournalError>)>,
    ) {
        let stats = &self.shared.stats;
        for ((event, reply), result) in done {
            let accepted_seq = match &result {
                Ok(AppendOutcome::Accepted { seq, .. }) => Some(*seq),
                _ => None,
            };
            // stats first: whoever sees the acknowledgement also sees it counted
            if accepted_seq.is_some() {
                stats.events.fetch_add(1, Ordering::Relaxed);
                stats
                    .last_received_ms
                    .fetch_max(event.received_at.timestamp_millis(), Ordering::Relaxed);
            }
            let _ = reply.send(result);
            if let Some(seq) = accepted_seq {
                if let Some(committed) = &self.committed {
                    let _ = committed.send(CommittedEvent { seq, event: *event });
                }
            }
        }
    }
}

/// Writes `events` in one IMMEDIATE transaction and commits it (fsync under
/// synchronous=FULL). Returns one outcome per event, in order.
pub(crate) fn write_transaction(
    conn: &mut Connection,
    events: &[&NewEvent],
    probe: bool,
) -> rusqlite::Result<Vec<AppendOutcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(events.len());
    {
        // Looked up first because an ignored INSERT would still use up an AUTOINCREMENT
        // value, leaving gaps in seq; the IMMEDIATE transaction holds SQLite's write
        // lock, so no other writer (the receiver's thread, a repair) races it.
        let mut exists = tx.prepare_cached("SELECT 1 FROM events WHERE webhook_id = ?1")?;
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut upsert = tx.prepare_cached(UPSERT_VERSION)?;
        for event in events {
            if exists.exists(params![event.webhook_id])? {
                outcomes.push(AppendOutcome::Duplicate);
                continue;
            }
            let entity = event.entity.as_ref();
            let inserted = insert.execute(params![
                event.webhook_id,
                event.topic,
                event.api_version,
                event.created_at,
                event.delivery_at,
                event.retry_count,
                format_instant(event.received_at),
                event.shop_domain,
                entity.map(|e| &e.kind),
                entity.map(|e| &e.id),
                entity.and_then(|e| e.updated_at_ms),
                event.payload,
                event.body_sha256,
            ])?;
            if inserted == 0 {
                outcomes.push(AppendOutcome::Duplicate);
                continue;
            }
            let seq = tx.last_insert_rowid();
            let mut stale = false;
            if let Some(EntityRef {
                kind,
                id,
                updated_at_ms: Some(updated_at_ms),
            }) = entity
            {
                stale = upsert.execute(params![kind, id, updated_at_ms, seq])? == 0;
            }
            outcomes.push(AppendOutcome::Accepted { seq, stale });
        }
    }
    if probe {
        tx.execute(
            "INSERT INTO receiver_probe (id, probed_at) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            params![format_instant(loop_time::now())],
        )?;
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Read-only access to a journal; safe to use while a server is writing it (WAL lets
/// readers see the last committed state without blocking the writer).
pub struct JournalReader {
    pub(crate) conn: Connection,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader").finish_non_exhaustive()
    }
}

impl JournalReader {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open = || -> rusqlite::Result<(Connection, i64)> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            // Fails here, not on the first read, when the file is not a journal.
            let tables = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('events', 'entity_versions')",
                [],
                |row| row.get::<_, i64>(0),
            )?;
            Ok((conn, tables))
        };
        match open() {
            Ok((conn, 2)) => Ok(JournalReader { conn }),
            Ok(_) => Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(JournalError::Open {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Up to `limit` events with seq greater than `seq`, in seq order.
    pub fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<StoredEvent>, JournalError> {
        let sql = format!(
            "SELECT {SELECT_EVENT_COLUMNS} FROM events e WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2"
        );
        self.query(&sql, params![seq, limit_param(limit)])
    }

    /// For each entity of `kind` whose newest known version was stored after `seq`,
    /// the event that carried that version, in seq order (up to `limit`).
    pub fn newest_entities_after(
        &self,
        kind: &str,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let sql = format!(
            "SELECT {SELECT_EVENT_COLUMNS} FROM entity_versions v JOIN events e ON e.seq = v.seq \
             WHERE v.kind = ?1 AND v.seq > ?2 ORDER BY v.seq LIMIT ?3"
        );
        self.query(&sql, params![kind, seq, limit_param(limit)])
    }

    /// The highest seq stored, 0 when the journal is empty.
    pub fn max_seq(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT max(seq) FROM events", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0))
    }

    /// The (updated_at_ms, seq) kept for an entity, if any.
    pub fn entity_version(
        &self,
        kind: &str,
        entity_id: &str,
    ) -> Result<Option<(i64, i64)>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT updated_at_ms, seq FROM entity_versions WHERE kind = ?1 AND entity_id = ?2",
                params![kind, entity_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
    }

    /// The number of stored events.
    pub fn count(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))?)
    }

    fn query(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |row| {
            Ok((
                StoredEventRow {
                    seq: row.get(0)?,
                    webhook_id: row.get(1)?,
                    topic: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    api_version: row.get(3)?,
                    created_at: row.get(4)?,
                    received_at: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    shop_domain: row.get(6)?,
                    retry_count: row.get(7)?,
                    entity_kind: row.get(8)?,
                    entity_id: row.get(9)?,
                    entity_updated_at_ms: row.get(10)?,
                },
                row.get::<_, Option<String>>(11)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (r, payload) = row?;
            let payload = match payload {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|source| JournalError::BadPayload { seq: r.seq, source })?,
                None => serde_json::Value::Null,
            };
            out.push(StoredEvent {
                seq: r.seq,
                webhook_id: r.webhook_id,
                topic: r.topic,
                api_version: r.api_version,
                created_at: r.created_at,
                received_at: r.received_at,
                shop_domain: r.shop_domain,
                retry_count: r.retry_count,
                entity_kind: r.entity_kind,
                entity_id: r.entity_id,
                entity_updated_at_ms: r.entity_updated_at_ms,
                payload,
            });
        }
        Ok(out)
    }
}

struct StoredEventRow {
    seq: i64,
    webhook_id: String,
    topic: String,
    api_version: Option<String>,
    created_at: Option<String>,
    received_at: String,
    shop_domain: Option<String>,
    retry_count: Option<i64>,
    entity_kind: Option<String>,
    entity_id: Option<String>,
    entity_updated_at_ms: Option<i64>,
}

pub(crate) fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_file_that_is_not_a_journal_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let Err(err) = JournalReader::open(&path) else {
            panic!("a file without the journal's tables opened as a journal");
        };
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{err:?}");
        assert!(err.to_string().contains("journal_path"), "{err}");
    }

    fn event(id: &str, entity: &str, updated_at_ms: Option<i64>) -> NewEvent {
        NewEvent {
            webhook_id: id.into(),
            topic: "subscription/updated".into(),
            api_version: Some("2023-10".into()),
            created_at: None,
            delivery_at: None,
            retry_count: Some(0),
            received_at: Utc::now(),
            shop_domain: Some("shop.myshopify.com".into()),
            entity: Some(EntityRef {
                kind: "subscription".into(),
                id: entity.into(),
                updated_at_ms,
            }),
            payload: format!(r#"{{"id":{entity},"price":"5.390"}}"#),
            body_sha256: "00".into(),
        }
    }

    #[tokio::test]
    async fn dedups_orders_versions_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let journal = Journal::open(&path, JournalOptions::default()).unwrap();

        let a = journal.append(event("w1", "7", Some(2_000))).await.unwrap();
        assert_eq!(
            a,
            AppendOutcome::Accepted {
                seq: 1,
                stale: false
            }
        );
        assert_eq!(
            journal.append(event("w1", "7", Some(2_000))).await.unwrap(),
            AppendOutcome::Duplicate
        );
        // Older version: journaled but stale.
        let b = journal.append(event("w2", "7", Some(1_000))).await.unwrap();
        assert_eq!(
            b,
            AppendOutcome::Accepted {
                seq: 2,
                stale: true
            }
        );
        // Tie: later seq wins.
        let c = journal.append(event("w3", "7", Some(2_000))).await.unwrap();
        assert_eq!(
            c,
            AppendOutcome::Accepted {
                seq: 3,
                stale: false
            }
        );
        // No updatedAt: journaled, versions untouched.
        journal.append(event("w4", "7", None)).await.unwrap();
        journal.probe().await.unwrap();
        assert_eq!(journal.stats().events(), 4);

        let reader = JournalReader::open(&path).unwrap();
        assert_eq!(reader.max_seq().unwrap(), 4);
        assert_eq!(
            reader.entity_version("subscription", "7").unwrap(),
            Some((2_000, 3))
        );
        let newest = reader.newest_entities_after("subscription", 0, 10).unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].webhook_id, "w3");
        assert!(reader
            .newest_entities_after("subscription", 3, 10)
            .unwrap()
            .is_empty());
        let all = reader.events_after(1, 2).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        // Exact decimal survives (arbitrary_precision).
        assert_eq!(all[0].payload["price"].to_string(), "\"5.390\"");
        journal.shutdown().await;
        assert!(matches!(
            journal.append(event("w5", "7", None)).await,
            Err(JournalError::Closed)
        ));

        // Reopening keeps the stats.
        let again = Journal::open(&path, JournalOptions::default()).unwrap();
        assert_eq!(again.stats().events(), 4);
        assert!(again.stats().last_received_ms().is_some());
        again.shutdown().await;
    }

    #[test]
    fn reader_refuses_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = JournalReader::open(&dir.path().join("nope.sqlite")).unwrap_err();
        assert!(err.to_string().contains("nope.sqlite"), "{err}");
    }
}
