//! Command line: parses arguments, loads files, runs a command, maps errors to the
//! protocol and to exit codes. Library modules return typed errors; context is added here.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::catalog::{catalog_message, parse_configured_catalog};
use crate::client::LoopClient;
use crate::config::Config;
use crate::event::{Event, FailureType, Level};
use crate::protocol::{connection_status, spec_message, LineWriter};
use crate::state::parse_input_state;
use crate::sync::Engine;

pub const SPEC_JSON: &str = include_str!("../spec.json");

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

/// Writes protocol lines straight to stdout (for the short commands).
fn print_line(v: &Value) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = LineWriter::new(stdout.lock());
    w.write_value(v)?;
    w.flush()
}

fn emit_error(message: &str, failure: FailureType) {
    let e = Event::Error {
        stream: None,
        message: message.to_string(),
        internal: message.to_string(),
        failure,
    };
    let _ = print_line(&crate::protocol::to_airbyte(&e));
}

fn read_file(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

fn load_config(path: &Path) -> Result<Config, String> {
    let text = read_file(path, "config")?;
    Config::from_json_str(&text).map_err(|e| e.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = cli.progress || io::stderr().is_terminal();
    let result = match cli.command {
        Command::Spec => spec(),
        Command::Check { config } => check(&config),
        Command::Discover { config } => discover(&config),
        Command::Read {
            config,
            catalog,
            state,
        } => read(&config, &catalog, state.as_deref(), progress),
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

fn spec() -> io::Result<ExitCode> {
    let spec: Value = serde_json::from_str(SPEC_JSON).expect("spec.json is valid JSON");
    print_line(&spec_message(&spec))?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> io::Result<ExitCode> {
    let mut config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            print_line(&connection_status(false, &e))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    // fail fast: a check should answer in seconds
    config.retry.max_attempts = config.retry.max_attempts.min(3);
    config.retry.max_elapsed = config.retry.max_elapsed.min(Duration::from_secs(30));
    config.request_timeout = config.request_timeout.min(Duration::from_secs(20));
    let client = match LoopClient::new(&config) {
        Ok(c) => c,
        Err(e) => {
            print_line(&connection_status(
                false,
                &format!("cannot build the HTTP client: {e}"),
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let rt = runtime();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let result = rt.block_on(async {
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let r = client.get_page("subscription", &[], 1, &tx).await;
        drop(tx);
        let _ = drain.await;
        r
    });
    let status = match result {
        Ok(_) => connection_status(true, "connected to Loop and listed subscriptions"),
        Err(e) => connection_status(false, &e.to_string()),
    };
    print_line(&status)?;
    Ok(ExitCode::SUCCESS)
}

fn discover(path: &Path) -> io::Result<ExitCode> {
    match load_config(path) {
        Ok(c) => {
            print_line(&catalog_message(c.journal_path.is_some()))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            emit_error(&e, FailureType::Config);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn progress_line(
    counts: &BTreeMap<&'static str, u64>,
    started: Instant,
    prefix: &str,
    suffix: &str,
) {
    let line: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let total: u64 = counts.values().sum();
    let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let _ = write!(
        io::stderr(),
        "{prefix}{} · {:.0} rec/s{suffix}",
        if line.is_empty() {
            "no records yet".to_string()
        } else {
            line.join(" · ")
        },
        rate
    );
}

/// Prints engine events as Airbyte messages on a dedicated thread, plus an optional
/// progress line on stderr. Returns whether stdout broke.
fn spawn_writer(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    progress: bool,
) -> std::thread::JoinHandle<io::Result<()>> {
    std::thread::spawn(move || {
        let stdout = io::stdout();
        let mut w = LineWriter::new(io::BufWriter::with_capacity(1 << 16, stdout.lock()));
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut last = Instant::now();
        let started = Instant::now();
        let mut result = Ok(());
        while let Some(event) = rx.blocking_recv() {
            if let Event::Record { stream, .. } = &event {
                *counts.entry(stream).or_default() += 1;
            }
            if let Err(e) = w.write_event(&event) {
                result = Err(e);
                break; // dropping rx makes every sender stop
            }
            if progress && last.elapsed() > Duration::from_millis(250) {
                last = Instant::now();
                progress_line(&counts, started, "\r\x1b[K", "");
            }
        }
        if progress {
            progress_line(&counts, started, "\r\x1b[K", "\n");
        }
        if result.is_ok() {
            result = w.flush();
        }
        result
    })
}

fn read(
    config: &Path,
    catalog: &Path,
    state: Option<&Path>,
    progress: bool,
) -> io::Result<ExitCode> {
    let started = Instant::now();
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            emit_error(&e, FailureType::Config);
            return Ok(ExitCode::FAILURE);
        }
    };
    let selected = match read_file(catalog, "catalog")
        .and_then(|t| parse_configured_catalog(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            emit_error(&e, FailureType::Config);
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut notes = Vec::new();
    let input = match state {
        None => Default::default(),
        Some(p) if !p.exists() => {
            notes.push(format!(
                "state file {} does not exist: this is a first sync",
                p.display()
            ));
            Default::default()
        }
        Some(p) => match read_file(p, "state")
            .and_then(|t| parse_input_state(&t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                emit_error(&format!("{e} (file {})", p.display()), FailureType::Config);
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let client = match LoopClient::new(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            emit_error(
                &format!("cannot build the HTTP client: {e}"),
                FailureType::System,
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let writer = spawn_writer(rx, progress);
    let rt = runtime();
    let config = Arc::new(config);
    let reports = rt.block_on(async move {
        for n in notes {
            crate::client::log(&tx, Level::Info, n).await;
        }
        let engine = Arc::new(Engine::new(config.clone(), client.clone(), tx.clone()));
        let reports = engine.read(selected, input).await;
        let total: u64 = reports.iter().map(|r| r.records).sum();
        let requests = client.stats.get(&client.stats.requests);
        let pages_min: u64 = reports.iter().map(|r| r.pages_min).sum();
        let failed: Vec<&str> = reports.iter().filter(|r| !r.ok).map(|r| r.name).collect();
        crate::client::log(
            &tx,
            Level::Info,
            format!(
                "sync summary: {} streams, {} records in {:.1}s; {} requests for a minimum of {} pages (ratio {:.2}); {} retries, {} rate-limited; {}",
                reports.len(),
                total,
                started.elapsed().as_secs_f64(),
                requests,
                pages_min,
                requests as f64 / pages_min.max(1) as f64,
                client.stats.get(&client.stats.retries),
                client.stats.get(&client.stats.rate_limited),
                if failed.is_empty() { "all streams complete".to_string() } else { format!("FAILED: {}", failed.join(", ")) }
            ),
        )
        .await;
        reports
    });
    drop(rt);
    let write_result = writer.join().unwrap_or(Ok(()));
    match write_result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if reports.iter().all(|r| r.ok) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

fn serve(path: &Path, listen: std::net::SocketAddr, emit: bool) -> io::Result<ExitCode> {
    let config = match read_file(path, "config")
        .and_then(|t| Config::for_receiver(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("source-loop serve: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match crate::webhooks::run(&config, listen, emit) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("source-loop serve: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}
