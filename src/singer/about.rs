//! `--about`: what the tap is, for Meltano and for people. The settings are read from
//! `spec.json` — the one statement of every config key, its type, default and secrecy,
//! which a test holds to the parser's key constants (`config::keys`) — so they cannot
//! drift from what the config parser accepts.

use serde_json::{json, Map, Value};

use super::TAP_NAME;

/// The connection specification: every config key (a JSON schema).
const SPEC_JSON: &str = include_str!("../../spec.json");

/// What Meltano may ask of this tap.
pub const CAPABILITIES: &[&str] = &["catalog", "discover", "state", "about", "properties"];

const DESCRIPTION: &str =
    "Loop Subscriptions Admin API (subscriptions, orders, customers, products, activity logs, webhook events) as a Singer tap";

/// One setting: a top-level key of the config.
fn setting(name: &str, prop: &Value, required: bool) -> Value {
    let mut s = Map::new();
    s.insert("name".into(), json!(name));
    if let Some(t) = prop.get("title") {
        s.insert("label".into(), t.clone());
    }
    s.insert(
        "type".into(),
        prop.get("type").cloned().unwrap_or(json!("string")),
    );
    s.insert(
        "default".into(),
        prop.get("default").cloned().unwrap_or(Value::Null),
    );
    // spec.json marks secrets the way Airbyte reads them
    s.insert(
        "secret".into(),
        json!(prop.get("airbyte_secret") == Some(&json!(true))),
    );
    s.insert("required".into(), json!(required));
    if let Some(options) = prop.get("enum") {
        s.insert("options".into(), options.clone());
    }
    if let Some(d) = prop.get("description") {
        s.insert("description".into(), d.clone());
    }
    Value::Object(s)
}

/// Every setting, in the spec's order.
pub fn settings() -> Vec<Value> {
    // spec.json is compiled in and held valid by config's tests
    let spec: Value = serde_json::from_str(SPEC_JSON).unwrap_or_default();
    let required: Vec<&str> = spec
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = spec.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut list: Vec<(&String, &Value)> = props.iter().collect();
    list.sort_by_key(|(_, p)| p.get("order").and_then(Value::as_u64).unwrap_or(u64::MAX));
    list.into_iter()
        .map(|(name, p)| setting(name, p, required.contains(&name.as_str())))
        .collect()
}

pub fn about_json() -> Value {
    json!({
        "name": TAP_NAME,
        "description": DESCRIPTION,
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": CAPABILITIES,
        "settings": settings(),
    })
}

fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn about_markdown() -> String {
    let mut md = format!(
        "# {TAP_NAME} {}\n\n{DESCRIPTION}.\n\n## Capabilities\n\n",
        env!("CARGO_PKG_VERSION")
    );
    for c in CAPABILITIES {
        md.push_str(&format!("- `{c}`\n"));
    }
    md.push_str("\n## Settings\n\n| Setting | Type | Default | Secret | Required | Description |\n| --- | --- | --- | --- | --- | --- |\n");
    for s in settings() {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            cell(&s["name"]),
            cell(&s["type"]),
            cell(&s["default"]),
            if s["secret"] == json!(true) {
                "yes"
            } else {
                ""
            },
            if s["required"] == json!(true) {
                "yes"
            } else {
                ""
            },
            cell(&s["description"]),
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_a_setting_and_the_token_is_secret() {
        let s = settings();
        let names: Vec<&str> = s.iter().filter_map(|s| s["name"].as_str()).collect();
        for key in [
            "api_token",
            "start_date",
            crate::config::PAGE_SIZE.key,
            crate::config::CHECKPOINT_INTERVAL_RECORDS.key,
            crate::config::MONEY_TYPE.key,
            "webhook_secrets",
        ] {
            assert!(names.contains(&key), "{key} missing from {names:?}");
        }
        let token = s.iter().find(|s| s["name"] == "api_token").unwrap();
        assert_eq!(token["secret"], true);
        assert_eq!(token["required"], true);
        let page = s.iter().find(|s| s["name"] == "page_size").unwrap();
        assert_eq!(page["default"], json!(crate::config::PAGE_SIZE.default));
        assert_eq!(page["type"], "integer");
    }
}
