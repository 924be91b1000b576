//! `source-loop spec`: the connector specification as an Airbyte SPEC message.

use serde_json::Value;

use super::{printed, ExitStatus};
use crate::airbyte::{print_message, spec_message, SPEC_JSON};

pub fn spec() -> ExitStatus {
    // (spec.json is embedded and a test parses it)
    let spec: Value = serde_json::from_str(SPEC_JSON).unwrap_or_default();
    printed(print_message(&spec_message(&spec)))
}
