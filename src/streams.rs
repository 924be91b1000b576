//! The stream table: every stream is one entry of data plus a schema file, not a copy of
//! code. A stream's shape is a [`StreamKind`], so what cannot happen cannot be written
//! down: an incremental stream always has a cursor and its filter parameters, a
//! full-refresh stream has neither, and the webhook journal has no API endpoint.

use crate::config::MoneyType;
use crate::normalize;

/// Where a stream's records come from on the Loop Admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Path under the API base, without the leading slash; also the rate-limit key.
    pub path: &'static str,
    /// Extra query parameters every request sends (e.g. `type=ALL`).
    pub fixed_params: &'static [(&'static str, &'static str)],
}

/// An endpoint read by time windows on an epoch-filtered cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowed {
    pub endpoint: Endpoint,
    /// Field holding the record's version instant.
    pub cursor: &'static str,
    /// Query parameters bounding the cursor, in unix seconds.
    pub start_param: &'static str,
    pub end_param: &'static str,
}

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Read by time windows on the cursor (see `sync::incremental`).
    Incremental(Windowed),
    /// No filter known: every sync pages through everything.
    FullRefresh(Endpoint),
    /// A table of the webhook journal's database, incremental on its sequence number.
    Journal(JournalTable),
}

/// The journal tables a stream reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalTable {
    /// Every delivery `serve` journaled (and every repair `reconcile --repair` made).
    Events,
    /// One report per `reconcile` run.
    ReconcileRuns,
}

/// The journal stream's cursor: the journal's sequence number.
pub const JOURNAL_CURSOR: &str = "seq";
/// The stream of every journaled webhook event.
pub const WEBHOOK_EVENTS: &str = "webhook_events";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDef {
    pub name: &'static str,
    pub primary_key: &'static str,
    pub kind: StreamKind,
    /// The stream's JSON schema (`schemas/<name>.json`).
    pub schema: &'static str,
}

impl StreamDef {
    /// The field a platform may use as this stream's cursor (none for full refresh).
    pub fn cursor(&self) -> Option<&'static str> {
        match self.kind {
            StreamKind::Incremental(w) => Some(w.cursor),
            StreamKind::FullRefresh(_) => None,
            StreamKind::Journal(_) => Some(JOURNAL_CURSOR),
        }
    }

    /// The webhook entity kind (`subscription`, `order`) whose newer versions fold into
    /// this stream, if Loop sends webhooks for it (the shared entity table says which).
    pub fn webhook_kind(&self) -> Option<&'static str> {
        match self.kind {
            StreamKind::Incremental(_) => loop_entities::by_stream(self.name).map(|e| e.kind),
            _ => None,
        }
    }

    /// Whether an incremental read of this stream resumes from a cursor.
    pub fn supports_incremental(&self) -> bool {
        self.cursor().is_some()
    }

    /// The API endpoint, if the stream is read from the API.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match &self.kind {
            StreamKind::Incremental(w) => Some(&w.endpoint),
            StreamKind::FullRefresh(e) => Some(e),
            StreamKind::Journal(_) => None,
        }
    }

    /// The stream's JSON schema as a value, its money fields typed per `money_type` (the
    /// files are written in the default `number` form).
    pub fn schema_value(&self, money_type: MoneyType) -> serde_json::Value {
        // The bundled schemas are checked by `every_bundled_schema_is_a_json_object`.
        let mut schema = serde_json::from_str(self.schema).unwrap_or_default();
        if money_type != MoneyType::Number {
            normalize::type_money_fields(&mut schema, money_type);
        }
        schema
    }
}

const fn endpoint(path: &'static str) -> Endpoint {
    Endpoint {
        path,
        fixed_params: &[],
    }
}

