//! `source-loop`'s command line: the clap definition, and a dispatch of each subcommand to
//! its module in [`crate::command`]. Nothing else: the commands load their inputs, run,
//! and report; `main` maps their [`ExitStatus`] to the process's exit code.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::command::reconcile::ReconcileArgs;
use crate::command::serve::ServeArgs;
use crate::command::sync::SyncArgs;
use crate::command::{self, read::ReadArgs, ExitStatus};

#[derive(Parser, Debug)]
#[command(
    name = "source-loop",
    version,
    about = "Loop Subscriptions (the Shopify subscriptions app) as an Airbyte source, with a webhook receiver",
    long_about = "Loop Subscriptions (the Shopify subscriptions app) as an Airbyte source, with a webhook receiver.\n\n\
Ways to run it:\n\
  * standalone:  source-loop read --config config.json --catalog catalog/configured_catalog.json > out.jsonl\n\
  * in Airbyte:  the Docker image is a custom connector (spec, check, discover, read)\n\
  * in Meltano:  tap-loop, the same connector as a Singer tap (tap-loop --help)\n\
  * a database:  source-loop sync --config config.json --into sqlite:loop.db (or postgres://...)\n\
  * webhooks:    source-loop serve --config config.json --listen 127.0.0.1:8080 [--into sqlite:loop.db]\n\
  * reconcile:   source-loop reconcile --config config.json [--repair]\n\n\
Exit codes: 0 done, 1 failed (a stream, the API, the database), 2 usage or a bad input file, 3 reconcile drift beyond tolerance.\n\n\
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
    /// stdout; exit 0 within tolerance, 3 beyond it, 2 for a usage or config error, 1 when
    /// the API or the journal failed.
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
    let status = match cli.command {
        Command::Spec => command::spec::spec(),
        Command::Check { config } => command::check::check(&[config]),
        Command::Discover { config } => command::discover::discover(&[config]),
        Command::Read {
            config,
            catalog,
            state,
            progress,
        } => command::read::read(&ReadArgs {
            config,
            catalog,
            state,
            progress: progress || io::stderr().is_terminal(),
        }),
        Command::Serve {
            config,
            listen,
            emit,
            into,
        } => command::serve::serve(&ServeArgs {
            config,
            listen,
            emit,
            into,
        }),
        Command::Reconcile {
            config,
            since,
            streams,
            repair,
        } => command::reconcile::reconcile(&ReconcileArgs {
            config,
            since,
            streams,
            repair,
        }),
        Command::Sync {
            config,
            into,
            catalog,
            progress,
        } => command::sync::sync(&SyncArgs {
            config,
            into,
            catalog,
            progress,
        }),
    };
    ExitStatus::into(status)
}
