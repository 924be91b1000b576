//! Command line: parses arguments, hands each command to its front end, maps the outcome
//! to an exit code. The Airbyte commands live in [`crate::airbyte`]; `serve` in
//! [`crate::webhooks`].

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::airbyte;
use crate::config::WebhookSettings;

#[derive(Parser, Debug)]
#[command(
    name = "source-loop",
    version,
    about = "Loop Subscriptions (the Shopify subscriptions app) as an Airbyte source, with a webhook receiver",
    long_about = "Loop Subscriptions (the Shopify subscriptions app) as an Airbyte source, with a webhook receiver.\n\n\
Three ways to run it:\n\
  * standalone:  source-loop read --config config.json --catalog catalog/configured_catalog.json > out.jsonl\n\
  * in Airbyte:  the Docker image is a custom connector (spec, check, discover, read)\n\
  * webhooks:    source-loop serve --config config.json --listen 127.0.0.1:8080\n\
  * reconcile:   source-loop reconcile --config config.json [--repair]\n\n\
The config file is one JSON object (README: Config reference; `source-loop spec` prints its schema), e.g.\n\
  {\"api_token\": \"YOUR_LOOP_TOKEN\", \"start_date\": \"2024-01-01\"}"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The config file: a JSON object such as {"api_token": "...", "start_date": "2024-01-01"}.
const CONFIG_HELP: &str =
    "Config file (JSON), e.g. config.json holding {\"api_token\": \"...\", \"start_date\": \"2024-01-01\"}";

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the connector specification (the config's JSON schema) as an Airbyte SPEC message.
    Spec,
    /// Check that the config works: lists one page of subscriptions with the token.
    Check {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Print the catalog of streams (an Airbyte CATALOG message).
    Discover {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
    },
    /// Read records: RECORD, STATE, TRACE and LOG messages on stdout, one JSON per line.
    Read {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
        /// Which streams to read and how (an Airbyte configured catalog), e.g. catalog/configured_catalog.json.
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// Where to resume from: the STATE lines of a previous run (e.g. `grep '"type":"STATE"' out.jsonl > state.jsonl`), or any Airbyte state form. Missing or empty: a first sync.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Show a progress line on stderr (default: when stderr is a terminal).
        #[arg(long)]
        progress: bool,
    },
    /// Load every stream into a database, one table per stream at its newest versions, with the state kept in the same database (rerun to sync incrementally).
    Sync {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
        /// Target database: sqlite:PATH (e.g. sqlite:loop.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE.
        #[arg(long, value_name = "URL")]
        into: String,
        /// Which streams to load and how (an Airbyte configured catalog); default: every stream, incrementally.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Show a progress line on stderr (default: when stderr is a terminal).
        #[arg(long)]
        progress: bool,
    },
    /// Receive Loop webhooks into a durable journal (the same config file; needs `webhook_secrets`).
    Serve {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:8080 behind a TLS proxy.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Also print each accepted event as a JSON line on stdout.
        #[arg(long)]
        emit: bool,
        /// Also upsert every journaled subscription and order into this database (the tables of `sync --into`), newest version wins: sqlite:PATH or postgres://...
        #[arg(long, value_name = "URL")]
        into: Option<String>,
    },
    /// Compare the webhook journal with the API (subscriptions, orders): a JSON report on
    /// stdout; exit 0 within tolerance, 2 beyond it, 1 on errors.
    Reconcile {
        #[arg(long, value_name = "FILE", help = CONFIG_HELP)]
        config: PathBuf,
        /// Compare the changes since this instant (RFC 3339 or a date); default and
        /// earliest: the journal's first event.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Streams to compare, comma-separated.
        #[arg(long, value_name = "LIST", default_value = "subscriptions,orders")]
        streams: String,
        /// Journal the API's version of every entity whose webhook was missed.
        #[arg(long)]
        repair: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Spec => airbyte::spec(),
        Command::Check { config } => airbyte::check(&config),
        Command::Discover { config } => airbyte::discover(&config),
        Command::Read {
            config,
            catalog,
            state,
            progress,
        } => airbyte::read(
            &config,
            &catalog,
            state.as_deref(),
            progress || io::stderr().is_terminal(),
        ),
        Command::Serve {
            config,
            listen,
            emit,
            into,
        } => serve(&config, listen, emit, into.as_deref()),
        Command::Reconcile {
            config,
            since,
            streams,
            repair,
        } => crate::reconcile::command(&config, since.as_deref(), Some(&streams), repair),
        Command::Sync {
            config,
            into,
            catalog,
            progress,
        } => crate::load::sync(&config, &into, catalog.as_deref(), progress),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("source-loop: {e}");
            ExitCode::from(2)
        }
    }
}

/// Webhook secrets may also come from the environment (comma-separated), so that they
/// need not be written into the config file.
const SECRETS_ENV: &str = "LOOP_WEBHOOK_SECRETS";

fn serve(
    path: &Path,
    listen: std::net::SocketAddr,
    emit: bool,
    into: Option<&str>,
) -> io::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()));
    let settings = match text
        .clone()
        .and_then(|t| WebhookSettings::from_json_str(&t).map_err(|e| e.to_string()))
    {
        Ok((mut s, warnings)) => {
            for w in warnings {
                crate::output::warning_line(&w);
            }
            if let Ok(list) = std::env::var(SECRETS_ENV) {
                s.add_secrets_from_list(&list);
            }
            s
        }
        Err(e) => {
            eprintln!("source-loop serve: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // `--into`: the applier normalizes money as `sync` does, so it reads the whole config
    let applier = match into {
        None => None,
        Some(url) => {
            let setup = crate::load::Target::parse(url)
                .map_err(|e| e.to_string())
                .and_then(|target| {
                    let config = text.and_then(|t| {
                        crate::config::Config::from_json_str(&t).map_err(|e| e.to_string())
                    })?;
                    Ok((target, config))
                });
            match setup {
                Ok((target, config)) => Some(crate::load::apply::Applier::spawn(
                    target,
                    crate::webhooks::journal_path(&settings),
                    crate::normalize::Normalizer {
                        money_unit: config.sync.money_unit,
                        money_type: config.sync.money_type,
                    },
                )),
                Err(e) => {
                    eprintln!("source-loop serve --into: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    let result = crate::webhooks::run(&settings, listen, emit);
    if let Some(applier) = applier {
        applier.stop();
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("source-loop serve: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
