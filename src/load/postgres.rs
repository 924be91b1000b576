//! The Postgres [`Database`] (sfackler's synchronous `postgres` client: the loader runs
//! on the writer thread, which is not async). Text parameters are cast by the server
//! (`$1::text::timestamptz`), so no client-side type mapping is needed.

use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use super::columns::Cell;
use super::dialect::{Database, DbError, Dialect};

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
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
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

    fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, DbError> {
        // the simple protocol returns every value as text
        let messages = self.client.simple_query(sql).map_err(db_err)?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }
}
