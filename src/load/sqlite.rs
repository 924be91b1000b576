//! The SQLite backend: its [`Dialect`] (type names, `?N` parameters, `json_extract`, the
//! plain metric views of `views/sqlite.sql`) and its [`Database`] (one file, WAL,
//! statements prepared once per connection, `BEGIN IMMEDIATE` transactions).

use std::path::Path;

use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::columns::{Cell, ColType, RECORD_COLUMN};
use super::dialect::{quote, Database, DbError, Dialect, SavedState, STATE_TABLE};

/// How long a statement waits for another writer before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// SQLite's page cache per connection, in KiB.
const PAGE_CACHE_KIB: i64 = 64 * 1024;
/// Prepared statements kept per connection (one upsert per table and stage, a few more).
const STATEMENT_CACHE: usize = 64;

/// SQLite's SQL: no partitions, plain views (nothing to refresh).
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn type_name(&self, ty: ColType) -> &'static str {
        match ty {
            ColType::BigInt | ColType::Boolean => "INTEGER",
            ColType::Double => "REAL",
            // ISO 8601 UTC text with milliseconds sorts as the instants do; exact
            // decimals stay text so no float ever rounds them
            _ => "TEXT",
        }
    }

    fn reported_type(&self, ty: ColType) -> &'static str {
        match self.type_name(ty) {
            "INTEGER" => "integer",
            "REAL" => "real",
            _ => "text",
        }
    }

    fn param(&self, n: usize, _ty: ColType) -> String {
        format!("?{n}")
    }

    fn record_field(&self, field: &str, _ty: ColType) -> String {
        format!("json_extract({}, '$.\"{field}\"')", quote(RECORD_COLUMN))
    }

    fn views(&self) -> &'static str {
        include_str!("views/sqlite.sql")
    }
}

pub struct Sqlite {
    conn: Connection,
}

fn db_err(e: rusqlite::Error) -> DbError {
    DbError(e.to_string())
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, DbError> {
        let conn = Connection::open(path)
            .map_err(|e| DbError(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        // WAL: readers (dashboards) never block the loader; NORMAL is durable at each
        // commit in WAL mode against a process kill (the loader's contract)
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        // a bounded page cache large enough for the B-tree pages an upsert touches (the
        // default 2 MiB made every upsert re-read pages through the kernel)
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Sqlite { conn })
    }
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(SqlValue::Null),
            Cell::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            Cell::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
            Cell::Float(f) => ToSqlOutput::Owned(SqlValue::Real(*f)),
            Cell::Text(s) => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Database for Sqlite {
    fn dialect(&self) -> &'static dyn Dialect {
        &SqliteDialect
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(db_err)
    }

    fn execute(&mut self, sql: &str, params: &[Cell]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
        let n = stmt
            .execute(params_from_iter(params.iter()))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, DbError> {
        let exists: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name, type FROM pragma_table_info(?1)")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([table], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?.to_lowercase(),
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(Some(rows))
    }

    fn is_partitioned(&mut self, _table: &str) -> Result<bool, DbError> {
        Ok(false)
    }

    fn row_count(&mut self, table: &str) -> Result<i64, DbError> {
        self.conn
            .query_row(&SqliteDialect.count_rows(table), [], |r| r.get(0))
            .map_err(db_err)
    }

    fn saved_states(&mut self) -> Result<Vec<SavedState>, DbError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT stream, state FROM {STATE_TABLE}"))
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(stream, state)| {
                Some(SavedState {
                    stream: stream?,
                    state: state?,
                })
            })
            .collect())
    }

    fn begin_transaction(&mut self) -> Result<(), DbError> {
        // IMMEDIATE: take the write lock now, so a busy database makes `begin` wait (up
        // to BUSY_TIMEOUT) rather than a later write fail mid-transaction
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)
    }

    fn commit_transaction(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch("COMMIT").map_err(db_err)
    }

    fn rollback_transaction(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch("ROLLBACK").map_err(db_err)
    }
}
