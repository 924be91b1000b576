//! `source-loop reconcile --config C [--since T] [--streams LIST] [--repair]`: compare the
//! webhook journal with the API ([`crate::reconcile`]); one JSON report on stdout, a
//! summary on stderr. Exit 0 within tolerance, 3 beyond it, 2 for a usage or config
//! error, 1 when the API or the journal failed.

use std::io::{self, Write as _};
use std::path::PathBuf;

use super::{inputs, ExitStatus};
use crate::reconcile::{reconcile as compare_and_repair, summary, Options};

/// What `reconcile` was given.
pub struct ReconcileArgs {
    pub config: PathBuf,
    pub since: Option<String>,
    pub streams: String,
    pub repair: bool,
}

fn fail(e: &dyn std::fmt::Display) {
    eprintln!("source-loop reconcile: error: {e}");
}

pub fn reconcile(args: &ReconcileArgs) -> ExitStatus {
    let config = match inputs::load_config(std::slice::from_ref(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            fail(&e);
            return ExitStatus::Usage;
        }
    };
    let report = match Options::parse(args.since.as_deref(), Some(&args.streams), args.repair)
        .and_then(|options| compare_and_repair(&config, &options))
    {
        Ok(r) => r,
        Err(e) => {
            fail(&e);
            return ExitStatus::of_error(e.failure_type());
        }
    };
    let status = if report.within_tolerance {
        ExitStatus::Success
    } else {
        ExitStatus::DriftBeyondTolerance
    };
    eprintln!("{}", summary(&report));
    if status != ExitStatus::Success {
        eprintln!("source-loop reconcile: exit {}", status.code());
    }
    let printed = (|| {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, &report).map_err(io::Error::other)?;
        writeln!(out)?;
        out.flush()
    })();
    // The run is stored either way; a reader that went away (`| head`) does not change
    // the verdict, any other output failure is an error.
    match printed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            fail(&format!("cannot write the report to stdout: {e}"));
            return ExitStatus::Failure;
        }
        _ => {}
    }
    status
}
