//! `tap-loop`: the Singer tap (Meltano's `executable:`). Singer's flags (`--config`
//! repeatable and merged in order, `--discover`, `--catalog` or the legacy
//! `--properties`, `--state`, `--about [--format json|markdown]`) onto the same engine
//! every command runs. Exit statuses are [`ExitStatus`]'s, as for `source-loop`.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde_json::Value;

use super::inputs::{self, InputError};
use super::read::stdout_status;
use super::{printed, ExitStatus};
use crate::event::{FailureType, Level};
use crate::formats::bookmarks::Bookmarks;
use crate::output::{stdout_line_batch, WholeLines};
use crate::run::{self, ReadRequest};
use crate::singer::catalog::{discovered_catalog, FieldSelection, ParsedCatalog};
use crate::singer::messages::SingerWriter;
use crate::singer::{about, log_line};
use crate::streams::Selected;

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

/// Entry point of the `tap-loop` binary.
pub fn main() -> ExitStatus {
    let args = Args::parse();
    if args.about_flag {
        about(args.format)
    } else if args.discover {
        discover(&args.config)
    } else {
        read(&args)
    }
}

/// An input problem: one line on stderr, exit 2.
fn input_failed(e: &InputError) -> ExitStatus {
    log_line("config error", &e.to_string());
    ExitStatus::Usage
}

fn print_json(v: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn about(format: AboutFormat) -> ExitStatus {
    printed(match format {
        AboutFormat::Json => print_json(&about::about_json()),
        AboutFormat::Markdown => {
            let mut out = io::stdout().lock();
            out.write_all(about::about_markdown().as_bytes())
                .and_then(|()| out.flush())
        }
    })
}

fn discover(config: &[PathBuf]) -> ExitStatus {
    match inputs::load_config(config) {
        Ok(c) => printed(print_json(&discovered_catalog(
            c.webhooks.journal_path.is_some(),
            c.sync.money_type,
        ))),
        Err(e) => input_failed(&e),
    }
}

/// Everything a read needs from its files, or which one is wrong.
fn read_inputs(
    args: &Args,
) -> Result<(crate::config::Config, ParsedCatalog, Bookmarks), InputError> {
    let config = inputs::load_config(&args.config)?;
    let catalog = match args.catalog.as_ref().or(args.properties.as_ref()) {
        Some(path) => {
            let parsed = inputs::load_singer_catalog(path)?;
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
        None => Bookmarks::default(),
        Some(p) => match inputs::load_state(p)? {
            Some(st) => {
                inputs::check_resumable(p, &st, &catalog.selected)?;
                st
            }
            None => {
                log_line("info", &inputs::first_sync_note(p));
                Bookmarks::default()
            }
        },
    };
    Ok((config, catalog, state))
}

fn read(args: &Args) -> ExitStatus {
    let (config, catalog, state) = match read_inputs(args) {
        Ok(x) => x,
        Err(e) => return input_failed(&e),
    };
    let fields: FieldSelection = catalog.fields;
    let writer = SingerWriter::new(
        WholeLines::new(io::stdout(), stdout_line_batch()),
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
    match run::read(request, writer) {
        Ok(outcome) => stdout_status(outcome.summary.all_ok(), outcome.output),
        Err(e) => {
            let level = match e.failure_type() {
                FailureType::Config => "config error",
                FailureType::Transient => "transient error",
                FailureType::System => "system error",
            };
            log_line(level, &e.to_string());
            ExitStatus::of_error(e.failure_type())
        }
    }
}
