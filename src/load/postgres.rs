//! The Postgres backend: its [`Dialect`] (typed parameters cast by the server, month
//! partitions, the materialized metric views of `views/postgres.sql` and their refresh)
//! and its [`Database`] (sfackler's synchronous `postgres` client: the loader runs on the
//! writer thread, which is not async). Text parameters are cast by the server
//! (`$1::text::timestamptz`), so no client-side type mapping is needed.

use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::columns::{Cell, ColType, RECORD_COLUMN};
use super::dialect::{quote, Database, DbError, Dialect, SavedState, STATE_TABLE};

/// Postgres's SQL: native types, month partitions, materialized views.
pub struct PostgresDialect;

impl Dialect for PostgresDialect {
    fn type_name(&self, ty: ColType) -> &'static str {
        match ty {
            ColType::BigInt => "bigint",
            ColType::Boolean => "boolean",
            ColType::Double => "double precision",
            ColType::Timestamp => "timestamptz",
            ColType::Money => "numeric",
            ColType::Text => "text",
            ColType::Json => "jsonb",
        }
    }

    fn reported_type(&self, ty: ColType) -> &'static str {
        match ty {
            ColType::Timestamp => "timestamp with time zone",
            _ => self.type_name(ty),
        }
    }

    fn param(&self, n: usize, ty: ColType) -> String {
        // text goes in as text and is cast by the server: no client-side type mapping
        match ty {
            ColType::BigInt => format!("${n}::bigint"),
            ColType::Boolean => format!("${n}::boolean"),
            ColType::Double => format!("${n}::float8"),
            _ => format!("${n}::text::{}", self.type_name(ty)),
        }
    }

    fn record_field(&self, field: &str, ty: ColType) -> String {
        match ty {
            ColType::Json => format!("{} -> '{field}'", quote(RECORD_COLUMN)),
            _ => format!(
                "({} ->> '{field}')::{}",
                quote(RECORD_COLUMN),
                self.type_name(ty)
            ),
        }
    }

    fn views(&self) -> &'static str {
        include_str!("views/postgres.sql")
    }

    fn refresh_views(&self) -> Option<&'static str> {
        Some("REFRESH MATERIALIZED VIEW customer_ltv; REFRESH MATERIALIZED VIEW churn_by_month")
    }

    fn partitions_by_month(&self) -> bool {
        true
    }

    fn create_partition(&self, table: &str, month: &str) -> Option<String> {
        let (y, m) = month.split_once('-')?;
        let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Some(format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{y:04}-{m:02}-01 00:00:00+00') TO ('{ny:04}-{nm:02}-01 00:00:00+00')",
            quote(&format!("{table}_{y:04}_{m:02}")),
            quote(table),
        ))
    }
}

pub struct Postgres {
    client: Client,
    statements: HashMap<String, Statement>,
}

fn db_err(e: postgres::Error) -> DbError {
    // the server's message (with its detail) says more than the error's Display
    match e.as_db_error() {
        Some(d) => DbError(format!("{}: {}", d.severity(), d.message())),
        None => DbError(e.to_string()),
    }
}

impl Postgres {
    pub fn connect(url: &str) -> Result<Postgres, DbError> {
        let client = Client::connect(url, NoTls).map_err(db_err)?;
        Ok(Postgres {
            client,
            statements: HashMap::new(),
        })
    }
}

/// Each cell as the parameter type the statement declares (`$1::bigint`, `$2::text…`).
impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(i) => i.to_sql(ty, out),
            Cell::Bool(b) => b.to_sql(ty, out),
            Cell::Float(f) => f.to_sql(ty, out),
            Cell::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::BOOL, Type::FLOAT8, Type::TEXT].contains(ty)
    }

    postgres::types::to_sql_checked!();
}

impl Database for Postgres {
    fn dialect(&self) -> &'static dyn Dialect {
        &PostgresDialect
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).map_err(db_err)
    }

    fn execute(&mut self, sql: &str, params: &[Cell]) -> Result<u64, DbError> {
        let stmt = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql).map_err(db_err)?;
                self.statements.insert(sql.to_string(), s.clone());
                s
            }
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|c| c as _).collect();
        self.client.execute(&stmt, &refs).map_err(db_err)
    }

    fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .map_err(db_err)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).to_lowercase()))
                .collect(),
        ))
    }

    fn is_partitioned(&mut self, table: &str) -> Result<bool, DbError> {
        let row = self
            .client
            .query_one(
                "SELECT COUNT(*) FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relname = $1::text",
                &[&table],
            )
            .map_err(db_err)?;
        Ok(row.try_get::<_, i64>(0).map_err(db_err)? != 0)
    }

    fn row_count(&mut self, table: &str) -> Result<i64, DbError> {
        let row = self
            .client
            .query_one(&PostgresDialect.count_rows(table), &[])
            .map_err(db_err)?;
        row.try_get(0).map_err(db_err)
    }

    fn saved_states(&mut self) -> Result<Vec<SavedState>, DbError> {
        let rows = self
            .client
            .query(
                &format!("SELECT stream, state::text FROM {STATE_TABLE}"),
                &[],
            )
            .map_err(db_err)?;
        let mut states = Vec::with_capacity(rows.len());
        for r in rows {
            let stream: Option<String> = r.try_get(0).map_err(db_err)?;
            let state: Option<String> = r.try_get(1).map_err(db_err)?;
            if let (Some(stream), Some(state)) = (stream, state) {
                states.push(SavedState { stream, state });
            }
        }
        Ok(states)
    }

    fn begin_transaction(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("BEGIN").map_err(db_err)
    }

    fn commit_transaction(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("COMMIT").map_err(db_err)
    }

    fn rollback_transaction(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("ROLLBACK").map_err(db_err)
    }
}
