//! The Singer front end: the `tap-loop` command (`src/bin/tap-loop.rs`) with Singer's
//! flags (`--config` repeatable and merged in order, `--discover`, `--catalog` or the
//! legacy `--properties`, `--state`, `--about [--format json|markdown]`), Singer's
//! catalog and state (`catalog`, `state`) and messages (`messages`). Every shape Singer
//! has lives here; the read itself is [`crate::run::read`], the same engine the Airbyte
//! front end drives.
//!
//! Exit codes: 0 when every selected stream completed, 1 when a stream failed (its last
//! STATE resumes it), 2 when an input file is wrong (config, catalog, state).

pub mod about;
pub mod catalog;
pub mod messages;
pub mod state;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use serde_json::{Map, Value};

use crate::config::{kind, Config, ConfigError};
use crate::event::{FailureType, Level};
use crate::run::{self, ReadRequest};
use crate::state::StreamStateError;
use crate::streams::Selected;

use catalog::{discovered_catalog, parse_catalog, CatalogError, FieldSelection, ParsedCatalog};
use messages::SingerWriter;
use state::{check_resumable, parse_state, SingerState, SingerStateError};

/// The tap's name, as Singer and Meltano know it.
pub const TAP_NAME: &str = "tap-loop";

#[derive(Parser, Debug)]
#[command(
    name = "tap-loop",
    version,
    about = "Loop Subscriptions (the Shopify subscriptions app) as a Singer tap, e.g. for Meltano",
    long_about = "Loop Subscriptions (the Shopify subscriptions app) as a Singer tap, e.g. for Meltano.\n\n\
  tap-loop --config config.json --discover > catalog.json\n\
  tap-loop --config config.json --catalog catalog.json [--state state.json] | target-jsonl\n\n\
The config file is the same JSON object `source-loop` reads (README: Config reference), e.g.\n\
  {\"api_token\": \"YOUR_LOOP_TOKEN\", \"start_date\": \"2024-01-01\"}"
)]
pub struct Args {
    /// Config file (JSON). Repeatable: the files are merged in order, a later file's keys
    /// (inside objects too) win.
    #[arg(long, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Print the catalog of streams (with metadata) and exit.
    #[arg(long)]
    discover: bool,
    /// The catalog to read: streams selected (and fields deselected) in its metadata.
    /// Without one, every stream is read.
    #[arg(long, value_name = "FILE", conflicts_with = "properties")]
    catalog: Option<PathBuf>,
    /// The catalog, under its legacy name.
    #[arg(long, value_name = "FILE")]
    properties: Option<PathBuf>,
    /// Where to resume: the value of the last STATE ({"bookmarks": ...}), or an Airbyte
    /// state. Missing: a first sync.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Print what this tap is (name, version, capabilities, settings) and exit.
    #[arg(long = "about")]
    about_flag: bool,
    /// The format of `--about`.
    #[arg(long, value_enum, default_value = "markdown", requires = "about_flag")]
    format: AboutFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AboutFormat {
    Json,
    Markdown,
}

/// One of the tap's input files is unreadable or wrong.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Unreadable(#[from] crate::run::UnreadableFile),
    #[error("config file {}: not a JSON object ({problem}); a config is e.g. {{\"api_token\": \"...\", \"start_date\": \"2024-01-01\"}}", path.display())]
    ConfigFile { path: PathBuf, problem: String },
    #[error("no --config: pass the config file, e.g. --config config.json holding {{\"api_token\": \"...\"}}")]
    NoConfig,
    #[error("{source} (config: {files})")]
    Config {
        files: String,
        #[source]
        source: ConfigError,
    },
    #[error("{source} (file {})", path.display())]
    Catalog {
        path: PathBuf,
        #[source]
        source: CatalogError,
    },
    #[error("{source} (file {})", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: SingerStateError,
    },
    #[error("{source} (file {})", path.display())]
    Resume {
        path: PathBuf,
        #[source]
        source: StreamStateError,
    },
}

fn read_file(path: &Path, what: &'static str) -> Result<String, InputError> {
    Ok(run::read_input_file(path, what)?)
}

/// `add` merged into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Map<String, Value>, add: Map<String, Value>) {
    for (k, v) in add {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(a)) => merge(b, a),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The config files merged in order, parsed; its warnings shown on stderr.
