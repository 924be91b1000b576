//! `source-loop sync --config C --into URL [--catalog K]`: every selected stream (all of
//! them without a catalog) into a database, resuming from the state saved there.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use super::{inputs, ExitStatus};
use crate::event::{FailureType, Level};
use crate::load::{LoadError, Loader, Target};
use crate::run::{self, ReadRequest};
use crate::streams::{self, Selected};

/// What `sync` was given.
pub struct SyncArgs {
    pub config: PathBuf,
    pub into: String,
    pub catalog: Option<PathBuf>,
    pub progress: bool,
}

/// Why `sync` could not start: an input, or the target.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl SetupError {
    fn failure_type(&self) -> FailureType {
        match self {
            SetupError::Input(_) => FailureType::Config,
            SetupError::Load(e) => e.failure_type(),
        }
    }
}

fn say(message: &dyn std::fmt::Display) {
    eprintln!("source-loop sync: {message}");
}

pub fn sync(args: &SyncArgs) -> ExitStatus {
    let (request, loader, target) = match prepare(args) {
        Ok(x) => x,
        Err(e) => {
            say(&e);
            return ExitStatus::of_error(e.failure_type());
        }
    };
    let outcome = match run::read(request, loader) {
        Ok(o) => o,
        Err(e) => {
            say(&e);
            return ExitStatus::of_error(e.failure_type());
        }
    };
    match outcome.output {
        Ok(summary) => {
            say(&summary);
            if outcome.summary.all_ok() {
                ExitStatus::Success
            } else {
                ExitStatus::Failure
            }
        }
        Err(e) => {
            say(&format!("loading into {target} failed: {e}"));
            ExitStatus::Failure
        }
    }
}

fn prepare(args: &SyncArgs) -> Result<(ReadRequest, Loader, String), SetupError> {
    let target = Target::parse(&args.into)?;
    let config = inputs::load_config(std::slice::from_ref(&args.config))?;
    let journal = config.webhooks.journal_path.is_some();
    // the catalog format is the one the project already reads (a configured catalog)
    let selected = match &args.catalog {
        Some(p) => inputs::load_configured_catalog(p)?,
        None => Selected::every_stream(journal),
    };
    // every stream gets its table (the views read them), selected or not
    let mut defs: Vec<&'static streams::StreamDef> = streams::available(journal).collect();
    for s in &selected {
        if !defs.iter().any(|d| d.name == s.def.name) {
            defs.push(s.def);
        }
    }
    let (loader, state, warnings) = Loader::prepare(target.connect()?, &defs)?;
    let notes = warnings.into_iter().map(|w| (Level::Warn, w)).collect();
    Ok((
        ReadRequest {
            config,
            selected,
            state,
            notes,
            progress: args.progress || io::stderr().is_terminal(),
            output_gone: None,
        },
        loader,
        target.display(),
    ))
}
