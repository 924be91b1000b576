//! A stream's table layout, derived from its JSON schema: one typed column per top-level
//! scalar field (snake_case), plus `_record` holding the whole record. And the one
//! conversion of a record's field into a column value ([`Cell`]), the same for every
//! dialect.

use serde_json::Value;

use crate::normalize::{format_instant, MONEY_KEYS};
use crate::streams::{StreamDef, StreamKind};

/// The column holding the whole record as JSON.
pub const RECORD_COLUMN: &str = "_record";

/// What a column holds; each dialect names its own SQL type for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// Integers as Loop sends them (ids, counts, epochs).
    BigInt,
    Text,
    /// An instant (UTC, milliseconds).
    Timestamp,
    /// An exact decimal amount.
    Money,
    Boolean,
    /// A non-money number.
    Double,
    /// A field whose schema type is not one scalar type: kept as JSON text.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// snake_case SQL name.
    pub name: String,
    /// The record's field.
    pub field: String,
    pub ty: ColType,
}

/// A table's layout.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: &'static str,
    /// The primary key column (first in `columns`).
    pub key: Column,
    /// Every typed column, the key first.
    pub columns: Vec<Column>,
    /// The column that orders versions ("newest wins"); none for streams without one.
    pub version: Option<Column>,
    /// The column the table is range-partitioned on by month (Postgres; set by the
    /// loader when it creates or finds the table partitioned).
    pub partition: Option<Column>,
    /// Fields whose schema type is unexpected (stored as JSON), for a WARN.
    pub warnings: Vec<String>,
}

/// `updatedAt` → `updated_at`, `shopifyId` → `shopify_id`, `totalPriceUsd` →
/// `total_price_usd`.
pub fn snake_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for (i, c) in field.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The non-null JSON schema types of a property.
fn types(prop: &Value) -> Vec<&str> {
    match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    }
}

/// The column type of one top-level property; `None` for objects and arrays (they live in
/// `_record`); `Err` with the reason for a type that is not one scalar.
fn column_type(field: &str, prop: &Value) -> Result<Option<ColType>, String> {
    let ts = types(prop);
    let money = MONEY_KEYS.contains(&field);
    match ts.as_slice() {
        ["integer"] => Ok(Some(ColType::BigInt)),
        ["number"] if money => Ok(Some(ColType::Money)),
        ["string"] if money => Ok(Some(ColType::Money)),
        ["number"] => Ok(Some(ColType::Double)),
        ["string"] if prop.get("format").and_then(Value::as_str) == Some("date-time") => {
            Ok(Some(ColType::Timestamp))
        }
        ["string"] => Ok(Some(ColType::Text)),
        ["boolean"] => Ok(Some(ColType::Boolean)),
        ["object"] | ["array"] => Ok(None),
        other => Err(format!("type {other:?}")),
    }
}

impl Layout {
    pub fn of(def: &'static StreamDef) -> Layout {
        // columns follow the schema files' own (number) money type, whatever the output's
        let schema = def.schema_value(crate::config::MoneyType::Number);
        let mut columns = Vec::new();
        let mut warnings = Vec::new();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (field, prop) in props {
                let ty = match column_type(field, prop) {
                    Ok(Some(ty)) => ty,
                    Ok(None) => continue,
                    Err(why) => {
                        warnings.push(format!(
                            "table {}: field {field} has an unexpected schema {why}: its column {} holds JSON",
                            def.name,
                            snake_case(field)
                        ));
                        ColType::Json
                    }
                };
                columns.push(Column {
                    name: snake_case(field),
                    field: field.clone(),
                    ty,
                });
            }
        }
        let key_at = columns
            .iter()
            .position(|c| c.field == def.primary_key)
            .unwrap_or(0);
        let key = columns.remove(key_at);
        columns.insert(0, key.clone());
        let version_field = match def.kind {
            StreamKind::FullRefresh(_) => Some("updatedAt"),
            _ => def.cursor(),
        };
        let version = version_field.and_then(|f| columns.iter().find(|c| c.field == f).cloned());
        Layout {
            table: def.name,
            key,
            columns,
            version,
            partition: None,
            warnings,
        }
    }
}

/// Streams partitioned by month of `createdAt` on Postgres: large, append-mostly, and
/// their `createdAt` never changes for an entity, so it can be part of the key.
pub const PARTITIONED: &[(&str, &str)] = &[("orders", "createdAt"), ("activity_logs", "createdAt")];

