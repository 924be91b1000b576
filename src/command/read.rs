//! `source-loop read --config C --catalog K [--state S]`: the Airbyte read. RECORD,
//! STATE, TRACE and LOG messages on stdout; a bad input file is a TRACE `config_error`
//! and exit 2, before any stream starts.

use std::io;
use std::path::PathBuf;

use super::{inputs, ExitStatus};
use crate::airbyte::messages::AirbyteWriter;
use crate::airbyte::print_error;
use crate::event::{FailureType, Level};
use crate::output::{stdout_line_batch, WholeLines};
use crate::run::{self, ReadRequest};

/// What `read` was given.
pub struct ReadArgs {
    pub config: PathBuf,
    pub catalog: PathBuf,
    pub state: Option<PathBuf>,
    pub progress: bool,
}

/// Everything `read` needs from its files, or which one is wrong.
fn request(args: &ReadArgs) -> Result<ReadRequest, inputs::InputError> {
    let config = inputs::load_config(std::slice::from_ref(&args.config))?;
    let selected = inputs::load_configured_catalog(&args.catalog)?;
    // the warnings also go into the output, for platforms that only keep its logs
    let mut notes: Vec<(Level, String)> = config
        .warnings
        .iter()
        .map(|w| (Level::Warn, w.clone()))
        .collect();
    let state = match args.state.as_deref() {
        None => Default::default(),
        Some(p) => match inputs::load_state(p)? {
            Some(state) => state.input,
            None => {
                notes.push((Level::Info, inputs::first_sync_note(p)));
                Default::default()
            }
        },
    };
    Ok(ReadRequest {
        config,
        selected,
        state,
        notes,
        progress: args.progress,
        output_gone: Some(crate::output::stdout_gone),
    })
}

pub fn read(args: &ReadArgs) -> ExitStatus {
    let request = match request(args) {
        Ok(r) => r,
        Err(e) => {
            let _ = print_error(&e.to_string(), FailureType::Config);
            return ExitStatus::Usage;
        }
    };
    let writer = AirbyteWriter::new(WholeLines::new(io::stdout(), stdout_line_batch()));
    match run::read(request, writer) {
        Ok(outcome) => stdout_status(outcome.summary.all_ok(), outcome.output),
        Err(e) => {
            let _ = print_error(&e.to_string(), e.failure_type());
            ExitStatus::of_error(e.failure_type())
        }
    }
}

/// The status of a read to stdout, its output error (other than a closed pipe) reported.
pub(crate) fn stdout_status(all_ok: bool, output: io::Result<()>) -> ExitStatus {
    let (status, error) = ExitStatus::of_stdout_read(all_ok, output);
    if let Some(e) = error {
        crate::output::error_line(&format!("cannot write to stdout: {e}"));
    }
    status
}
