//! The Airbyte front end: every Airbyte shape lives here — the spec, the discovered and
//! configured catalogs, the state forms in and out, the messages and failure types — and
//! the four Airbyte commands (`spec`, `check`, `discover`, `read`) on top of the neutral
//! [`crate::run`] commands.

pub mod catalog;
pub mod messages;
pub mod state;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::config::ConfigError;
use crate::event::{Event, FailureType, Level};
use crate::run::{self, ReadRequest};

use catalog::{catalog_message, parse_configured_catalog, CatalogError};
use messages::{connection_status, to_airbyte, AirbyteWriter};
use state::{parse_input_state, StateFormError};

/// The connection specification (`spec.json` at the top of the repository).
pub const SPEC_JSON: &str = include_str!("../../spec.json");
/// Loop's developer reference: where a user finds how API tokens are made and what the
/// endpoints return (the connector has no public home of its own yet; README.md ships
/// with it).
pub const DOCUMENTATION_URL: &str = "https://developer.loopwork.co/";

pub fn spec_message(connection_specification: &Value) -> Value {
    json!({
        "type": "SPEC",
        "spec": {
            "documentationUrl": DOCUMENTATION_URL,
            "connectionSpecification": connection_specification,
            "supportsIncremental": true,
            "supported_destination_sync_modes": ["overwrite", "append", "append_dedup"]
        }
    })
}

/// Writes one message straight to stdout (for the short commands).
fn print_message(v: &Value) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = AirbyteWriter::new(stdout.lock());
    w.write_value(v)?;
    io::stdout().flush()
}

/// A failure before any stream started: a TRACE ERROR on stdout, and the same in one
/// line on stderr.
fn print_error(message: &str, failure: FailureType) -> io::Result<()> {
    crate::output::error_line(message);
    print_message(&to_airbyte(&Event::Error {
        stream: None,
        message: message.to_string(),
        internal: message.to_string(),
        failure,
    }))
}

/// One of the user's input files is unreadable or wrong (all are config errors).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Unreadable(#[from] crate::run::UnreadableFile),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{source} (file {})", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: StateFormError,
    },
}

fn read_file(path: &Path, what: &'static str) -> Result<String, InputError> {
    Ok(run::read_input_file(path, what)?)
}

pub fn spec() -> io::Result<ExitCode> {
    let spec: Value = serde_json::from_str(SPEC_JSON).unwrap_or_default();
    print_message(&spec_message(&spec))?;
    Ok(ExitCode::SUCCESS)
}

pub fn check(config: &Path) -> io::Result<ExitCode> {
    let status = match run::load_config::<InputError>(config) {
        Err(e) => connection_status(false, &e.to_string()),
        Ok(config) => match run::check(config) {
            Ok(()) => connection_status(true, "connected to Loop and listed subscriptions"),
            Err(e) => connection_status(false, &e.to_string()),
        },
    };
    print_message(&status)?;
    Ok(ExitCode::SUCCESS)
}

pub fn discover(config: &Path) -> io::Result<ExitCode> {
    match run::load_config::<InputError>(config) {
        Ok(c) => {
            print_message(&catalog_message(
                c.webhooks.journal_path.is_some(),
                c.sync.money_type,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_error(&e.to_string(), FailureType::Config)?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Everything `read` needs from its files, or which one is wrong.
fn read_request(
    config: &Path,
    catalog: &Path,
    state: Option<&Path>,
    progress: bool,
) -> Result<ReadRequest, InputError> {
    let config = run::load_config::<InputError>(config)?;
    let selected = parse_configured_catalog(&read_file(catalog, "catalog")?)?;
    // the warnings also go into the output, for platforms that only keep its logs
    let mut notes: Vec<(Level, String)> = config
        .warnings
        .iter()
        .map(|w| (Level::Warn, w.clone()))
        .collect();
    let state = match state {
        None => Default::default(),
        Some(p) if !p.exists() => {
            notes.push((
                Level::Info,
                format!(
                    "state file {} does not exist: this is a first sync",
                    p.display()
                ),
            ));
            Default::default()
        }
        Some(p) => {
            parse_input_state(&read_file(p, "state")?).map_err(|source| InputError::State {
                path: p.to_path_buf(),
                source,
            })?
        }
    };
    Ok(ReadRequest {
        config,
        selected,
        state,
        notes,
        progress,
        output_gone: Some(crate::output::stdout_gone),
    })
}

pub fn read(
    config: &Path,
    catalog: &Path,
    state: Option<&Path>,
    progress: bool,
) -> io::Result<ExitCode> {
    let request = match read_request(config, catalog, state, progress) {
        Ok(r) => r,
        Err(e) => {
            print_error(&e.to_string(), FailureType::Config)?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let writer = AirbyteWriter::new(io::BufWriter::with_capacity(1 << 16, io::stdout()));
    let outcome = match run::read(request, writer) {
        Ok(o) => o,
        Err(e) => {
            print_error(&e.to_string(), e.failure_type())?;
            return Ok(ExitCode::FAILURE);
        }
    };
    outcome.exit_code()
}
