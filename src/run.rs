//! The two things every command that calls the API runs, written once: `check` (can we
//! reach Loop with this config?) and `read` (config, selected streams and input state in;
//! events out to a [`Writer`]; the sync's summary and the writer's own output back).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ApiError, LoopClient};
use crate::config::Config;
use crate::event::{Event, FailureType, Level, OutputGone};
use crate::output::{spawn_writer, Writer};
use crate::state::InputState;
use crate::streams::{self, Selected};
use crate::sync::{Engine, SyncSummary};

/// Events in flight between the engine and the writer (bounded: the engine waits for a
/// slow output instead of buffering records).
const EVENT_CHANNEL: usize = 1024;
/// `check` answers in seconds: at most this many attempts, this long in all, per request.
const CHECK_MAX_ATTEMPTS: u32 = 3;
const CHECK_MAX_ELAPSED: Duration = Duration::from_secs(30);
const CHECK_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The stream whose first page `check` lists.
const CHECK_STREAM: &str = "subscriptions";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl RunError {
    pub fn failure_type(&self) -> FailureType {
        match self {
            RunError::Client(_) | RunError::Runtime(_) => FailureType::System,
            RunError::Api(e) => e.failure_type(),
        }
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

/// List the first page of subscriptions, failing fast.
pub fn check(mut config: Config) -> Result<(), RunError> {
    let retry = &mut config.pacing.retry;
    retry.max_attempts = retry.max_attempts.min(CHECK_MAX_ATTEMPTS);
    retry.max_elapsed = retry.max_elapsed.min(CHECK_MAX_ELAPSED);
    config.api.request_timeout = config.api.request_timeout.min(CHECK_REQUEST_TIMEOUT);
    let client = LoopClient::new(&config).map_err(RunError::Client)?;
    let endpoint = streams::find(CHECK_STREAM)
        .and_then(|d| d.endpoint())
        .map_or("subscription", |e| e.path);
    runtime()?.block_on(client.get_page(endpoint, &[], 1, &()))?;
    Ok(())
}

/// Everything a read needs, already parsed and validated by the front end.
pub struct ReadRequest {
    pub config: Config,
    pub selected: Vec<Selected>,
    pub state: InputState,
    /// Lines to log before the sync starts (e.g. "state file missing: first sync", an
    /// unknown config key).
    pub notes: Vec<(Level, String)>,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Tells whether the front end's output went away (checked a few times a second, so
    /// that the engine stops even while it holds a window and writes nothing).
    pub output_gone: Option<fn() -> bool>,
}

/// How often `ReadRequest::output_gone` is asked.
const OUTPUT_WATCH_EVERY: Duration = Duration::from_millis(200);

/// How a read ended.
pub struct ReadOutcome<W: Writer> {
    pub summary: SyncSummary,
    /// What the writer made, or why it failed (a broken pipe among them: the read then
    /// stopped early).
    pub output: Result<W::Output, W::Error>,
}

/// Read the selected streams, sending every event to `writer` on its own thread.
pub fn read<W: Writer>(request: ReadRequest, writer: W) -> Result<ReadOutcome<W>, RunError> {
    let client = Arc::new(LoopClient::new(&request.config).map_err(RunError::Client)?);
    let rt = runtime()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(EVENT_CHANNEL);
    let writer = spawn_writer(rx, writer, request.progress);
    let config = Arc::new(request.config);
    let output_gone = OutputGone::default();
    let summary = rt.block_on(async move {
        if let Some(gone) = request.output_gone {
            let flag = output_gone.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(OUTPUT_WATCH_EVERY);
                while !gone() {
                    tick.tick().await;
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
        for (level, note) in request.notes {
            let _ = tx.send(Event::log(level, note)).await;
        }
        let engine = Arc::new(Engine::new(config, client, tx, output_gone));
        engine.read(request.selected, request.state).await
    });
    drop(rt);
    // a panic in the writer is a bug: it goes on as the panic it is
    let output = writer
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    Ok(ReadOutcome { summary, output })
}
