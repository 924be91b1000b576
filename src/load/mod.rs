//! The database loader (`source-loop sync --into URL`): a [`Writer`] on the engine that
//! keeps one table per stream, one row per primary key at its newest version, in SQLite
//! or Postgres.
//!
//! ## Contract
//! * **Newest wins**: an upsert never replaces a row whose version (`updated_at`;
//!   `created_at` for activity logs) is newer than the incoming one. Instants are compared
//!   as instants (`timestamptz` on Postgres; fixed-width UTC text on SQLite, which sorts
//!   as the instants do).
//! * **Exactly once**: rows are written in a transaction that stays open until the
//!   stream's next checkpoint; the checkpoint's state is saved in [`STATE_TABLE`] and
//!   committed in that same transaction. A kill at any moment loses only uncommitted rows
//!   whose state was not saved either, so the next run reads them again; rows are
//!   upserts, so nothing is ever doubled. The next run starts from the saved state: no
//!   state file.
//! * **Full-refresh streams** (customers, products) are staged in a temporary table
//!   during the pass; at the pass's checkpoint (the end of a complete pass) the table is
//!   replaced in one transaction: rows of the pass upserted, rows the pass did not see
//!   deleted. An incomplete pass changes nothing.
//! * **Schema**: tables and columns come from the stream schemas ([`columns`]); missing
//!   tables and columns are created (a new column is filled from `_record`) before the
//!   read starts, in one transaction; a column whose type differs from the schema's is an
//!   error naming the table and the column, and nothing is written.

pub mod apply;
pub mod columns;
pub mod dialect;
pub mod postgres;
pub mod sqlite;
pub mod tx;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::event::{Event, FailureType, Level};
use crate::output::Writer;
use crate::state::InputState;
use crate::streams::{self, Selected, StreamKind};

use columns::{cell, Cell, CellError, Layout};
pub use dialect::{Database, DbError, Dialect, SavedState, STATE_TABLE};
use tx::Tx;

