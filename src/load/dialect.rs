//! What a backend is: the [`Dialect`] trait (the SQL text a backend speaks) and the
//! [`Database`] trait (one connection that runs it). The statements whose shape is the
//! same everywhere (create table, upsert with the newest-wins rule, stage and replace,
//! the state row) are written once here as the trait's provided methods, from a
//! [`Layout`] and the few things a backend says about itself (type names, parameter
//! syntax, how a JSON field is read). Everything else — transactions, the metric views,
//! partitions, how rows are read back — is the backend's own, in `sqlite.rs` and
//! `postgres.rs`.

use super::columns::{Cell, ColType, Layout, RECORD_COLUMN};

/// The table holding each stream's connector state, committed with the rows it covers.
pub const STATE_TABLE: &str = "_source_loop_state";

/// A database error, with the statement's purpose.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

/// One saved row of [`STATE_TABLE`]: a stream (or `webhooks:applied`) and its state as
/// JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub stream: String,
    pub state: String,
}

/// One connection to a target database. It runs the statements its [`Dialect`] builds;
/// the queries the loader reads back come decoded into typed values.
pub trait Database: Send {
    /// The SQL this connection speaks.
    fn dialect(&self) -> &'static dyn Dialect;
    /// Runs one or more statements without parameters (DDL).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Runs one statement with parameters (prepared once and cached).
    fn execute(&mut self, sql: &str, params: &[Cell]) -> Result<u64, DbError>;
    /// The table's columns and their types as the database reports them (lowercase);
    /// `None` when the table does not exist.
    fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, DbError>;
    /// Whether an existing table is partitioned (by month; Postgres only).
    fn is_partitioned(&mut self, table: &str) -> Result<bool, DbError>;
    /// Rows in a table.
    fn row_count(&mut self, table: &str) -> Result<i64, DbError>;
    /// Every row of [`STATE_TABLE`].
    fn saved_states(&mut self) -> Result<Vec<SavedState>, DbError>;
    /// Transaction primitives, for [`super::tx::Tx`] only: begin with `Tx::begin`, end
    /// with `commit` or `rollback` on the guard (or by dropping it).
    fn begin_transaction(&mut self) -> Result<(), DbError>;
    fn commit_transaction(&mut self) -> Result<(), DbError>;
    fn rollback_transaction(&mut self) -> Result<(), DbError>;
}

/// `"name"`, with quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL a backend speaks. A backend implements the required methods (what differs);
/// the provided ones build every other statement the loader runs, once for all backends.
pub trait Dialect: Sync {
    /// The SQL type a column is created with.
    fn type_name(&self, ty: ColType) -> &'static str;

    /// How the database reports that type back (`PRAGMA table_info`,
    /// `information_schema.columns.data_type`), lowercase.
    fn reported_type(&self, ty: ColType) -> &'static str;

    /// Parameter `n` (1-based) for a column of type `ty`.
    fn param(&self, n: usize, ty: ColType) -> String;

    /// The value of the top-level `field` of the stored `_record`, as a column of type
    /// `ty` (to fill a column added to an existing table).
    fn record_field(&self, field: &str, ty: ColType) -> String;

    /// The metric views (docs/metrics.md), created with the tables.
    fn views(&self) -> &'static str;

