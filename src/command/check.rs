//! `source-loop check --config C`: can we reach Loop with this config? The answer is an
//! Airbyte CONNECTION_STATUS message, and the exit status is 0 whatever it says (Airbyte's
//! protocol: a platform treats a failing exit as a crashed connector, not a failed check),
//! a bad config file included.

use std::path::PathBuf;

use super::{inputs, printed, ExitStatus};
use crate::airbyte::messages::connection_status;
use crate::airbyte::print_message;
use crate::run;

pub fn check(config: &[PathBuf]) -> ExitStatus {
    let status = match inputs::load_config(config) {
        Err(e) => connection_status(false, &e.to_string()),
        Ok(config) => match run::check(config) {
            Ok(()) => connection_status(true, "connected to Loop and listed subscriptions"),
            Err(e) => connection_status(false, &e.to_string()),
        },
    };
    printed(print_message(&status))
}
