//! The writer interface every consumer of events implements (Airbyte and Singer messages,
//! the database loader, reconcile's collector), and the thread that drives it: engine
//! events in, the consumer's output out, plus an optional progress line on stderr.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::Event;

/// Turns engine events into a consumer's output.
pub trait Writer: Send + 'static {
    /// What the writer made, handed back when the read ends (a load's row counts, the
    /// versions a reconciliation collected; `()` for a stream of messages).
    type Output: Send + 'static;
    /// Why a write failed (an I/O error for stdout, a database error for the loader).
    type Error: std::error::Error + Send + 'static;

    fn write(&mut self, event: &Event) -> Result<(), Self::Error>;

    /// Every event was written: finish the output (flush, roll back what no checkpoint
    /// covers) and hand back what was made. Not called after a failed `write`.
    fn finish(self) -> Result<Self::Output, Self::Error>;
}

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs `writer` on its own thread until the engine drops its sender, then finishes it.
/// Returns the writer's output, or the first write error (a broken pipe among them);
/// dropping the receiver then makes every sender of the engine stop.
pub fn spawn_writer<W: Writer>(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    mut writer: W,
    progress: bool,
) -> JoinHandle<Result<W::Output, W::Error>> {
    std::thread::spawn(move || {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut last = Instant::now();
        let started = Instant::now();
        let mut failed = None;
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
                failed = Some(e);
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
        match failed {
            Some(e) => Err(e),
            None => writer.finish(),
        }
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

/// The size of a write to a pipe that the kernel makes atomic (POSIX `PIPE_BUF`, 4096 on
/// Linux): a writer killed while blocked on a full pipe leaves such a write whole or not
/// at all, never half.
const PIPE_ATOMIC_BYTES: usize = 4096;
/// Lines are batched up to this much when stdout is not a pipe (a file, a terminal).
const FILE_BATCH_BYTES: usize = 64 * 1024;

/// A buffered writer for a stream of JSON lines in which every `write(2)` carries whole
/// lines only, so that a `kill -9` at any moment leaves only complete messages for a
/// consumer that reads line by line (a Singer target, `jq`, a platform's log parser).
/// Lines are batched up to the pipe's atomic size (whole lines per batch; a longer line
/// goes alone, and only such a line can still be cut by a kill while the pipe is full).
/// `flush` writes every complete line and keeps a partial one buffered.
pub struct WholeLines<W: Write> {
    inner: W,
    buf: Vec<u8>,
    batch: usize,
}

impl<W: Write> WholeLines<W> {
    pub fn new(inner: W, batch: usize) -> WholeLines<W> {
        WholeLines {
            inner,
            buf: Vec::with_capacity(2 * batch.max(FILE_BATCH_BYTES)),
            batch: batch.max(1),
        }
    }

    /// Whole-line batches of the complete lines buffered, each in one `write_all`.
    fn write_complete_lines(&mut self) -> io::Result<()> {
        let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let mut start = 0;
        while start <= end {
            // the longest run of whole lines from `start` within `batch` bytes, or the one
            // (longer) line at `start`
            let limit = (start + self.batch).min(end + 1);
            let cut = match self.buf[start..limit].iter().rposition(|&b| b == b'\n') {
                Some(i) => start + i + 1,
                None => match self.buf[start..=end].iter().position(|&b| b == b'\n') {
                    Some(i) => start + i + 1,
                    None => end + 1,
                },
            };
            self.inner.write_all(&self.buf[start..cut])?;
            start = cut;
        }
        self.buf.drain(..=end);
        Ok(())
    }
}

/// The batch size for stdout: the pipe's atomic size when it is a pipe.
pub fn stdout_line_batch() -> usize {
    if stdout_is_pipe() {
        PIPE_ATOMIC_BYTES
    } else {
        FILE_BATCH_BYTES
    }
}

#[cfg(unix)]
fn stdout_is_pipe() -> bool {
    // SAFETY: fstat on a descriptor number writes only into the zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) } == 0;
    ok && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

#[cfg(not(unix))]
fn stdout_is_pipe() -> bool {
    false
}

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.batch {
            self.write_complete_lines()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_complete_lines()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write it is given, as the kernel would see the `write(2)` calls.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);
    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_carries_whole_lines_within_the_batch_unless_one_line_is_longer() {
        let mut w = WholeLines::new(Writes::default(), 64);
        let lines: Vec<String> = (0..200)
            .map(|i| format!("{}\n", "x".repeat((i * 7) % 90)))
            .collect();
        for line in &lines {
            // a message arrives in pieces, as serde writes it
            let (a, b) = line.as_bytes().split_at(line.len() / 2);
            w.write_all(a).unwrap();
            w.write_all(b).unwrap();
        }
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        let writes = &w.inner.0;
        for chunk in writes {
            assert_eq!(chunk.last(), Some(&b'\n'), "a write ends mid-line");
            let one_line = chunk.iter().filter(|&&b| b == b'\n').count() == 1;
            assert!(chunk.len() <= 64 || one_line, "{} bytes", chunk.len());
        }
        let all: Vec<u8> = writes.concat();
        assert_eq!(
            all,
            lines.concat().into_bytes(),
            "nothing lost or reordered"
        );
        assert_eq!(w.buf, b"partial", "a partial line waits for its end");
    }
}