pub const STREAMS: &[StreamDef] = &[
    StreamDef {
        name: "subscriptions",
        primary_key: "id",
        kind: StreamKind::Incremental(Windowed {
            endpoint: endpoint("subscription"),
            cursor: "updatedAt",
            start_param: "updatedAtStartEpoch",
            end_param: "updatedAtEndEpoch",
        }),
        schema: include_str!("../schemas/subscriptions.json"),
    },
    StreamDef {
        name: "orders",
        primary_key: "id",
        kind: StreamKind::Incremental(Windowed {
            endpoint: endpoint("order"),
            cursor: "updatedAt",
            start_param: "updatedAtStartEpoch",
            end_param: "updatedAtEndEpoch",
        }),
        schema: include_str!("../schemas/orders.json"),
    },
    StreamDef {
        name: "customers",
        primary_key: "id",
        kind: StreamKind::FullRefresh(endpoint("customer")),
        schema: include_str!("../schemas/customers.json"),
    },
    StreamDef {
        name: "products",
        primary_key: "shopifyId",
        kind: StreamKind::FullRefresh(Endpoint {
            path: "product",
            fixed_params: &[("type", "ALL")],
        }),
        schema: include_str!("../schemas/products.json"),
    },
    StreamDef {
        name: "activity_logs",
        primary_key: "id",
        kind: StreamKind::Incremental(Windowed {
            endpoint: endpoint("activityLog"),
            cursor: "createdAt",
            start_param: "createdAtStartEpoch",
            end_param: "createdAtEndEpoch",
        }),
        schema: include_str!("../schemas/activity_logs.json"),
    },
    StreamDef {
        name: WEBHOOK_EVENTS,
        primary_key: "id",
        kind: StreamKind::Journal(JournalTable::Events),
        schema: include_str!("../schemas/webhook_events.json"),
    },
    StreamDef {
        name: "reconciliation_reports",
        primary_key: "seq",
        kind: StreamKind::Journal(JournalTable::ReconcileRuns),
        schema: include_str!("../schemas/reconciliation_reports.json"),
    },
];

/// Every stream's name, comma-separated (for "unknown stream" messages).
pub fn names() -> String {
    STREAMS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn find(name: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().find(|s| s.name == name)
}

/// The stream whose records a webhook about `kind` entities (`subscription`, `order`)
/// carries newer versions of.
pub fn for_webhook_kind(kind: &str) -> Option<&'static StreamDef> {
    loop_entities::by_kind(kind).and_then(|e| find(e.stream))
}

/// The streams a sync may offer: the journal stream only when a journal is configured.
pub fn available(journal_configured: bool) -> impl Iterator<Item = &'static StreamDef> {
    STREAMS
        .iter()
        .filter(move |d| journal_configured || !matches!(d.kind, StreamKind::Journal(_)))
}

/// How the platform asked for a stream to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    FullRefresh,
    Incremental,
}

/// One selected stream: the front ends turn their catalogs into a list of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub def: &'static StreamDef,
    pub mode: SyncMode,
}

impl Selected {
    /// A request for `mode`, as the stream can serve it: a stream without a cursor is
    /// read in full whatever was asked (some platforms, e.g. PyAirbyte, ask for
    /// incremental on every stream; a full read satisfies that request).
    pub fn new(def: &'static StreamDef, mode: SyncMode) -> Self {
        let mode = match mode {
            SyncMode::Incremental if def.supports_incremental() => SyncMode::Incremental,
            _ => SyncMode::FullRefresh,
        };
        Selected { def, mode }
    }

    /// Every available stream, incremental where it can be: what a front end reads when
    /// no catalog selects streams.
    pub fn every_stream(journal_configured: bool) -> Vec<Selected> {
        available(journal_configured)
            .map(|def| Selected::new(def, SyncMode::Incremental))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_bundled_schema_is_a_json_object() {
        for def in STREAMS {
            let v: serde_json::Value = serde_json::from_str(def.schema)
                .unwrap_or_else(|e| panic!("schemas/{}.json: {e}", def.name));
            assert!(v.is_object(), "schemas/{}.json is not an object", def.name);
            assert_eq!(def.schema_value(MoneyType::Number), v);
        }
    }

    /// Every `type` in `schema` (any depth), with the path to it.
    fn types<'a>(schema: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
        match schema {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "type" {
                        out.push((path.clone(), v));
                    } else {
                        types(v, format!("{path}/{k}"), out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| types(v, path.clone(), out)),
            _ => {}
        }
    }

    #[test]
    fn every_field_has_one_type_a_destination_can_map() {
        for def in STREAMS {
            for money_type in [MoneyType::Number, MoneyType::String] {
                let schema = def.schema_value(money_type);
                let mut found = Vec::new();
                types(&schema, def.name.to_string(), &mut found);
                for (path, t) in found {
                    let non_null = match t {
                        Value::String(s) => vec![s.as_str()],
                        Value::Array(a) => a
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|s| *s != "null")
                            .collect(),
                        other => panic!("{path}: type {other}"),
                    };
                    assert_eq!(non_null.len(), 1, "{path}: {t} is a union ({money_type:?})");
                }
            }
        }
    }

