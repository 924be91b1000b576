//! `reconcile`: proves that the webhook journal and the API agree, and repairs what they
//! don't. The API is read through the engine (pacing, retries, windows), exactly as
//! `read` reads it, into a collecting [`Writer`]; the journal is read as of the same
//! instant; the two are compared entity by entity.
//!
//! The compared range is `[since, until]`: `since` defaults to the journal's first
//! event and is never earlier (nothing before it could have had a webhook); `until` is
//! the start of the run minus `reconcile_settle_seconds` (a webhook for a younger change
//! may still be on its way), and before the second the run starts in. An entity is
//! compared when its API version or its newest journaled version (at or before `until`)
//! lies in the range; an entity whose API version is younger than `until` changed
//! during the run and is left to the next one.
//!
//! - `missed_webhooks`: the API's version is newer than any the journal holds.
//! - `api_behind`: the journal holds a newer version than the API returns.
//! - `only_in_journal`: the API does not return the entity at all.
//!
//! The API read covers `[since, now]`, which is cheap. Only when the journal holds
//! entities that read did not return is the stream read again from `start_date`, to
//! tell `api_behind` (the API shows an older version) from `only_in_journal`.
//!
//! `--repair` journals the API's version of every missed entity as a repair event
//! (`loop_webhooks::reconciliation`: its own topic, an id derived from the version, so a
//! second repair adds nothing). Every run is stored in the journal's `reconcile_runs`
//! table, which `read` emits as the `reconciliation_reports` stream and `/metrics`
//! reports.

mod collect;
mod compare;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use loop_entities::ENTITIES;
use loop_time::{format_instant, format_ms};
use loop_webhooks::journal::{AppendOutcome, JournalError, JournalReader};
use loop_webhooks::reconciliation::{Repair, RepairWriter};
use serde::Serialize;

use crate::config::Config;
use crate::event::FailureType;
use crate::run::RunError;
use crate::streams::{self, StreamDef};
use collect::{read_api, JournalVersions};
pub use compare::{
    allowed_drift, compare, ApiVersion, ApiVersions, Difference, JournalOnly, Range, StreamReport,
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("--since {0:?} is not a date: use RFC 3339, e.g. 2024-01-01T00:00:00Z, or a date such as 2024-01-01")]
    Since(String),
    #[error("--streams: {0:?} is not a stream with webhooks; reconcile compares {streams}", streams = ENTITIES.iter().map(|e| e.stream).collect::<Vec<_>>().join(", "))]
    Stream(String),
    #[error("reconcile needs `journal_path` in the config: the webhook journal that `source-loop serve` writes")]
    NoJournalPath,
    #[error("the webhook journal {} does not exist: start `source-loop serve` with this config first, or fix `journal_path`", .0.display())]
    JournalMissing(PathBuf),
    #[error("the webhook journal {} holds no events yet: reconcile compares the API with the webhooks received, so run it once `serve` has received some", .0.display())]
    EmptyJournal(PathBuf),
    #[error("webhook journal {}: {source}", path.display())]
    Journal {
        path: PathBuf,
        #[source]
        source: JournalError,
    },
    #[error("nothing to compare: --since {since} is after the end of the compared range {until} (now minus `reconcile_settle_seconds`)")]
    EmptyRange { since: String, until: String },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("reading the API failed: {0}")]
    Api(String),
}

impl ReconcileError {
    /// Who acts: an option, the config or a journal that is not there yet is the user's
    /// to fix; the API and the journal failing are worth retrying.
    pub fn failure_type(&self) -> FailureType {
        match self {
            ReconcileError::Since(_)
            | ReconcileError::Stream(_)
            | ReconcileError::NoJournalPath
            | ReconcileError::JournalMissing(_)
            | ReconcileError::EmptyRange { .. } => FailureType::Config,
            ReconcileError::EmptyJournal(_) | ReconcileError::Api(_) => FailureType::Transient,
            ReconcileError::Journal { .. } => FailureType::System,
            ReconcileError::Run(e) => e.failure_type(),
        }
    }
}

/// What to compare, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub since: Option<DateTime<Utc>>,
    pub streams: Vec<&'static StreamDef>,
    pub repair: bool,
}

