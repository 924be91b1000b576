//! The writer interface every front end implements (Airbyte messages today; a Singer
//! writer and a database loader next), and the thread that drives it: engine events in,
//! the front end's output out, plus an optional progress line on stderr.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::Event;

/// Turns engine events into a front end's output.
pub trait Writer: Send + 'static {
    fn write(&mut self, event: &Event) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs `writer` on its own thread until the engine drops its sender. Returns the first
/// write error (a broken pipe among them); dropping the receiver then makes every sender
/// of the engine stop.
pub fn spawn_writer<W: Writer>(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    mut writer: W,
    progress: bool,
) -> JoinHandle<io::Result<()>> {
    std::thread::spawn(move || {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut last = Instant::now();
        let started = Instant::now();
        let mut result = Ok(());
        while let Some(event) = rx.blocking_recv() {
            match &event {
                Event::Record { stream, .. } => *counts.entry(stream).or_default() += 1,
                // the protocol carries it on stdout, often into a file: a person at the
                // terminal sees it too
                Event::Error { message, .. } => {
                    if progress {
                        let _ = write!(io::stderr(), "\r\x1b[K");
                    }
                    error_line(message);
                }
                _ => {}
            }
            if let Err(e) = writer.write(&event) {
                result = Err(e);
                break;
            }
            if progress && last.elapsed() > PROGRESS_EVERY {
                last = Instant::now();
                progress_line(&counts, started, "\r\x1b[K", "");
            }
        }
        if progress {
            progress_line(&counts, started, "\r\x1b[K", "\n");
        }
        if result.is_ok() {
            result = writer.flush();
        }
        result
    })
}

/// The running binary's name (`source-loop`, `tap-loop`), which starts every stderr line.
fn program() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "source-loop".into())
}

/// One human line on stderr for an error (what, where, how to fix is in the message).
pub fn error_line(message: &str) {
    let _ = writeln!(io::stderr(), "{}: error: {message}", program());
}

/// Whether stdout is a pipe whose reader has gone (`read | head` after `head` exited):
/// such a pipe polls as an error even before anything is written to it.
#[cfg(unix)]
pub fn stdout_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; poll only writes `revents`.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(not(unix))]
pub fn stdout_gone() -> bool {
    false
}

/// One human line on stderr for a warning (e.g. an unknown config key).
pub fn warning_line(message: &str) {
    let _ = writeln!(io::stderr(), "{}: warning: {message}", program());
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
