//! Singer's catalog, both ways. Out (`--discover`): every stream with its schema, key,
//! replication key and the standard `metadata` (breadcrumbs, `inclusion`,
//! `selected-by-default`, `forced-replication-method`, `valid-replication-keys`,
//! `table-key-properties`). In (`--catalog`, `--properties`): the selected streams as
//! the engine's neutral [`Selected`], and the fields deselected per stream.
//!
//! Selection follows the Singer convention: a stream is read when its root metadata
//! (breadcrumb `[]`) says `selected: true` (or the legacy stream-level `selected`); a
//! top-level field is left out when its metadata says `selected: false`. Keys and
//! cursors are `inclusion: automatic`: they always stay, whatever `selected` says (as
//! Singer has it, and as Meltano expects when a select rule names other fields only);
//! a catalog that deselects one while claiming it is not automatic is refused rather
//! than half-honoured.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::config::MoneyType;
use crate::streams::{self, Selected, StreamDef, StreamKind, SyncMode};

const FULL_TABLE: &str = "FULL_TABLE";
const INCREMENTAL: &str = "INCREMENTAL";

fn forced_method(def: &StreamDef) -> &'static str {
    match def.kind {
        StreamKind::FullRefresh(_) => FULL_TABLE,
        StreamKind::Incremental(_) | StreamKind::Journal(_) => INCREMENTAL,
    }
}

/// Fields a target always gets: the key and the cursor.
fn automatic(def: &StreamDef, field: &str) -> bool {
    field == def.primary_key || def.cursor() == Some(field)
}

/// One discovered stream.
pub fn catalog_entry(def: &StreamDef, money_type: MoneyType) -> Value {
    let schema = def.schema_value(money_type);
    let mut root = json!({
        "inclusion": "available",
        "selected-by-default": true,
        "forced-replication-method": forced_method(def),
        "table-key-properties": [def.primary_key],
    });
    if let Some(cursor) = def.cursor() {
        root["valid-replication-keys"] = json!([cursor]);
    }
    let mut metadata = vec![json!({"breadcrumb": [], "metadata": root})];
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for field in props.keys() {
            let inclusion = if automatic(def, field) {
                "automatic"
            } else {
                "available"
            };
            metadata.push(json!({
                "breadcrumb": ["properties", field],
                "metadata": {"inclusion": inclusion, "selected-by-default": true},
            }));
        }
    }
    let mut entry = json!({
        "tap_stream_id": def.name,
        "stream": def.name,
        "schema": schema,
        "key_properties": [def.primary_key],
        "replication_method": forced_method(def),
        "metadata": metadata,
    });
    if let Some(cursor) = def.cursor() {
        entry["replication_key"] = json!(cursor);
    }
    entry
}

/// The `--discover` output.
pub fn discovered_catalog(journal_configured: bool, money_type: MoneyType) -> Value {
    let streams: Vec<Value> = streams::available(journal_configured)
        .map(|def| catalog_entry(def, money_type))
        .collect();
    json!({ "streams": streams })
}

/// A catalog this tap cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalog: not valid JSON ({0}); pass the catalog `--discover` printed, with streams selected")]
    NotJson(String),
    #[error("invalid catalog: no `streams` list; pass the catalog `--discover` printed, with streams selected")]
    NoStreams,
    #[error("invalid catalog: streams[{0}] has neither `tap_stream_id` nor `stream`")]
    NoName(usize),
    #[error(
        "invalid catalog: streams[{index}]: stream {name:?} is selected but this tap has no such stream; it has {}",
        streams::names()
    )]
    UnknownStream { index: usize, name: String },
    #[error("invalid catalog: stream {stream:?}: `metadata` must be a list of {{\"breadcrumb\", \"metadata\"}} entries ({problem})")]
    Metadata { stream: String, problem: String },
    #[error("invalid catalog: stream {stream:?}: replication method {method:?} is not supported; use INCREMENTAL or FULL_TABLE")]
    Method { stream: String, method: String },
    #[error("invalid catalog: stream {stream:?}: replication key {got:?}, but this stream's is {want:?}")]
    ReplicationKey {
        stream: String,
        want: String,
        got: String,
    },
    #[error("invalid catalog: stream {stream:?}: field {field:?} is deselected, but it is the stream's {role} and is always sent; remove `selected: false` from its metadata (or keep its `inclusion: automatic` from --discover)")]
    AutomaticDeselected {
        stream: String,
        field: String,
        role: &'static str,
    },
    #[error("invalid catalog: stream {0:?} is listed twice")]
    Duplicate(String),
}

