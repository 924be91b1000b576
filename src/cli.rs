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
    about = "Airbyte source for the Loop Subscriptions Admin API, with a webhook receiver"
)]
struct Cli {
    /// Show a progress line on stderr (default: when stderr is a terminal).
    #[arg(long, global = true)]
    progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the connector specification.
    Spec,
    /// Check that the config works (token, host, start_date).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the catalog of streams.
    Discover {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read records (RECORD, STATE, TRACE and LOG messages on stdout).
    Read {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        catalog: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Receive Loop webhooks into a durable journal.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Also print each accepted event as a JSON line on stdout.
        #[arg(long)]
        emit: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = cli.progress || io::stderr().is_terminal();
    let result = match cli.command {
        Command::Spec => airbyte::spec(),
        Command::Check { config } => airbyte::check(&config),
        Command::Discover { config } => airbyte::discover(&config),
        Command::Read {
            config,
            catalog,
            state,
        } => airbyte::read(&config, &catalog, state.as_deref(), progress),
        Command::Serve {
            config,
            listen,
            emit,
        } => serve(&config, listen, emit),
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

fn serve(path: &Path, listen: std::net::SocketAddr, emit: bool) -> io::Result<ExitCode> {
    let settings = match std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))
        .and_then(|t| WebhookSettings::from_json_str(&t).map_err(|e| e.to_string()))
    {
        Ok(mut s) => {
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
    match crate::webhooks::run(&settings, listen, emit) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("source-loop serve: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