    /// Recomputes the materialized metric views; `None` when the views are plain views.
    fn refresh_views(&self) -> Option<&'static str> {
        None
    }

    /// Whether new tables of [`super::columns::PARTITIONED`] streams are range-partitioned
    /// by month.
    fn partitions_by_month(&self) -> bool {
        false
    }

    /// The month partition `YYYY-MM` of a partitioned table; `None` when `month` is not a
    /// month (or the backend never partitions).
    fn create_partition(&self, _table: &str, _month: &str) -> Option<String> {
        None
    }

    fn column_defs(&self, layout: &Layout) -> String {
        let mut defs: Vec<String> = layout
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), self.type_name(c.ty)))
            .collect();
        defs.push(format!(
            "{} {} NOT NULL",
            quote(RECORD_COLUMN),
            self.type_name(ColType::Json)
        ));
        defs.push(format!("PRIMARY KEY ({})", conflict_key(layout)));
        defs.join(", ")
    }

    fn create_table(&self, layout: &Layout) -> String {
        let partition = match &layout.partition {
            Some(p) if self.partitions_by_month() => {
                format!(" PARTITION BY RANGE ({})", quote(&p.name))
            }
            _ => String::new(),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}){partition}",
            quote(layout.table),
            self.column_defs(layout)
        )
    }

    /// The staging table of a full-refresh pass (per connection: a crash drops it).
    fn create_stage(&self, layout: &Layout) -> String {
        format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} ({})",
            quote(&stage_name(layout.table)),
            self.column_defs(layout)
        )
    }

    fn add_column(&self, table: &str, name: &str, ty: ColType) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            quote(table),
            quote(name),
            self.type_name(ty)
        )
    }

    /// Fills a column added to an existing table from the records already stored.
    fn backfill_column(&self, table: &str, name: &str, field: &str, ty: ColType) -> String {
        format!(
            "UPDATE {} SET {} = {}",
            quote(table),
            quote(name),
            self.record_field(field, ty)
        )
    }

    /// Inserts `rows` records, or replaces each stored row unless the stored version is
    /// newer. (The rows of one statement must have distinct keys: the loader keeps the
    /// newest of each key.)
    fn upsert(&self, layout: &Layout, into: &str, rows: usize) -> String {
        let mut names: Vec<String> = layout.columns.iter().map(|c| quote(&c.name)).collect();
        names.push(quote(RECORD_COLUMN));
        let types: Vec<ColType> = layout
            .columns
            .iter()
            .map(|c| c.ty)
            .chain([ColType::Json])
            .collect();
        let values: Vec<String> = (0..rows)
            .map(|r| {
                let params: Vec<String> = types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| self.param(r * types.len() + i + 1, *ty))
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} AS t ({}) VALUES {} {}",
            quote(into),
            names.join(", "),
            values.join(", "),
            on_conflict(layout)
        )
    }

    /// A complete full-refresh pass replaces the table: rows of the pass are upserted
    /// (newest wins), rows the pass did not see are deleted, the stage is emptied. Run
    /// in the transaction that commits the pass's state.
    fn replace_from_stage(&self, layout: &Layout) -> Vec<String> {
        let stage = quote(&stage_name(layout.table));
        let table = quote(layout.table);
        let key = quote(&layout.key.name);
        let mut names: Vec<String> = layout.columns.iter().map(|c| quote(&c.name)).collect();
        names.push(quote(RECORD_COLUMN));
        let names = names.join(", ");
        vec![
            // `WHERE true`: SQLite's parser needs it before ON CONFLICT after a SELECT
            format!(
                "INSERT INTO {table} AS t ({names}) SELECT {names} FROM {stage} WHERE true {}",
                on_conflict(layout)
            ),
            format!("DELETE FROM {table} WHERE {key} NOT IN (SELECT {key} FROM {stage})"),
            format!("DELETE FROM {stage}"),
        ]
    }

    fn clear_stage(&self, layout: &Layout) -> String {
        format!("DELETE FROM {}", quote(&stage_name(layout.table)))
    }

    fn create_state_table(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (stream TEXT PRIMARY KEY, state {} NOT NULL, saved_at {} NOT NULL)",
            self.type_name(ColType::Json),
            self.type_name(ColType::Timestamp),
        )
    }

    fn save_state(&self) -> String {
        format!(
            "INSERT INTO {STATE_TABLE} (stream, state, saved_at) VALUES ({}, {}, {}) \
             ON CONFLICT (stream) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at",
            self.param(1, ColType::Text),
            self.param(2, ColType::Json),
            self.param(3, ColType::Timestamp),
        )
    }

    fn count_rows(&self, table: &str) -> String {
        format!("SELECT COUNT(*) FROM {}", quote(table))
    }
}

/// `ON CONFLICT … DO UPDATE … WHERE newest` (the rule written once).
fn on_conflict(layout: &Layout) -> String {
    let set: Vec<String> = layout
        .columns
        .iter()
        .skip(1)
        .map(|c| quote(&c.name))
        .chain([quote(RECORD_COLUMN)])
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let newest = match &layout.version {
        Some(v) => {
            let v = quote(&v.name);
            format!(" WHERE t.{v} IS NULL OR excluded.{v} >= t.{v}")
        }
        None => String::new(),
    };
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}{newest}",
        conflict_key(layout),
        set.join(", "),
    )
}

/// The primary key: the stream's key, plus the partition column of a partitioned table.
fn conflict_key(layout: &Layout) -> String {
    match &layout.partition {
        Some(p) => format!("{}, {}", quote(&layout.key.name), quote(&p.name)),
        None => quote(&layout.key.name),
    }
}

pub fn stage_name(table: &str) -> String {
    format!("_stage_{table}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{postgres::PostgresDialect, sqlite::SqliteDialect};
    use crate::streams;

    #[test]
    fn the_upsert_never_replaces_a_newer_version() {
        let l = Layout::of(streams::find("orders").unwrap());
        for d in [&SqliteDialect as &dyn Dialect, &PostgresDialect] {
            let sql = d.upsert(&l, "orders", 1);
            assert!(
                sql.ends_with(
                    "WHERE t.\"updated_at\" IS NULL OR excluded.\"updated_at\" >= t.\"updated_at\""
                ),
                "{sql}"
            );
            assert!(sql.contains("ON CONFLICT (\"id\")"), "{sql}");
        }
        assert!(PostgresDialect
            .upsert(&l, "orders", 1)
            .contains("::text::timestamptz"));
        let two = SqliteDialect.upsert(&l, "orders", 2);
        let per_row = l.columns.len() + 1;
        assert!(
            two.contains(&format!("?{per_row}), (?{}", per_row + 1)),
            "{two}"
        );
    }
}
