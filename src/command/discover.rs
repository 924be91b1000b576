//! `source-loop discover --config C`: the catalog of streams as an Airbyte CATALOG
//! message (`webhook_events` and `reconciliation_reports` only with `journal_path`).

use std::path::PathBuf;

use super::{inputs, printed, ExitStatus};
use crate::airbyte::catalog::catalog_message;
use crate::airbyte::{print_error, print_message};
use crate::event::FailureType;

pub fn discover(config: &[PathBuf]) -> ExitStatus {
    match inputs::load_config(config) {
        Ok(c) => printed(print_message(&catalog_message(
            c.webhooks.journal_path.is_some(),
            c.sync.money_type,
        ))),
        Err(e) => {
            let _ = print_error(&e.to_string(), FailureType::Config);
            ExitStatus::Usage
        }
    }
}
