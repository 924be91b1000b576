//! The configured catalog (Airbyte's `ConfiguredAirbyteCatalog` form) in, turned into the
//! engine's neutral [`Selected`] streams. `source-loop read` and `sync --catalog` read it;
//! the Singer front end reads Singer's own catalog (`singer::catalog`).

use serde_json::Value;

use crate::streams::{self, Selected, SyncMode};

/// A configured catalog this source cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalog: the catalog file is not valid JSON ({0}); pass a ConfiguredAirbyteCatalog, e.g. catalog/configured_catalog.json")]
    NotJson(String),
    #[error("invalid catalog: the catalog has no `streams` list; pass a ConfiguredAirbyteCatalog such as catalog/configured_catalog.json")]
    NoStreams,
    #[error("invalid catalog: streams[{0}] has no `stream.name`")]
    NoName(usize),
    #[error(
        "invalid catalog: streams[{index}]: unknown stream {name:?}; this source has {}",
        streams::names()
    )]
    UnknownStream { index: usize, name: String },
    #[error("invalid catalog: stream {stream:?}: sync_mode {mode:?} is neither full_refresh nor incremental")]
    SyncMode { stream: String, mode: String },
    #[error("invalid catalog: stream {stream:?}: the cursor is source-defined ([\"{want}\"]), got {got}")]
    CursorField {
        stream: String,
        want: &'static str,
        got: String,
    },
    #[error("invalid catalog: stream {0:?} is listed twice")]
    Duplicate(String),
}

pub fn parse_configured_catalog(text: &str) -> Result<Vec<Selected>, CatalogError> {
    let v: Value = serde_json::from_str(text).map_err(|e| CatalogError::NotJson(e.to_string()))?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or(CatalogError::NoStreams)?;
    let mut out: Vec<Selected> = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let name = s
            .pointer("/stream/name")
            .and_then(Value::as_str)
            .ok_or(CatalogError::NoName(i))?;
        let def = streams::find(name).ok_or_else(|| CatalogError::UnknownStream {
            index: i,
            name: name.to_string(),
        })?;
        let asked = match s.get("sync_mode").and_then(Value::as_str) {
            Some("incremental") => SyncMode::Incremental,
            Some("full_refresh") | None => SyncMode::FullRefresh,
            Some(other) => {
                return Err(CatalogError::SyncMode {
                    stream: name.to_string(),
                    mode: other.to_string(),
                })
            }
        };
        let selected = Selected::new(def, asked);
        if let Some(cf) = s.get("cursor_field").and_then(Value::as_array) {
            if selected.mode == SyncMode::Incremental && !cf.is_empty() {
                let want = def.cursor().unwrap_or_default();
                if cf.len() != 1 || cf[0].as_str() != Some(want) {
                    return Err(CatalogError::CursorField {
                        stream: name.to_string(),
                        want,
                        got: format!("{cf:?}"),
                    });
                }
            }
        }
        if out.iter().any(|o| o.def.name == name) {
            return Err(CatalogError::Duplicate(name.to_string()));
        }
        out.push(selected);
    }
    Ok(out)
}