pub fn load_config(paths: &[PathBuf]) -> Result<Config, InputError> {
    if paths.is_empty() {
        return Err(InputError::NoConfig);
    }
    let mut merged = Map::new();
    for path in paths {
        let text = read_file(path, "config")?;
        // the token is never in a serde_json error message: it names positions only
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => merge(&mut merged, m),
            Ok(other) => {
                return Err(InputError::ConfigFile {
                    path: path.clone(),
                    problem: format!("got {}", kind(&other)),
                })
            }
            Err(e) => {
                return Err(InputError::ConfigFile {
                    path: path.clone(),
                    problem: e.to_string(),
                })
            }
        }
    }
    let config =
        Config::from_value(&Value::Object(merged)).map_err(|source| InputError::Config {
            files: paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
    for w in &config.warnings {
        log_line("warning", w);
    }
    Ok(config)
}

/// One line on stderr, where Singer taps log (Meltano shows it with the tap's name).
pub fn log_line(level: &str, message: &str) {
    let _ = writeln!(io::stderr(), "{TAP_NAME}: {level}: {message}");
}

/// An input problem: one line on stderr, exit 2.
fn input_failed(e: &InputError) -> ExitCode {
    log_line("config error", &e.to_string());
    ExitCode::from(2)
}

/// Entry point of the `tap-loop` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.about_flag {
        about(args.format)
    } else if args.discover {
        discover(&args.config)
    } else {
        read(&args)
    };
    match result {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            log_line("error", &e.to_string());
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn about(format: AboutFormat) -> io::Result<ExitCode> {
    match format {
        AboutFormat::Json => print_json(&about::about_json())?,
        AboutFormat::Markdown => {
            let mut out = io::stdout().lock();
            out.write_all(about::about_markdown().as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn discover(config: &[PathBuf]) -> io::Result<ExitCode> {
    match load_config(config) {
        Ok(c) => {
            print_json(&discovered_catalog(
                c.webhooks.journal_path.is_some(),
                c.sync.money_type,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(input_failed(&e)),
    }
}

/// Everything a read needs from its files, or which one is wrong.
fn read_inputs(args: &Args) -> Result<(Config, ParsedCatalog, SingerState), InputError> {
    let config = load_config(&args.config)?;
    let catalog = match args.catalog.as_ref().or(args.properties.as_ref()) {
        Some(path) => {
            let parsed = parse_catalog(&read_file(path, "catalog")?).map_err(|source| {
                InputError::Catalog {
                    path: path.clone(),
                    source,
                }
            })?;
            for w in &parsed.warnings {
                log_line("warning", w);
            }
            parsed
        }
        None => ParsedCatalog {
            selected: Selected::every_stream(config.webhooks.journal_path.is_some()),
            ..Default::default()
        },
    };
    let state = match &args.state {
        None => SingerState::default(),
        Some(p) if !p.exists() => {
            log_line(
                "info",
                &format!(
                    "state file {} does not exist: this is a first sync",
                    p.display()
                ),
            );
            SingerState::default()
        }
        Some(p) => {
            let st = parse_state(&read_file(p, "state")?).map_err(|source| InputError::State {
                path: p.clone(),
                source,
            })?;
            check_resumable(&st, &catalog.selected).map_err(|source| InputError::Resume {
                path: p.clone(),
                source,
            })?;
            st
        }
    };
    Ok((config, catalog, state))
}

fn read(args: &Args) -> io::Result<ExitCode> {
    let (config, catalog, state) = match read_inputs(args) {
        Ok(x) => x,
        Err(e) => return Ok(input_failed(&e)),
    };
    let fields: FieldSelection = catalog.fields;
    let writer = SingerWriter::new(
        io::BufWriter::with_capacity(1 << 16, io::stdout()),
        io::stderr(),
        config.sync.money_type,
        &fields,
        state.bookmarks,
    );
    let request = ReadRequest {
        config,
        selected: catalog.selected,
        state: state.input,
        notes: Vec::<(Level, String)>::new(),
        progress: io::stderr().is_terminal(),
        output_gone: Some(crate::output::stdout_gone),
    };
    let outcome = match run::read(request, writer) {
        Ok(o) => o,
        Err(e) => {
            let level = match e.failure_type() {
                FailureType::Config => "config error",
                FailureType::Transient => "transient error",
                FailureType::System => "system error",
            };
            log_line(level, &e.to_string());
            return Ok(ExitCode::FAILURE);
        }
    };
    outcome.exit_code()
}
