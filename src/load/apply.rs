//! `serve --into URL`: the webhook applier. It tails the journal by `seq`
//! ([`JournalTail`], a source like the API) and writes its events to the same [`Loader`]
//! a sync writes to: every journaled subscription and order version is upserted by the
//! same newest-wins rule as `sync`, and every event into `webhook_events`.
//!
//! The journal stays the source of truth. The applier keeps the last applied `seq` in
//! the target database ([`JOURNAL_APPLIED_KEY`] in the state table), committed in the same
//! transaction as the rows of that batch, so nothing is applied twice and nothing is
//! skipped: when the database is down, deliveries are still acknowledged and journaled,
//! the applier retries with a capped backoff, and it resumes from the database's own
//! `seq` once it is back. Upserts compare versions, so the order events arrive in does
//! not matter.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::{LoadError, Loader, Target, JOURNAL_APPLIED_KEY};
use crate::event::Event;
use crate::normalize::Normalizer;
use crate::output::Writer;
use crate::streams::STREAMS;
use crate::sync::JournalTail;
/// Events applied per transaction.
const BATCH: usize = 500;
/// How often an idle applier looks for new events (bounds webhook-to-row latency).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The materialized metric views are refreshed after upserts at most this often, on
/// their own connection ([`ViewRefresher`]).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Backoff after a failure (database down, journal not created yet), doubling up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Journal(#[from] loop_webhooks::JournalError),
}

/// A running applier; [`Applier::stop`] finishes the current batch and returns.
pub struct Applier {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Applier {
    pub fn spawn(target: Target, journal: PathBuf, normalizer: Normalizer) -> Applier {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || run(&target, &journal, &normalizer, &flag));
        Applier { stop, thread }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Webhook-to-row latency: from the receiver's `received_at` (just before the
/// acknowledgement) to the commit of the row, per applied event.
#[derive(Default)]
struct Latencies {
    ms: Vec<i64>,
}

impl Latencies {
    fn summary(&mut self) -> Option<String> {
        if self.ms.is_empty() {
            return None;
        }
        self.ms.sort_unstable();
        let at = |q: f64| self.ms[((self.ms.len() - 1) as f64 * q).round() as usize];
        Some(format!(
            "{} events applied; receipt to committed row: p50 {} ms, p99 {} ms, max {} ms",
            self.ms.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        ))
    }
}

/// Refreshes the materialized views on a connection of its own, at most every
/// [`REFRESH_EVERY`] after the applier says the tables changed. A refresh reads every row
/// (seconds on a large store); on the applier's connection it held up the rows webhooks
/// were waiting for (p99 2.5 s at 1 000 events/s, 24 ms without).
struct ViewRefresher {
    stale: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl ViewRefresher {
    /// `None` when the target's views are plain views (nothing to refresh).
    fn spawn(target: &Target) -> Option<ViewRefresher> {
        let sql = target.dialect().refresh_views()?;
        let (stale, signals) = mpsc::sync_channel(1);
        let target = target.clone();
        let thread = std::thread::spawn(move || refresh_loop(&target, sql, &signals));
        Some(ViewRefresher { stale, thread })
    }

    /// The tables changed: refresh soon. Never waits.
    fn mark_stale(&self) {
        let _ = self.stale.try_send(());
    }

    /// Refreshes once more if the tables changed since the last refresh, then returns.
    fn finish(self) {
        drop(self.stale);
        let _ = self.thread.join();
    }
}

fn refresh_loop(target: &Target, sql: &str, signals: &Receiver<()>) {
    let mut db = None;
    let mut last = std::time::Instant::now();
    // wait for a change; the applier stopping (channel closed) ends the loop
    while signals.recv().is_ok() {
        // at most every REFRESH_EVERY, unless the applier stops meanwhile
        loop {
            let left = REFRESH_EVERY.saturating_sub(last.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
            if let Err(TryRecvError::Disconnected) = signals.try_recv() {
                break;
            }
        }
        let _ = signals.try_recv(); // this refresh covers a change signalled meanwhile
        let result = match db.as_mut() {
            Some(db) => Ok(db),
            None => target.connect().map(|c| db.insert(c)),
        }
        .and_then(|db| {
            db.batch(sql).map_err(super::failed(
                "cannot refresh the materialized metric views",
            ))
        });
        last = std::time::Instant::now();
        if let Err(e) = result {
            crate::output::warning_line(&format!(
                "webhooks into {}: {e}; the metric views are refreshed at the next change",
                target.display()
            ));
            db = None;
        }
    }
}

fn run(target: &Target, journal: &std::path::Path, normalizer: &Normalizer, stop: &AtomicBool) {
    let mut backoff = RETRY_FIRST;
    let mut failing = false;
    let mut latencies = Latencies::default();
    let refresher = ViewRefresher::spawn(target);
    while !stop.load(Ordering::Relaxed) {
        match session(
            target,
            journal,
            normalizer,
            stop,
            &mut failing,
            &mut latencies,
            refresher.as_ref(),
        ) {
            Ok(()) => break,
            Err(e) => {
                crate::output::warning_line(&format!(
                    "webhooks into {}: {e}; retrying in {:.1} s (events stay in the journal and are applied once it works)",
                    target.display(),
                    backoff.as_secs_f64()
                ));
                failing = true;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_CAP);
            }
        }
    }
    if let Some(refresher) = refresher {
        refresher.finish();
    }
    if let Some(line) = latencies.summary() {
        eprintln!(
            "source-loop serve: webhooks into {}: {line}",
            target.display()
        );
    }
}

/// One connection's life: prepare the tables, then apply batches until stopped. The
/// journal is a source like the API: its batches are neutral events written to the
/// loader, and each ends in a [`crate::event::Event::JournalCheckpoint`] that the loader
/// commits with the batch's rows.
fn session(
    target: &Target,
    journal: &std::path::Path,
    normalizer: &Normalizer,
    stop: &AtomicBool,
    failing: &mut bool,
    latencies: &mut Latencies,
    refresher: Option<&ViewRefresher>,
) -> Result<(), ApplyError> {
    let defs: Vec<_> = STREAMS.iter().collect();
    let (loader, state, _warnings) = Loader::prepare(target.connect()?, &defs)?;
    let mut loader = loader.warn_on_unstorable();
    let mut seq = state
        .get(JOURNAL_APPLIED_KEY)
        .and_then(|v| v.get("seq"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let tail = JournalTail::open(journal, *normalizer)?;
    if std::mem::take(failing) {
        eprintln!(
            "source-loop serve: webhooks into {}: connected; applying from journal seq {seq}",
            target.display()
        );
    }
    while !stop.load(Ordering::Relaxed) {
        let batch = tail.next_batch(seq, BATCH)?;
        let Some(&Event::JournalCheckpoint { seq: last }) = batch.events.last() else {
            std::thread::sleep(IDLE_POLL);
            continue;
        };
        for event in &batch.events {
            loader.write(event)?;
        }
        seq = last;
        let now = loop_time::now().timestamp_millis();
        latencies
            .ms
            .extend(batch.received_ms.into_iter().map(|t| now - t));
        if let Some(refresher) = refresher {
            refresher.mark_stale();
        }
    }
    Ok(())
}