/// Where to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://user:password@host:port/db`).
    Postgres(String),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(LoadError::Url(url.to_string()));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_string()));
        }
        Err(LoadError::Url(redact(url)))
    }

    /// The target as it may be shown (a password replaced by `***`).
    pub fn display(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite:{}", p.display()),
            Target::Postgres(u) => redact(u),
        }
    }

    /// The SQL of the target's backend (known before connecting).
    pub fn dialect(&self) -> &'static dyn Dialect {
        match self {
            Target::Sqlite(_) => &sqlite::SqliteDialect,
            Target::Postgres(_) => &postgres::PostgresDialect,
        }
    }

    pub fn connect(&self) -> Result<Box<dyn Database>, LoadError> {
        let connect = |source| LoadError::Connect {
            target: self.display(),
            source,
        };
        Ok(match self {
            Target::Sqlite(p) => Box::new(sqlite::Sqlite::open(p).map_err(connect)?),
            Target::Postgres(u) => Box::new(postgres::Postgres::connect(u).map_err(connect)?),
        })
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--into {0:?} is not a database URL: use sqlite:PATH (e.g. sqlite:loop.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE")]
    Url(String),
    #[error("cannot connect to {target}: {source}; check the URL and that the database is up")]
    Connect {
        target: String,
        #[source]
        source: DbError,
    },
    #[error("table {table}, column {column}: the database has type {found}, the stream's schema needs {want}; drop or rename that column (or the table) and sync again")]
    Conflict {
        table: &'static str,
        column: String,
        found: String,
        want: &'static str,
    },
    #[error("{what}: {source}")]
    Db {
        what: String,
        #[source]
        source: DbError,
    },
    #[error(transparent)]
    Cell(#[from] CellError),
    #[error("stream {stream}: a record is not a JSON object ({source})")]
    Record {
        stream: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("stream {stream}: a record has no `{key}` (part of its table's primary key); it cannot be stored")]
    NoKey { stream: &'static str, key: String },
    #[error("the saved state of stream {stream:?} in table {STATE_TABLE} is not JSON ({detail}); delete that row to resync the stream from start_date")]
    State { stream: String, detail: String },
}

impl LoadError {
    /// Who acts: a URL or a table layout is the user's to fix; a database that cannot be
    /// reached or fails is worth retrying.
    pub fn failure_type(&self) -> FailureType {
        match self {
            LoadError::Url(_) | LoadError::Conflict { .. } | LoadError::State { .. } => {
                FailureType::Config
            }
            LoadError::Connect { .. } | LoadError::Db { .. } => FailureType::Transient,
            LoadError::Cell(_) | LoadError::Record { .. } | LoadError::NoKey { .. } => {
                FailureType::System
            }
        }
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(DbError) -> LoadError {
    let what = what.into();
    move |source| LoadError::Db { what, source }
}

/// The loader's connection: idle, or inside the transaction the stream's next checkpoint
/// commits. A state type rather than a flag beside the connection: rows are written only
/// through an open [`Tx`], and a transaction ends only by committing it, rolling it back
/// or dropping it (rolled back), each of which hands the connection back idle.
enum Conn {
    Idle(Box<dyn Database>),
    InTx(Tx),
    /// Only for the moment the connection moves between the two states.
    Moving,
}

impl Conn {
    /// The open transaction, begun if none is.
    fn tx(&mut self) -> Result<&mut Tx, LoadError> {
        if let Conn::Idle(_) = self {
            let (next, begun) = match std::mem::replace(self, Conn::Moving) {
                Conn::Idle(db) => match Tx::begin(db) {
                    Ok(tx) => (Conn::InTx(tx), Ok(())),
                    Err(f) => (Conn::Idle(f.db), Err(f.error)),
                },
                other => (other, Ok(())),
            };
            *self = next;
            begun.map_err(failed("cannot start a transaction"))?;
        }
        match self {
            Conn::InTx(tx) => Ok(tx),
            _ => Err(Conn::moving()),
        }
    }

    /// The connection, in a transaction or not.
    fn db(&mut self) -> Result<&mut dyn Database, LoadError> {
        match self {
            Conn::Idle(db) => Ok(db.as_mut()),
            Conn::InTx(tx) => Ok(&mut **tx),
            Conn::Moving => Err(Conn::moving()),
        }
    }

    /// Commits the open transaction, if any (a failed commit is rolled back).
    fn commit(&mut self) -> Result<(), DbError> {
        let (next, committed) = match std::mem::replace(self, Conn::Moving) {
            Conn::InTx(tx) => match tx.commit() {
                Ok(db) => (Conn::Idle(db), Ok(())),
                Err(f) => (Conn::Idle(f.db), Err(f.error)),
            },
            other => (other, Ok(())),
        };
        *self = next;
        committed
    }

    /// Rolls back the open transaction, if any.
    fn rollback(&mut self) -> Result<(), DbError> {
        let (next, rolled_back) = match std::mem::replace(self, Conn::Moving) {
            Conn::InTx(tx) => {
                let (db, rolled_back) = tx.rollback();
                (Conn::Idle(db), rolled_back)
            }
            other => (other, Ok(())),
        };
        *self = next;
        rolled_back
    }

    fn moving() -> LoadError {
        LoadError::Db {
            what: "the loader's connection".into(),
            source: DbError("used while it changed state".into()),
        }
    }
}

/// The loader: tables prepared, state read, then the engine's [`Writer`].
pub struct Loader {
    conn: Conn,
    sql: &'static dyn Dialect,
    layouts: HashMap<&'static str, Layout>,
    /// Multi-row upsert statements by (table, staged, rows).
    upserts: HashMap<(&'static str, bool, usize), String>,
    /// Rows not yet sent, by (table, staged): written in multi-row statements before
    /// every commit (one round trip per chunk instead of per row).
    pending: HashMap<(&'static str, bool), Pending>,
    /// Full-refresh streams whose current pass is staged.
    staged: HashSet<&'static str>,
    /// Month partitions created or seen in this session (Postgres).
    partitions: HashSet<String>,
    unstorable: Unstorable,
}

/// The state-table row holding the last applied journal `seq` ([`Event::JournalCheckpoint`]).
pub const JOURNAL_APPLIED_KEY: &str = "webhooks:applied";

/// What the loader does with a record it cannot store (a value that does not fit its
/// column, no key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstorable {
    /// Stop with the error: a sync's records were validated, so this is a real fault.
    Fail,
    /// Warn and go on: a webhook payload is not validated, and the event is kept whole
    /// in `webhook_events` anyway (`serve --into`).
    Warn,
}

impl Loader {
    /// Creates or extends every stream's table, the state table and the metric views (one
    /// transaction: all or nothing), and returns the loader with the saved state and the
    /// warnings to show.
    pub fn prepare(
        db: Box<dyn Database>,
        streams: &[&'static streams::StreamDef],
    ) -> Result<(Loader, InputState, Vec<String>), LoadError> {
        let sql = db.dialect();
        let mut warnings = Vec::new();
        let mut layouts = HashMap::new();
        let mut tx = Tx::begin(db).map_err(|f| failed("cannot start a transaction")(f.error))?;
        // an error returns here and drops `tx`: rolled back
        tx.batch(&sql.create_state_table())
            .map_err(failed(format!("cannot create table {STATE_TABLE}")))?;
        for def in streams {
            let mut layout = Layout::of(def);
            warnings.extend(layout.warnings.iter().cloned());
            ensure_table(&mut *tx, &mut layout, &mut warnings)?;
            layouts.insert(def.name, layout);
        }
        tx.batch(sql.views())
            .map_err(failed("cannot create the metric views"))?;
        let mut db = tx
            .commit()
            .map_err(|f| failed("cannot commit the tables")(f.error))?;
        let state = load_state(db.as_mut())?;
        Ok((
            Loader {
                conn: Conn::Idle(db),
                sql,
                layouts,
                upserts: HashMap::new(),
                pending: HashMap::new(),
                staged: HashSet::new(),
                partitions: HashSet::new(),
                unstorable: Unstorable::Fail,
            },
            state,
            warnings,
        ))
    }

    /// Records that cannot be stored are warned about instead of failing the load.
    pub fn warn_on_unstorable(mut self) -> Loader {
        self.unstorable = Unstorable::Warn;
        self
    }

    /// Rolls back the open transaction, if any: rows since the last commit are gone, and
    /// so are the partitions made in it.
    fn rollback(&mut self) -> Result<(), LoadError> {
        self.forget_uncommitted();
        self.conn.rollback().map_err(failed("cannot roll back"))
    }

    /// Begins a transaction if none is open.
    fn begin(&mut self) -> Result<(), LoadError> {
        self.conn.tx().map(drop)
    }

    /// What this session remembers of a transaction that did not commit.
    fn forget_uncommitted(&mut self) {
        if let Conn::InTx(_) = self.conn {
            self.partitions.clear();
            self.pending.clear();
        }
    }

    fn layout(&self, stream: &str) -> Result<&Layout, LoadError> {
        self.layouts.get(stream).ok_or_else(|| LoadError::Db {
            what: format!("stream {stream}"),
            source: DbError("no table was prepared for it".into()),
        })
    }

    fn stream_started(&mut self, sel: &Selected) -> Result<(), LoadError> {
        if !matches!(sel.def.kind, StreamKind::FullRefresh(_)) {
            return Ok(());
        }
        let layout = self.layout(sel.def.name)?;
        let (create, clear) = (self.sql.create_stage(layout), self.sql.clear_stage(layout));
        self.conn
            .tx()?
            .batch(&format!("{create}; {clear}"))
            .map_err(failed(format!("cannot stage table {}", sel.def.name)))?;
        self.staged.insert(sel.def.name);
        Ok(())
    }

    /// Upserts one record (JSON text) into its table, or its stage during a full-refresh
    /// pass, in the open transaction (started if none is). Rows are sent in chunks, at the
    /// latest before the next commit.
    fn upsert(&mut self, stream: &'static str, data: &str) -> Result<(), LoadError> {
        // only the top-level fields are parsed, and only those with a column
        let fields: HashMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(data).map_err(|source| LoadError::Record { stream, source })?;
        let layout = self.layout(stream)?;
        let mut cells = Vec::with_capacity(layout.columns.len() + 1);
        for col in &layout.columns {
            let value = match fields.get(&col.field) {
                Some(raw) => Some(
                    serde_json::from_str::<Value>(raw.get())
                        .map_err(|source| LoadError::Record { stream, source })?,
                ),
                None => None,
            };
            cells.push(cell(layout.table, col, value.as_ref())?);
        }
        if cells.first() == Some(&Cell::Null) {
            return Err(LoadError::NoKey {
                stream,
                key: layout.key.field.clone(),
            });
        }
        let position = |c: &Option<columns::Column>| {
            c.as_ref()
                .and_then(|c| layout.columns.iter().position(|x| x.name == c.name))
        };
        let partition_at = position(&layout.partition);
        let version_at = position(&layout.version);
        let partition = match (&layout.partition, partition_at.map(|i| &cells[i])) {
            (None, _) => None,
            (Some(_), Some(Cell::Text(t))) => Some(t.get(..7).unwrap_or_default().to_string()),
            (Some(p), _) => {
                return Err(LoadError::NoKey {
                    stream,
                    key: p.field.clone(),
                })
            }
        };
        let key = format!("{:?}/{:?}", cells[0], partition_at.map(|i| &cells[i]));
        cells.push(Cell::Text(data.to_string()));
        let staged = self.staged.contains(stream);
        self.begin()?;
        if let Some(month) = partition {
            self.ensure_partition(stream, &month)?;
        }
        let pending = self.pending.entry((stream, staged)).or_default();
        pending.add(key, cells, version_at);
        if pending.rows.len() >= SEND_ROWS {
            self.send_pending()?;
        }
        Ok(())
    }

    /// Sends every pending row (chunks of [`CHUNKS`] rows, each statement prepared once).
    fn send_pending(&mut self) -> Result<(), LoadError> {
        let pending = std::mem::take(&mut self.pending);
        for ((stream, staged), rows) in pending {
            let mut rows = rows.rows.into_iter().peekable();
            while rows.peek().is_some() {
                let left = rows.len();
                let n = CHUNKS.iter().copied().find(|&c| c <= left).unwrap_or(1);
                let params: Vec<Cell> = rows.by_ref().take(n).flatten().collect();
                let statement = (stream, staged, n);
                if !self.upserts.contains_key(&statement) {
                    let layout = self.layout(stream)?;
                    let into = if staged {
                        dialect::stage_name(stream)
                    } else {
                        stream.to_string()
                    };
                    let sql = self.sql.upsert(layout, &into, n);
                    self.upserts.insert(statement, sql);
                }
                // borrowed, not copied: a chunk's statement is the text of up to 64 rows
                let sql = &self.upserts[&statement];
                self.conn
                    .tx()?
                    .execute(sql, &params)
                    .map_err(failed(format!("cannot write rows of table {stream}")))?;
            }
        }
        Ok(())
    }

    /// Creates the month partition a row goes to, once per session.
    fn ensure_partition(&mut self, table: &'static str, month: &str) -> Result<(), LoadError> {
        let name = format!("{table}_{month}");
        if self.partitions.contains(&name) {
            return Ok(());
        }
        let sql = self
            .sql
            .create_partition(table, month)
            .ok_or_else(|| LoadError::Db {
                what: format!("table {table}"),
                source: DbError(format!("{month:?} is not a month")),
            })?;
        self.conn
            .tx()?
            .batch(&sql)
            .map_err(failed(format!("cannot create partition {name}")))?;
        self.partitions.insert(name);
        Ok(())
    }

    fn checkpoint(
        &mut self,
        def: &'static streams::StreamDef,
        state: &crate::state::StreamState,
    ) -> Result<(), LoadError> {
        self.begin()?;
        self.send_pending()?;
        if self.staged.remove(def.name) {
            let layout = self.layout(def.name)?;
            for sql in self.sql.replace_from_stage(layout) {
                self.conn
                    .tx()?
                    .batch(&sql)
                    .map_err(failed(format!("cannot replace table {}", def.name)))?;
            }
        }
        self.commit_state(def.name, &state.to_value(def))
    }

    /// Saves `state` under `key` in [`STATE_TABLE`] and commits it with every row written
    /// since the last commit.
    fn commit_state(&mut self, key: &str, state: &Value) -> Result<(), LoadError> {
        self.begin()?;
        self.send_pending()?;
        let now = loop_time::format_instant(chrono::Utc::now());
        let params = [
            Cell::Text(key.to_string()),
            Cell::Text(state.to_string()),
            Cell::Text(now),
        ];
        let sql = self.sql.save_state();
        self.conn
            .tx()?
            .execute(&sql, &params)
            .map_err(failed(format!("cannot save the state of {key}")))?;
        let committed = self.conn.commit();
        if committed.is_err() {
            // a failed commit is rolled back, with the partitions made in it
            self.partitions.clear();
        }
        committed.map_err(failed(format!("cannot commit {key}")))
    }

    fn handle(&mut self, event: &Event) -> Result<(), LoadError> {
        match event {
            Event::StreamStarted(sel) => self.stream_started(sel),
            Event::Record { stream, data } => match self.upsert(stream, data.get()) {
                // a webhook's payload was never validated: the event is still kept whole
                // in webhook_events, and the stream's next sync brings the API's version
                Err(e @ (LoadError::Cell(_) | LoadError::NoKey { .. }))
                    if self.unstorable == Unstorable::Warn =>
                {
                    crate::output::warning_line(&format!("not applied to {stream}: {e}"));
                    Ok(())
                }
                other => other,
            },
            Event::Checkpoint { stream, state, .. } => self.checkpoint(stream, state),
            Event::JournalCheckpoint { seq } => {
                self.commit_state(JOURNAL_APPLIED_KEY, &serde_json::json!({ "seq": seq }))
            }
            Event::Log { level, message } => {
                match level {
                    Level::Warn | Level::Error => crate::output::warning_line(message),
                    Level::Info => eprintln!("source-loop: {message}"),
                    Level::Debug => {}
                }
                Ok(())
            }
            Event::Status { .. } | Event::Error { .. } => Ok(()),
        }
    }

    /// Recomputes the materialized views (after a load, after webhook upserts).
    pub fn refresh_views(&mut self) -> Result<(), LoadError> {
        match self.sql.refresh_views() {
            Some(sql) => self
                .conn
                .db()?
                .batch(sql)
                .map_err(failed("cannot refresh the materialized metric views")),
            None => Ok(()),
        }
    }

    /// Rows per table, for the closing line.
    pub fn row_counts(&mut self) -> Vec<(&'static str, Option<i64>)> {
        let mut tables: Vec<&'static str> = self.layouts.keys().copied().collect();
        tables.sort();
        tables
            .into_iter()
            .map(|t| (t, self.conn.db().ok().and_then(|db| db.row_count(t).ok())))
            .collect()
    }
}

/// Pending rows are sent once this many wait (and before every commit).
const SEND_ROWS: usize = 256;
/// Rows per statement: the largest that fits what is pending (a few prepared statements
/// per table cover any count).
const CHUNKS: &[usize] = &[64, 16, 4, 1];

/// Rows waiting to be sent for one table, one per key: a newer version of a key replaces
/// the older one here already (one statement must not touch a row twice), by the same
/// rule as the upsert (the stored version unless the new one is at least as new).
#[derive(Default)]
struct Pending {
    rows: Vec<Vec<Cell>>,
    by_key: HashMap<String, usize>,
}

impl Pending {
    fn add(&mut self, key: String, cells: Vec<Cell>, version_at: Option<usize>) {
        let Some(&at) = self.by_key.get(&key) else {
            self.by_key.insert(key, self.rows.len());
            self.rows.push(cells);
            return;
        };
        let newer = match version_at.map(|v| (&self.rows[at][v], &cells[v])) {
            None => true,
            Some((Cell::Null, _)) => true,
            Some((Cell::Text(old), Cell::Text(new))) => new >= old,
            Some((Cell::Int(old), Cell::Int(new))) => new >= old,
            Some(_) => false,
        };
        if newer {
            self.rows[at] = cells;
        }
    }
}

/// Creates the table, or adds the columns it lacks; a column of another type is a
/// conflict.
fn ensure_table(
    db: &mut dyn Database,
    layout: &mut Layout,
    warnings: &mut Vec<String>,
) -> Result<(), LoadError> {
    let dialect = db.dialect();
    let table = layout.table;
    let Some(existing) = db
        .columns(table)
        .map_err(failed(format!("cannot read the columns of table {table}")))?
    else {
        if dialect.partitions_by_month() {
            layout.partition = layout.partition_candidate();
        }
        return db
            .batch(&dialect.create_table(layout))
            .map_err(failed(format!("cannot create table {table}")));
    };
    // a table created partitioned stays so (and one created before, unpartitioned, too)
    let partitioned = db.is_partitioned(table).map_err(failed(format!(
        "cannot read how table {table} is partitioned"
    )))?;
    if partitioned {
        layout.partition = layout.partition_candidate();
    }
    let wanted: Vec<(&str, &str, columns::ColType)> = layout
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.field.as_str(), c.ty))
        .chain([(columns::RECORD_COLUMN, "", columns::ColType::Json)])
        .collect();
    // every conflict before any change
    for &(name, _, ty) in &wanted {
        let want = dialect.reported_type(ty);
        if let Some((_, found)) = existing.iter().find(|(n, f)| n == name && f != want) {
            return Err(LoadError::Conflict {
                table,
                column: name.to_string(),
                found: found.clone(),
                want,
            });
        }
    }
    for &(name, field, ty) in &wanted {
        if existing.iter().any(|(n, _)| n == name) {
            continue;
        }
        db.batch(&dialect.add_column(table, name, ty))
            .map_err(failed(format!("cannot add column {name} to table {table}")))?;
        db.batch(&dialect.backfill_column(table, name, field, ty))
            .map_err(failed(format!(
                "cannot fill the new column {name} of table {table}"
            )))?;
        warnings.push(format!(
            "table {table}: added column {name} ({}) for the schema's field {field}, filled from _record",
            dialect.type_name(ty)
        ));
    }
    Ok(())
}

fn load_state(db: &mut dyn Database) -> Result<InputState, LoadError> {
    let rows = db
        .saved_states()
        .map_err(failed(format!("cannot read table {STATE_TABLE}")))?;
    let mut state = InputState::new();
    for SavedState {
        stream,
        state: text,
    } in rows
    {
        let v: Value = serde_json::from_str(&text).map_err(|e| LoadError::State {
            stream: stream.clone(),
            detail: e.to_string(),
        })?;
        state.insert(stream, v);
    }
    Ok(state)
}

/// What a load left behind, for the command's closing line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Rows per table after the load, by table name (`None`: the count failed).
    pub row_counts: Vec<(&'static str, Option<i64>)>,
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = self
            .row_counts
            .iter()
            .map(|(t, n)| match n {
                Some(n) => format!("{t} {n}"),
                None => format!("{t} ?"),
            })
            .collect();
        write!(f, "rows now: {}", counts.join(", "))
    }
}

impl Writer for Loader {
    type Output = LoadSummary;
    type Error = LoadError;

    fn write(&mut self, event: &Event) -> Result<(), LoadError> {
        self.handle(event)
    }

    /// Rows after the last checkpoint are not covered by a saved state: they are rolled
    /// back, and the next run reads them again.
    fn finish(mut self) -> Result<LoadSummary, LoadError> {
        self.rollback()?;
        self.refresh_views()?;
        Ok(LoadSummary {
            row_counts: self.row_counts(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_newest_version_of_each_key() {
        let row = |id: i64, at: &str| vec![Cell::Int(id), Cell::Text(at.into())];
        let mut p = Pending::default();
        p.add("1".into(), row(1, "2025-01-02T00:00:00.000Z"), Some(1));
        p.add("1".into(), row(1, "2025-01-01T00:00:00.000Z"), Some(1));
        p.add("2".into(), row(2, "2025-01-01T00:00:00.000Z"), Some(1));
        p.add("2".into(), row(2, "2025-01-03T00:00:00.000Z"), Some(1));
        assert_eq!(
            p.rows,
            [
                row(1, "2025-01-02T00:00:00.000Z"),
                row(2, "2025-01-03T00:00:00.000Z")
            ]
        );
    }

    #[test]
    fn urls_name_their_database_and_passwords_never_show() {
        assert_eq!(
            Target::parse("sqlite:data/loop.db").unwrap(),
            Target::Sqlite("data/loop.db".into())
        );
        assert_eq!(
            Target::parse("sqlite:///tmp/x.db").unwrap(),
            Target::Sqlite("/tmp/x.db".into())
        );
        let pg = Target::parse("postgres://app:s3cret@127.0.0.1:5432/loop").unwrap();
        assert_eq!(pg.display(), "postgres://app:***@127.0.0.1:5432/loop");
        let e = Target::parse("mysql://root:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqlite:PATH") && !e.contains("pw@"), "{e}");
    }
}