impl Options {
    /// `--since` and `--streams` as typed on the command line.
    pub fn parse(
        since: Option<&str>,
        streams: Option<&str>,
        repair: bool,
    ) -> Result<Options, ReconcileError> {
        let since = since
            .map(|s| loop_time::parse_instant(s).ok_or_else(|| ReconcileError::Since(s.into())))
            .transpose()?;
        let names: Vec<&str> = match streams {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect(),
            None => ENTITIES.iter().map(|e| e.stream).collect(),
        };
        let mut defs: Vec<&'static StreamDef> = Vec::new();
        for name in names {
            let def = loop_entities::by_stream(name)
                .and_then(|e| streams::find(e.stream))
                .ok_or_else(|| ReconcileError::Stream(name.into()))?;
            if !defs.iter().any(|d| d.name == def.name) {
                defs.push(def);
            }
        }
        if defs.is_empty() {
            return Err(ReconcileError::Stream(String::new()));
        }
        Ok(Options {
            since,
            streams: defs,
            repair,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tolerance {
    pub max_drift: u64,
    pub max_drift_fraction: f64,
    /// The larger of `max_drift` and `max_drift_fraction` × checked (rounded down).
    pub allowed: u64,
}

/// The report `reconcile` prints and stores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub since: String,
    pub until: String,
    pub journal_started_at: String,
    pub streams: BTreeMap<&'static str, StreamReport>,
    /// Journal events received in the range, by topic.
    pub topics: BTreeMap<String, i64>,
    pub checked: u64,
    pub drift: u64,
    pub tolerance: Tolerance,
    pub within_tolerance: bool,
    pub repair: bool,
    pub repaired: u64,
}

/// The webhook entity kind of a stream `Options::parse` accepted (one with webhooks).
fn kind_of(stream: &str) -> &'static str {
    streams::find(stream)
        .and_then(StreamDef::webhook_kind)
        .unwrap_or("subscription")
}

/// Runs one reconciliation: compares, repairs when asked, stores the run.
pub fn reconcile(config: &Config, options: &Options) -> Result<Report, ReconcileError> {
    let now = loop_time::now();
    let path = config
        .webhooks
        .journal_path
        .clone()
        .ok_or(ReconcileError::NoJournalPath)?;
    if !path.exists() {
        return Err(ReconcileError::JournalMissing(path));
    }
    let journal_error = |source| ReconcileError::Journal {
        path: path.clone(),
        source,
    };
    let reader = JournalReader::open(&path).map_err(journal_error)?;
    let started_ms = reader
        .started_ms()
        .map_err(journal_error)?
        .ok_or_else(|| ReconcileError::EmptyJournal(path.clone()))?;
    if let Some(asked) = options.since.filter(|s| s.timestamp_millis() < started_ms) {
        crate::output::warning_line(&format!(
            "--since {} is before the journal began ({}): compared from there, since nothing earlier could have had a webhook",
            format_instant(asked),
            format_ms(started_ms)
        ));
    }
    let since_ms = options
        .since
        .map_or(started_ms, |s| s.timestamp_millis().max(started_ms));
    let settle_ms = i64::try_from(config.reconcile.settle.as_millis()).unwrap_or(i64::MAX);
    // The engine reads up to the second it starts in; a change later in that second may
    // or may not be in its pages, so the range ends before it.
    let last_whole_second_ms = now.timestamp() * 1000 - 1;
    let range = Range {
        since_ms,
        until_ms: (now.timestamp_millis() - settle_ms).min(last_whole_second_ms),
    };
    if range.since_ms > range.until_ms {
        return Err(ReconcileError::EmptyRange {
            since: format_ms(range.since_ms),
            until: format_ms(range.until_ms),
        });
    }
    let since = DateTime::from_timestamp_millis(since_ms).unwrap_or(now);
    let journal_as_of_until = || -> Result<JournalVersions, ReconcileError> {
        let mut all = JournalVersions::new();
        for def in &options.streams {
            let versions = reader
                .versions_as_of(kind_of(def.name), range.until_ms)
                .map_err(journal_error)?;
            all.insert(def.name, versions);
        }
        Ok(all)
    };
    // Read before the API to know which records a repair may need, and again after it,
    // so that a webhook arriving during the read counts.
    let journal_before = Arc::new(journal_as_of_until()?);
    let mut api = read_api(config, &options.streams, since, &journal_before)?;
    let journal_versions = journal_as_of_until()?;

    let mut streams = BTreeMap::new();
    // Entities the journal knows but the read from `since` did not return: the API may
    // show an older version of them, so read those streams from `start_date`.
    let unresolved: Vec<&'static StreamDef> = options
        .streams
        .iter()
        .copied()
        .filter(|d| {
            let got = api.get(d.name);
            journal_versions[d.name]
                .iter()
                .any(|(id, j)| range.contains(*j) && got.is_none_or(|a| !a.contains_key(id)))
        })
        .collect();
    if !unresolved.is_empty() && config.sync.start_date < since {
        for (name, full) in read_api(config, &unresolved, config.sync.start_date, &journal_before)?
        {
            let merged = api.entry(name).or_default();
            for (id, v) in full {
                if merged.get(&id).is_none_or(|m| m.updated_ms < v.updated_ms) {
                    merged.insert(id, v);
                }
            }
        }
    }
    for def in &options.streams {
        let empty = ApiVersions::new();
        let report = compare(
            api.get(def.name).unwrap_or(&empty),
            &journal_versions[def.name],
            range,
        );
        streams.insert(def.name, report);
    }

    let checked: u64 = streams.values().map(|s| s.checked).sum();
    let drift: u64 = streams.values().map(|s| s.drift).sum();
    let r = &config.reconcile;
    let allowed = allowed_drift(r.max_drift, r.max_drift_fraction, checked);
    let mut writer = RepairWriter::open(&path).map_err(journal_error)?;
    let mut repaired = 0;
    if options.repair {
        for (name, report) in streams.iter_mut() {
            let versions = api.get(name);
            let repairs: Vec<Repair> = report
                .missed_webhooks
                .iter()
                // every missed entity's record was kept: the journal only grows, so what
                // is older than the API's version now was older during the read
                .filter_map(|d| {
                    let v = versions?.get(&d.id)?;
                    Some(Repair {
                        kind: kind_of(name).to_string(),
                        id: d.id.clone(),
                        updated_at_ms: v.updated_ms,
                        payload: v.record.as_ref()?.get().to_string(),
                    })
                })
                .collect();
            let outcomes = writer.repair(&repairs).map_err(journal_error)?;
            report.repaired = outcomes
                .iter()
                .filter(|o| matches!(o, AppendOutcome::Accepted { .. }))
                .count() as u64;
            repaired += report.repaired;
        }
    }
    let topics = reader
        .topic_counts(range.since_ms, range.until_ms)
        .map_err(journal_error)?;
    let report = Report {
        generated_at: format_instant(now),
        since: format_ms(range.since_ms),
        until: format_ms(range.until_ms),
        journal_started_at: format_ms(started_ms),
        streams,
        topics,
        checked,
        drift,
        tolerance: Tolerance {
            max_drift: r.max_drift,
            max_drift_fraction: r.max_drift_fraction,
            allowed,
        },
        within_tolerance: drift <= allowed,
        repair: options.repair,
        repaired,
    };
    let value = serde_json::to_value(&report).unwrap_or_default();
    writer
        .record_run(now.timestamp_millis(), report.within_tolerance, &value)
        .map_err(journal_error)?;
    Ok(report)
}

/// The `reconcile` command: the report on stdout, a summary on stderr, the exit code
/// (never an `Err`: `cli::main` would turn one into 2, which means "beyond tolerance").
/// The human summary: one line per stream and a verdict.
pub fn summary(r: &Report) -> String {
    let mut lines = vec![format!("source-loop reconcile: {} → {}", r.since, r.until)];
    for (name, s) in &r.streams {
        let mut line = format!(
            "  {name}: {} checked, {} agree, {} missed webhooks, {} API behind, {} only in the journal",
            s.checked,
            s.agree,
            s.missed_webhooks.len(),
            s.api_behind.len(),
            s.only_in_journal.len()
        );
        if r.repair {
            line.push_str(&format!(", {} repaired", s.repaired));
        }
        lines.push(line);
    }
    lines.push(if r.within_tolerance {
        format!(
            "  drift {} within tolerance ({} allowed)",
            r.drift, r.tolerance.allowed
        )
    } else {
        format!(
            "  drift {} BEYOND tolerance ({} allowed)",
            r.drift, r.tolerance.allowed
        )
    });
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_since_are_checked_and_named() {
        let o = Options::parse(Some("2024-01-01"), Some("orders, orders"), true).unwrap();
        assert_eq!(o.streams.len(), 1);
        assert_eq!(o.streams[0].name, "orders");
        let all = Options::parse(None, None, false).unwrap();
        assert_eq!(all.streams.len(), 2);
        let e = Options::parse(None, Some("subscriptions,customers"), false).unwrap_err();
        assert!(e.to_string().contains("\"customers\""), "{e}");
        assert!(e.to_string().contains("subscriptions, orders"), "{e}");
        let e = Options::parse(Some("yesterday"), None, false).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }
}
