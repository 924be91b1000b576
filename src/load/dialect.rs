//! What differs between SQLite and Postgres, and nothing else: type names, parameter
//! syntax, how a column's existing type is read back, and the metric views' SQL. Every
//! statement the loader runs is built here from a [`Layout`], once for both dialects,
//! and a [`Database`] (one per dialect) only executes them.

use super::columns::{Cell, ColType, Layout, RECORD_COLUMN};

/// The table holding each stream's connector state, committed with the rows it covers.
pub const STATE_TABLE: &str = "_source_loop_state";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A database error, with the statement's purpose.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

/// One connection to a target database, executing the dialect's statements.
pub trait Database: Send {
    fn dialect(&self) -> Dialect;
    /// Runs one or more statements without parameters (DDL, BEGIN, COMMIT).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Runs one statement with parameters (prepared once and cached).
    fn execute(&mut self, sql: &str, params: &[Cell]) -> Result<u64, DbError>;
    /// The table's columns and their types as the database reports them (lowercase);
    /// `None` when the table does not exist.
    fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, DbError>;
    /// Rows of text columns (e.g. the state table, the views in tests).
    fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, DbError>;
}

/// `"name"`, with quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Dialect {
    /// The SQL type a column is created with.
    pub fn type_name(self, ty: ColType) -> &'static str {
        match (self, ty) {
            (Dialect::Sqlite, ColType::BigInt | ColType::Boolean) => "INTEGER",
            (Dialect::Sqlite, ColType::Double) => "REAL",
            // ISO 8601 UTC text with milliseconds sorts as the instants do; exact
            // decimals stay text so no float ever rounds them
            (Dialect::Sqlite, _) => "TEXT",
            (Dialect::Postgres, ColType::BigInt) => "bigint",
            (Dialect::Postgres, ColType::Boolean) => "boolean",
            (Dialect::Postgres, ColType::Double) => "double precision",
            (Dialect::Postgres, ColType::Timestamp) => "timestamptz",
            (Dialect::Postgres, ColType::Money) => "numeric",
            (Dialect::Postgres, ColType::Text) => "text",
            (Dialect::Postgres, ColType::Json) => "jsonb",
        }
    }

    /// How the database reports that type back (`PRAGMA table_info`,
    /// `information_schema.columns.data_type`), lowercase.
    pub fn reported_type(self, ty: ColType) -> &'static str {
        match (self, ty) {
            (Dialect::Sqlite, _) => match self.type_name(ty) {
                "INTEGER" => "integer",
                "REAL" => "real",
                _ => "text",
            },
            (Dialect::Postgres, ColType::Timestamp) => "timestamp with time zone",
            (Dialect::Postgres, _) => self.type_name(ty),
        }
    }

    /// Parameter `n` (1-based) for a column of type `ty`.
    fn param(self, n: usize, ty: ColType) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            // text goes in as text and is cast by the server: no client-side type mapping
            Dialect::Postgres => match ty {
                ColType::BigInt => format!("${n}::bigint"),
                ColType::Boolean => format!("${n}::boolean"),
                ColType::Double => format!("${n}::float8"),
                _ => format!("${n}::text::{}", self.type_name(ty)),
            },
        }
    }

    fn column_defs(self, layout: &Layout) -> String {
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

    pub fn create_table(self, layout: &Layout) -> String {
        let partition = match (&layout.partition, self) {
            (Some(p), Dialect::Postgres) => format!(" PARTITION BY RANGE ({})", quote(&p.name)),
            _ => String::new(),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}){partition}",
            quote(layout.table),
            self.column_defs(layout)
        )
    }

    /// The month partition `YYYY-MM` of a partitioned table (Postgres).
    pub fn create_partition(self, table: &str, month: &str) -> Option<String> {
        let (y, m) = month.split_once('-')?;
        let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Some(format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{y:04}-{m:02}-01 00:00:00+00') TO ('{ny:04}-{nm:02}-01 00:00:00+00')",
            quote(&format!("{table}_{y:04}_{m:02}")),
            quote(table),
        ))
    }

    /// Whether an existing table is partitioned (Postgres).
    pub fn is_partitioned_query(self, table: &str) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!(
                "SELECT COUNT(*) FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relname = '{}'",
                table.replace('\'', "''")
            )),
        }
    }

    /// The staging table of a full-refresh pass (per connection: a crash drops it).
    pub fn create_stage(self, layout: &Layout) -> String {
        format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} ({})",
            quote(&stage_name(layout.table)),
            self.column_defs(layout)
        )
    }

    pub fn add_column(self, table: &str, name: &str, ty: ColType) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            quote(table),
            quote(name),
            self.type_name(ty)
        )
    }

    /// Fills a column added to an existing table from the records already stored.
    pub fn backfill_column(self, table: &str, name: &str, field: &str, ty: ColType) -> String {
        let value = match self {
            Dialect::Sqlite => format!("json_extract({}, '$.\"{field}\"')", quote(RECORD_COLUMN)),
            Dialect::Postgres => match ty {
                ColType::Json => format!("{} -> '{field}'", quote(RECORD_COLUMN)),
                _ => format!(
                    "({} ->> '{field}')::{}",
                    quote(RECORD_COLUMN),
                    self.type_name(ty)
                ),
            },
        };
        format!("UPDATE {} SET {} = {value}", quote(table), quote(name))
    }

    /// Inserts `rows` records, or replaces each stored row unless the stored version is
    /// newer. (The rows of one statement must have distinct keys: the loader keeps the
    /// newest of each key.)
    pub fn upsert(self, layout: &Layout, into: &str, rows: usize) -> String {
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
            self.on_conflict(layout)
        )
    }

    /// `ON CONFLICT … DO UPDATE … WHERE newest` (the rule written once).
    fn on_conflict(self, layout: &Layout) -> String {
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

    /// A complete full-refresh pass replaces the table: rows of the pass are upserted
    /// (newest wins), rows the pass did not see are deleted, the stage is emptied. Run
    /// in the transaction that commits the pass's state.
    pub fn replace_from_stage(self, layout: &Layout) -> Vec<String> {
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
                self.on_conflict(layout)
            ),
            format!("DELETE FROM {table} WHERE {key} NOT IN (SELECT {key} FROM {stage})"),
            format!("DELETE FROM {stage}"),
        ]
    }

    pub fn clear_stage(self, layout: &Layout) -> String {
        format!("DELETE FROM {}", quote(&stage_name(layout.table)))
    }

    pub fn create_state_table(self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (stream TEXT PRIMARY KEY, state {} NOT NULL, saved_at {} NOT NULL)",
            self.type_name(ColType::Json),
            self.type_name(ColType::Timestamp),
        )
    }

    pub fn save_state(self) -> String {
        format!(
            "INSERT INTO {STATE_TABLE} (stream, state, saved_at) VALUES ({}, {}, {}) \
             ON CONFLICT (stream) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at",
            self.param(1, ColType::Text),
            self.param(2, ColType::Json),
            self.param(3, ColType::Timestamp),
        )
    }

    pub fn load_states(self) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT stream, state FROM {STATE_TABLE}"),
            Dialect::Postgres => format!("SELECT stream, state::text FROM {STATE_TABLE}"),
        }
    }

    pub fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Recomputes the materialized metric views (Postgres; SQLite's are plain views).
    pub fn refresh_views(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(
                "REFRESH MATERIALIZED VIEW customer_ltv; REFRESH MATERIALIZED VIEW churn_by_month",
            ),
        }
    }

    /// The metric views (docs/metrics.md), created with the tables.
    pub fn views(self) -> &'static str {
        match self {
            Dialect::Sqlite => include_str!("views/sqlite.sql"),
            Dialect::Postgres => include_str!("views/postgres.sql"),
        }
    }
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
    use crate::streams;

    #[test]
    fn the_upsert_never_replaces_a_newer_version() {
        let l = Layout::of(streams::find("orders").unwrap());
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = d.upsert(&l, "orders", 1);
            assert!(
                sql.ends_with(
                    "WHERE t.\"updated_at\" IS NULL OR excluded.\"updated_at\" >= t.\"updated_at\""
                ),
                "{sql}"
            );
            assert!(sql.contains("ON CONFLICT (\"id\")"), "{sql}");
        }
        assert!(Dialect::Postgres
            .upsert(&l, "orders", 1)
            .contains("::text::timestamptz"));
        let two = Dialect::Sqlite.upsert(&l, "orders", 2);
        let per_row = l.columns.len() + 1;
        assert!(
            two.contains(&format!("?{per_row}), (?{}", per_row + 1)),
            "{two}"
        );
    }
}
