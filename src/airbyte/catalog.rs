//! Airbyte's discovered catalog (from the stream table) out. The configured catalog in is
//! read by [`crate::formats::catalog`]: `sync` reads it too.

use serde_json::{json, Value};

use crate::config::MoneyType;
use crate::streams::{self, StreamDef};

pub fn airbyte_stream(def: &StreamDef, money_type: MoneyType) -> Value {
    let mut s = json!({
        "name": def.name,
        "json_schema": def.schema_value(money_type),
        "source_defined_primary_key": [[def.primary_key]],
        "is_resumable": true,
    });
    match def.cursor() {
        Some(cursor) => {
            s["supported_sync_modes"] = json!(["full_refresh", "incremental"]);
            s["source_defined_cursor"] = json!(true);
            s["default_cursor_field"] = json!([cursor]);
        }
        None => s["supported_sync_modes"] = json!(["full_refresh"]),
    }
    s
}

pub fn catalog_message(journal_configured: bool, money_type: MoneyType) -> Value {
    let streams: Vec<Value> = streams::available(journal_configured)
        .map(|def| airbyte_stream(def, money_type))
        .collect();
    json!({"type": "CATALOG", "catalog": {"streams": streams}})
}
