//! Runs the webhook receiver on its own, for benchmarks and tests. The product's
//! entrypoint is `source-loop serve`; this binary takes only flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loop_webhooks::connection::{self, ConnectionLimits};
use loop_webhooks::server::{self, ServerConfig};
use loop_webhooks::signature::{Encoding, Secret};

#[derive(Parser)]
#[command(
    name = "loop-webhooks-serve",
    about = "Serve the Loop webhook receiver (standalone)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the log line shows it).
    #[arg(long, default_value = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// SQLite journal file (created if missing).
    #[arg(long)]
    journal: PathBuf,
    /// Webhook secret; repeat for several webhooks or rotation.
    #[arg(
        long,
        required = true,
        env = "LOOP_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secret: Vec<String>,
    /// Signature encoding: auto, hex or base64.
    #[arg(long, default_value = "auto")]
    encoding: Encoding,
    /// Path of the webhook endpoint.
    #[arg(long, default_value = server::DEFAULT_PATH)]
    path: String,
    /// Largest accepted body in bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Print each accepted event as a JSON line on stdout.
    #[arg(long)]
    emit: bool,
    /// Seconds a request head may take to arrive.
    #[arg(long, default_value_t = connection::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout_secs: u64,
    /// Seconds a request body may take to arrive after its head.
    #[arg(long, default_value_t = connection::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    body_read_timeout_secs: u64,
    /// Seconds a connection may stay without a request.
    #[arg(long, default_value_t = connection::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_secs: u64,
    /// Open connections at most; one more is answered 503.
    #[arg(long, default_value_t = connection::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{e}`, not `{e:#}`: the receiver's errors already end with their cause, and
            // nothing here adds context.
            eprintln!("loop-webhooks-serve: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = ServerConfig {
        listen: args.listen,
        path: args.path,
        secrets: args.secret.into_iter().map(Secret::new).collect(),
        encoding: args.encoding,
        max_body_bytes: args.max_body_bytes,
        journal_path: args.journal,
        emit: args.emit,
        limits: ConnectionLimits {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            max_connections: args.max_connections,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::serve(cfg, server::shutdown_signal()))?;
    Ok(())
}