/// Fields to leave out of each selected stream's SCHEMA and RECORDs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelection {
    pub dropped: HashMap<&'static str, HashSet<String>>,
}

/// A parsed catalog: what to read, which fields to leave out, and notes for stderr
/// (deselections this tap does not apply).
#[derive(Debug, Default)]
pub struct ParsedCatalog {
    pub selected: Vec<Selected>,
    pub fields: FieldSelection,
    pub warnings: Vec<String>,
}

/// A stream's metadata entries by breadcrumb.
fn metadata_of(stream: &str, s: &Value) -> Result<Vec<(Vec<String>, Value)>, CatalogError> {
    let bad = |problem: String| CatalogError::Metadata {
        stream: stream.to_string(),
        problem,
    };
    let Some(list) = s.get("metadata") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad(format!("got {}", short(list))))?;
    list.iter()
        .map(|e| {
            let crumb = e
                .get("breadcrumb")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("an entry has no `breadcrumb` list: {}", short(e))))?
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| {
                    bad(format!(
                        "a breadcrumb is not a list of strings: {}",
                        short(e)
                    ))
                })?;
            let md = e.get("metadata").cloned().unwrap_or(Value::Null);
            if !md.is_object() {
                return Err(bad(format!(
                    "an entry's `metadata` is not an object: {}",
                    short(e)
                )));
            }
            Ok((crumb, md))
        })
        .collect()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

