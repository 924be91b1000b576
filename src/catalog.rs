//! Discovered catalog (from the stream table) and configured catalog parsing.

use serde_json::{json, Value};

use crate::streams::{Mode, StreamDef, STREAMS};

pub fn stream_schema(def: &StreamDef) -> Value {
    serde_json::from_str(def.schema).expect("bundled schemas are valid JSON")
}

pub fn airbyte_stream(def: &StreamDef) -> Value {
    let mut s = json!({
        "name": def.name,
        "json_schema": stream_schema(def),
        "source_defined_primary_key": [[def.primary_key]],
        "is_resumable": true,
    });
    if def.is_incremental() {
        s["supported_sync_modes"] = json!(["full_refresh", "incremental"]);
        s["source_defined_cursor"] = json!(true);
        s["default_cursor_field"] = json!([def.cursor.expect("incremental streams have a cursor")]);
    } else {
        s["supported_sync_modes"] = json!(["full_refresh"]);
    }
    s
}

pub fn catalog_message(include_journal: bool) -> Value {
    let streams: Vec<Value> = STREAMS
        .iter()
        .filter(|d| include_journal || !matches!(d.mode, Mode::Journal))
        .map(airbyte_stream)
        .collect();
    json!({"type": "CATALOG", "catalog": {"streams": streams}})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    FullRefresh,
    Incremental,
}

#[derive(Debug, Clone)]
pub struct Selected {
    pub def: &'static StreamDef,
    pub mode: SyncMode,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid catalog: {0}")]
pub struct CatalogError(pub String);

pub fn parse_configured_catalog(text: &str) -> Result<Vec<Selected>, CatalogError> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        CatalogError(format!(
            "the catalog file is not valid JSON ({e}); pass a ConfiguredAirbyteCatalog, e.g. catalog/configured_catalog.json"
        ))
    })?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or_else(|| CatalogError("the catalog has no `streams` list; pass a ConfiguredAirbyteCatalog such as catalog/configured_catalog.json".into()))?;
    let mut out: Vec<Selected> = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let name = s
            .pointer("/stream/name")
            .and_then(Value::as_str)
            .ok_or_else(|| CatalogError(format!("streams[{i}] has no `stream.name`")))?;
        let def = STREAMS.iter().find(|d| d.name == name).ok_or_else(|| {
            let known: Vec<&str> = STREAMS.iter().map(|d| d.name).collect();
            CatalogError(format!(
                "streams[{i}]: unknown stream {name:?}; this source has {}",
                known.join(", ")
            ))
        })?;
        let mode = match s.get("sync_mode").and_then(Value::as_str) {
            Some("incremental") if def.is_incremental() => SyncMode::Incremental,
            // Loop has no filter for this stream: it is read in full every time. Some
            // platforms (PyAirbyte) ask for incremental on every stream; a full read
            // satisfies that request, so it is not an error.
            Some("incremental") => SyncMode::FullRefresh,
            Some("full_refresh") | None => SyncMode::FullRefresh,
            Some(other) => {
                return Err(CatalogError(format!(
                    "stream {name:?}: sync_mode {other:?} is neither full_refresh nor incremental"
                )))
            }
        };
        if let Some(cf) = s.get("cursor_field").and_then(Value::as_array) {
            if mode == SyncMode::Incremental && !cf.is_empty() {
                let want = def.cursor.unwrap_or_default();
                if cf.len() != 1 || cf[0].as_str() != Some(want) {
                    return Err(CatalogError(format!(
                        "stream {name:?}: the cursor is source-defined ([\"{want}\"]), got {cf:?}"
                    )));
                }
            }
        }
        if out.iter().any(|o| o.def.name == name) {
            return Err(CatalogError(format!("stream {name:?} is listed twice")));
        }
        out.push(Selected { def, mode });
    }
    Ok(out)
}
