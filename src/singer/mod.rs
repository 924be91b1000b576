//! The Singer front end: every shape Singer has lives here — the discovered catalog
//! with its metadata and the catalog in (`catalog`), `--about` (`about`), and the
//! messages out (`messages`: SCHEMA, RECORD, STATE bookmarks, ACTIVATE_VERSION). The
//! bookmark shape, which `source-loop` reads too, is [`crate::formats::bookmarks`]; the
//! `tap-loop` command itself (flags, exit codes) is [`crate::command::tap`], running the
//! same engine (`run::read`) as every other command.

pub mod about;
pub mod catalog;
pub mod messages;

use std::io::{self, Write};

/// The tap's name, as Singer and Meltano know it.
pub const TAP_NAME: &str = "tap-loop";

/// One line on stderr, where Singer taps log (Meltano shows it with the tap's name).
pub fn log_line(level: &str, message: &str) {
    let _ = writeln!(io::stderr(), "{TAP_NAME}: {level}: {message}");
}