pub fn parse_catalog(text: &str) -> Result<ParsedCatalog, CatalogError> {
    let v: Value = serde_json::from_str(text).map_err(|e| CatalogError::NotJson(e.to_string()))?;
    let streams = v
        .get("streams")
        .and_then(Value::as_array)
        .ok_or(CatalogError::NoStreams)?;
    let mut out = ParsedCatalog::default();
    for (index, s) in streams.iter().enumerate() {
        let name = s
            .get("tap_stream_id")
            .or_else(|| s.get("stream"))
            .and_then(Value::as_str)
            .ok_or(CatalogError::NoName(index))?;
        let metadata = metadata_of(name, s)?;
        let root = metadata
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, m)| m.clone())
            .unwrap_or(Value::Null);
        let selected = root
            .get("selected")
            .or_else(|| s.get("selected"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !selected {
            continue;
        }
        let def = streams::find(name).ok_or_else(|| CatalogError::UnknownStream {
            index,
            name: name.to_string(),
        })?;
        let method = root
            .get("replication-method")
            .or_else(|| s.get("replication_method"))
            .and_then(Value::as_str)
            .unwrap_or(forced_method(def));
        let mode = match method.to_ascii_uppercase().as_str() {
            INCREMENTAL => SyncMode::Incremental,
            FULL_TABLE => SyncMode::FullRefresh,
            _ => {
                return Err(CatalogError::Method {
                    stream: name.to_string(),
                    method: method.to_string(),
                })
            }
        };
        let sel = Selected::new(def, mode);
        if sel.mode == SyncMode::Incremental {
            let key = root
                .get("replication-key")
                .or_else(|| s.get("replication_key"))
                .and_then(Value::as_str);
            let want = def.cursor().unwrap_or_default();
            if let Some(got) = key.filter(|k| *k != want) {
                return Err(CatalogError::ReplicationKey {
                    stream: name.to_string(),
                    want: want.to_string(),
                    got: got.to_string(),
                });
            }
        }
        let mut dropped = HashSet::new();
        for (crumb, md) in &metadata {
            if md.get("selected").and_then(Value::as_bool) != Some(false) {
                continue;
            }
            match crumb.as_slice() {
                [p, field] if p == "properties" => {
                    if automatic(def, field) {
                        // Singer's rule: an `inclusion: automatic` field is sent whatever
                        // `selected` says (Meltano writes `selected: false` on the key when
                        // a select rule names other fields only)
                        if md.get("inclusion").and_then(Value::as_str) == Some("automatic") {
                            continue;
                        }
                        return Err(CatalogError::AutomaticDeselected {
                            stream: name.to_string(),
                            field: field.clone(),
                            role: if field == def.primary_key {
                                "primary key"
                            } else {
                                "replication key"
                            },
                        });
                    }
                    dropped.insert(field.clone());
                }
                [] => {}
                _ => out.warnings.push(format!(
                    "stream {name:?}: field {} is deselected, but only top-level fields can be left out; it is sent",
                    crumb.join(".")
                )),
            }
        }
        if out.selected.iter().any(|o| o.def.name == name) {
            return Err(CatalogError::Duplicate(name.to_string()));
        }
        out.selected.push(sel);
        out.fields.dropped.insert(def.name, dropped);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected_catalog(edit: impl Fn(&mut Value)) -> String {
        let mut c = discovered_catalog(false, MoneyType::Number);
        for s in c["streams"].as_array_mut().unwrap() {
            s["metadata"][0]["metadata"]["selected"] = json!(true);
        }
        edit(&mut c);
        c.to_string()
    }

    #[test]
    fn the_discovered_catalog_selected_reads_every_stream_in_its_forced_mode() {
        let p = parse_catalog(&selected_catalog(|_| {})).unwrap();
        let got: Vec<(&str, SyncMode)> = p.selected.iter().map(|s| (s.def.name, s.mode)).collect();
        assert_eq!(
            got,
            vec![
                ("subscriptions", SyncMode::Incremental),
                ("orders", SyncMode::Incremental),
                ("customers", SyncMode::FullRefresh),
                ("products", SyncMode::FullRefresh),
                ("activity_logs", SyncMode::Incremental),
            ]
        );
        assert!(p.fields.dropped.values().all(HashSet::is_empty));
    }

    #[test]
    fn unselected_streams_are_skipped_and_fields_deselected() {
        let p = parse_catalog(&selected_catalog(|c| {
            let streams = c["streams"].as_array_mut().unwrap();
            streams.retain(|s| s["stream"] == "orders" || s["stream"] == "customers");
            streams[1]["metadata"][0]["metadata"]["selected"] = json!(false);
            let md = streams[0]["metadata"].as_array_mut().unwrap();
            for e in md.iter_mut() {
                if e["breadcrumb"] == json!(["properties", "status"]) {
                    e["metadata"]["selected"] = json!(false);
                }
            }
            md.push(json!({"breadcrumb": ["properties", "lineItems", "items", "properties", "sku"], "metadata": {"selected": false}}));
        }))
        .unwrap();
        assert_eq!(p.selected.len(), 1);
        assert_eq!(p.selected[0].def.name, "orders");
        assert_eq!(
            p.fields.dropped["orders"],
            HashSet::from(["status".to_string()])
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        // as Meltano writes it for `select: [orders.status]`: the key stays
        let p = parse_catalog(&selected_catalog(|c| {
            for e in c["streams"][1]["metadata"].as_array_mut().unwrap() {
                let status = e["breadcrumb"] == json!(["properties", "status"]);
                if !e["breadcrumb"].as_array().unwrap().is_empty() {
                    e["metadata"]["selected"] = json!(status);
                }
            }
        }))
        .unwrap();
        let dropped = &p.fields.dropped["orders"];
        assert!(!dropped.contains("id") && !dropped.contains("updatedAt"));
        assert!(dropped.contains("shopifyId") && !dropped.contains("status"));
    }

    #[test]
    fn bad_catalogs_name_the_problem() {
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "not valid JSON"),
            ("{}".into(), "no `streams`"),
            (
                json!({"streams": [{"tap_stream_id": "refunds", "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]}]}).to_string(),
                "\"refunds\" is selected but this tap has no such stream",
            ),
            (
                selected_catalog(|c| c["streams"][0]["metadata"][1] = json!({"breadcrumb": ["properties", "id"], "metadata": {"selected": false}})),
                "field \"id\" is deselected, but it is the stream's primary key",
            ),
            (
                selected_catalog(|c| c["streams"][0]["metadata"][0]["metadata"]["replication-method"] = json!("LOG_BASED")),
                "\"LOG_BASED\" is not supported",
            ),
            (
                selected_catalog(|c| c["streams"][0]["metadata"][0]["metadata"]["replication-key"] = json!("createdAt")),
                "replication key \"createdAt\", but this stream's is \"updatedAt\"",
            ),
            (
                selected_catalog(|c| c["streams"][0]["metadata"] = json!({"selected": true})),
                "`metadata` must be a list",
            ),
        ];
        for (text, want) in cases {
            let e = parse_catalog(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}\n  wanted: {want}");
        }
    }
}