impl Layout {
    /// The column this stream would be partitioned on, if it is one of [`PARTITIONED`].
    pub fn partition_candidate(&self) -> Option<Column> {
        let (_, field) = PARTITIONED.iter().find(|(t, _)| *t == self.table)?;
        self.columns.iter().find(|c| c.field == *field).cloned()
    }
}

/// One column value, dialect-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Float(f64),
    /// Text, timestamps (`YYYY-MM-DDTHH:MM:SS.mmmZ`), exact decimals, JSON.
    Text(String),
}

/// A field value that does not fit its column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("table {table}, column {column}: value {value} is not {want}; the record is kept whole in _record, but the column cannot hold it (was the schema changed?)")]
pub struct CellError {
    pub table: &'static str,
    pub column: String,
    pub value: String,
    pub want: &'static str,
}

/// Converts a record's field for its column.
pub fn cell(table: &'static str, col: &Column, v: Option<&Value>) -> Result<Cell, CellError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(Cell::Null),
        Some(v) => v,
    };
    let bad = |want: &'static str| CellError {
        table,
        column: col.name.clone(),
        value: v.to_string(),
        want,
    };
    Ok(match col.ty {
        ColType::BigInt => Cell::Int(v.as_i64().ok_or_else(|| bad("an integer"))?),
        ColType::Boolean => Cell::Bool(v.as_bool().ok_or_else(|| bad("a boolean"))?),
        ColType::Double => Cell::Float(v.as_f64().ok_or_else(|| bad("a number"))?),
        ColType::Text => Cell::Text(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        ColType::Timestamp => {
            let s = v.as_str().ok_or_else(|| bad("a date-time"))?;
            let t = loop_time::parse_instant(s).ok_or_else(|| bad("an RFC 3339 date-time"))?;
            Cell::Text(format_instant(t))
        }
        // the exact digits (arbitrary_precision keeps a number's text)
        ColType::Money => match v {
            Value::Number(n) => Cell::Text(n.to_string()),
            Value::String(s) if crate::normalize::plain_decimal(s).is_some() => {
                Cell::Text(s.clone())
            }
            _ => return Err(bad("a decimal amount")),
        },
        ColType::Json => Cell::Text(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams;
    use serde_json::json;

    #[test]
    fn field_names_become_snake_case_columns() {
        assert_eq!(snake_case("updatedAt"), "updated_at");
        assert_eq!(snake_case("shopifyId"), "shopify_id");
        assert_eq!(snake_case("totalPriceUsd"), "total_price_usd");
        assert_eq!(snake_case("id"), "id");
    }

    #[test]
    fn subscriptions_get_typed_columns_and_the_key_first() {
        let l = Layout::of(streams::find("subscriptions").unwrap());
        assert_eq!(l.key.name, "id");
        assert_eq!(l.columns[0].name, "id");
        let ty = |n: &str| l.columns.iter().find(|c| c.name == n).map(|c| c.ty);
        assert_eq!(ty("id"), Some(ColType::BigInt));
        assert_eq!(ty("updated_at"), Some(ColType::Timestamp));
        assert_eq!(ty("total_line_item_price"), Some(ColType::Money));
        assert_eq!(ty("is_prepaid"), Some(ColType::Boolean));
        assert_eq!(ty("status"), Some(ColType::Text));
        assert_eq!(ty("lines"), None, "arrays stay in _record");
        assert_eq!(l.version.unwrap().name, "updated_at");
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn products_are_keyed_by_shopify_id() {
        let l = Layout::of(streams::find("products").unwrap());
        assert_eq!(l.key.name, "shopify_id");
        assert!(l.version.is_none());
    }

    #[test]
    fn money_keeps_its_digits_and_instants_are_utc_milliseconds() {
        let money = Column {
            name: "total_price".into(),
            field: "totalPrice".into(),
            ty: ColType::Money,
        };
        let v: Value = serde_json::from_str("12345678901234567.10").unwrap();
        assert_eq!(
            cell("orders", &money, Some(&v)),
            Ok(Cell::Text("12345678901234567.10".into()))
        );
        let ts = Column {
            name: "updated_at".into(),
            field: "updatedAt".into(),
            ty: ColType::Timestamp,
        };
        assert_eq!(
            cell("orders", &ts, Some(&json!("2024-03-05T12:11:12+02:00"))),
            Ok(Cell::Text("2024-03-05T10:11:12.000Z".into()))
        );
        let e = cell("orders", &money, Some(&json!("12,30"))).unwrap_err();
        assert!(e.to_string().contains("table orders, column total_price"));
    }
}