    #[test]
    fn money_fields_are_the_only_numbers_and_ids_are_integers() {
        fn check(def: &StreamDef, name: &str, prop: &Value) {
            // the journal's streams are the connector's own shapes, not Loop's
            if matches!(def.kind, StreamKind::Journal(_)) {
                return;
            }
            let t = prop["type"].to_string();
            if normalize::MONEY_KEYS.contains(&name) {
                let want = normalize::money_schema(MoneyType::Number, prop.get("description"));
                assert_eq!(
                    prop, &want,
                    "{}.{name}: the file holds the number form",
                    def.name
                );
            } else {
                assert!(
                    !t.contains("number"),
                    "{}.{name}: {t} is a number but no money key",
                    def.name
                );
            }
            let is_id = name == "id" || name.ends_with("Id");
            if is_id && def.name != "webhook_events" {
                assert!(t.contains("integer"), "{}.{name}: {t}", def.name);
            }
            for nested in ["/properties", "/items/properties"] {
                if let Some(Value::Object(props)) = prop.pointer(nested) {
                    props.iter().for_each(|(k, p)| check(def, k, p));
                }
            }
        }
        for def in STREAMS {
            let schema = def.schema_value(MoneyType::Number);
            for (k, p) in schema["properties"].as_object().unwrap() {
                check(def, k, p);
            }
            let pk = &schema["properties"][def.primary_key]["type"];
            let want = if def.kind == StreamKind::Journal(JournalTable::Events) {
                "string"
            } else {
                "integer"
            };
            assert_eq!(pk, want, "{}: the primary key is never null", def.name);
        }
    }

    #[test]
    fn money_as_strings_types_every_money_field_string() {
        let orders = find("orders").unwrap().schema_value(MoneyType::String);
        let total = &orders["properties"]["totalPrice"];
        assert_eq!(total["type"], serde_json::json!(["string", "null"]));
        assert_eq!(total["pattern"], normalize::MONEY_PATTERN);
        let line = &orders["properties"]["lines"]["items"]["properties"]["price"];
        assert_eq!(line["type"], serde_json::json!(["string", "null"]));
        assert!(!orders.to_string().contains(r#""number""#));
    }

    #[test]
    fn every_webhook_entity_folds_into_an_incremental_stream_of_this_table() {
        for entity in loop_entities::ENTITIES {
            let def = find(entity.stream)
                .unwrap_or_else(|| panic!("{}: no stream {}", entity.kind, entity.stream));
            assert!(
                matches!(def.kind, StreamKind::Incremental(_)),
                "{}: webhooks fold only into an incremental stream",
                def.name
            );
            assert_eq!(def.webhook_kind(), Some(entity.kind));
            assert_eq!(for_webhook_kind(entity.kind), Some(def));
        }
        let folded = STREAMS.iter().filter(|d| d.webhook_kind().is_some());
        assert_eq!(folded.count(), loop_entities::ENTITIES.len());
        assert_eq!(for_webhook_kind("paymentMethod"), None);
    }

    #[test]
    fn incremental_requests_on_streams_without_a_cursor_read_in_full() {
        let customers = find("customers").unwrap();
        assert_eq!(
            Selected::new(customers, SyncMode::Incremental).mode,
            SyncMode::FullRefresh
        );
        let subs = find("subscriptions").unwrap();
        assert_eq!(
            Selected::new(subs, SyncMode::Incremental).mode,
            SyncMode::Incremental
        );
    }
}
