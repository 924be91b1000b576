//! The comparison, pure: one stream's API versions against the journal's, over a range,
//! into the report's lists; and the tolerance.

use std::collections::HashMap;

use loop_time::format_ms;
use serde::Serialize;
use serde_json::value::RawValue;

/// One entity whose API and journal versions differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub id: String,
    pub api_updated_at: String,
    pub journal_updated_at: Option<String>,
}

/// An entity only the journal knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalOnly {
    pub id: String,
    pub journal_updated_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamReport {
    /// Entities compared (every list below plus `agree`).
    pub checked: u64,
    pub agree: u64,
    /// `missed_webhooks` + `api_behind` + `only_in_journal`.
    pub drift: u64,
    /// Missed entities journaled by this run's `--repair` (0 without it, or when an
    /// earlier repair had journaled them already).
    pub repaired: u64,
    pub missed_webhooks: Vec<Difference>,
    pub api_behind: Vec<Difference>,
    pub only_in_journal: Vec<JournalOnly>,
}

/// The API's current version of one entity.
#[derive(Debug, Clone)]
pub struct ApiVersion {
    pub updated_ms: i64,
    /// The record as the engine emitted it (validated, normalized), kept only when the
    /// journal holds no version as new (a repair may need it): memory stays at a few
    /// dozen bytes per agreeing entity.
    pub record: Option<Box<RawValue>>,
}

pub type ApiVersions = HashMap<String, ApiVersion>;

/// `[since, until]` in unix ms.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub since_ms: i64,
    pub until_ms: i64,
}

impl Range {
    pub fn contains(&self, ms: i64) -> bool {
        (self.since_ms..=self.until_ms).contains(&ms)
    }
}

/// Compares one stream; `journal` holds each entity's newest version at or before
/// `until`. Lists are sorted by id (numerically when ids are numbers).
pub fn compare(api: &ApiVersions, journal: &HashMap<String, i64>, range: Range) -> StreamReport {
    let mut r = StreamReport::default();
    for (id, a) in api {
        if a.updated_ms > range.until_ms {
            continue; // changed during this run: the next run compares it
        }
        let j = journal.get(id).copied();
        if !range.contains(a.updated_ms) && !j.is_some_and(|j| range.contains(j)) {
            continue;
        }
        let diff = || Difference {
            id: id.clone(),
            api_updated_at: format_ms(a.updated_ms),
            journal_updated_at: j.map(format_ms),
        };
        match j {
            Some(j) if j == a.updated_ms => r.agree += 1,
            Some(j) if j > a.updated_ms => r.api_behind.push(diff()),
            _ => r.missed_webhooks.push(diff()),
        }
    }
    for (id, j) in journal {
        if range.contains(*j) && !api.contains_key(id) {
            r.only_in_journal.push(JournalOnly {
                id: id.clone(),
                journal_updated_at: format_ms(*j),
            });
        }
    }
    let order = |id: &str| (id.len(), id.to_string());
    r.missed_webhooks.sort_by_key(|d| order(&d.id));
    r.api_behind.sort_by_key(|d| order(&d.id));
    r.only_in_journal.sort_by_key(|d| order(&d.id));
    r.drift = (r.missed_webhooks.len() + r.api_behind.len() + r.only_in_journal.len()) as u64;
    r.checked = r.agree + r.drift;
    r
}

/// The larger of the count and the fraction of `checked`.
pub fn allowed_drift(max_drift: u64, fraction: f64, checked: u64) -> u64 {
    max_drift.max((fraction * checked as f64).floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(entries: &[(&str, i64)]) -> ApiVersions {
        entries
            .iter()
            .map(|(id, ms)| {
                let record = RawValue::from_string(format!(r#"{{"id":{id}}}"#)).unwrap();
                (
                    id.to_string(),
                    ApiVersion {
                        updated_ms: *ms,
                        record: Some(record),
                    },
                )
            })
            .collect()
    }

    fn journal(entries: &[(&str, i64)]) -> HashMap<String, i64> {
        entries
            .iter()
            .map(|(id, ms)| (id.to_string(), *ms))
            .collect()
    }

    #[test]
    fn each_difference_lands_in_its_list_and_nothing_else_does() {
        let range = Range {
            since_ms: 1_000,
            until_ms: 2_000,
        };
        let r = compare(
            &api(&[
                ("1", 1_500), // agrees
                ("2", 1_600), // journal older: missed
                ("3", 1_700), // journal never saw it: missed
                ("4", 1_200), // journal newer: API behind
                ("5", 500),   // journal newer, API older than since: API behind
                ("6", 2_500), // changed during the run: not compared
                ("7", 400),   // both before since: not compared
                ("10", 1_100),
            ]),
            &journal(&[
                ("1", 1_500),
                ("2", 1_100),
                ("4", 1_900),
                ("5", 1_300),
                ("6", 1_000),
                ("7", 300),
                ("8", 1_800), // the API does not have it
                ("9", 900),   // not in the API, before since: not compared
                ("10", 1_100),
            ]),
            range,
        );
        let ids = |d: &[Difference]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&r.missed_webhooks), ["2", "3"]);
        assert_eq!(r.missed_webhooks[1].journal_updated_at, None);
        assert_eq!(ids(&r.api_behind), ["4", "5"]);
        assert_eq!(r.only_in_journal.len(), 1);
        assert_eq!(r.only_in_journal[0].id, "8");
        assert_eq!((r.agree, r.drift, r.checked), (2, 5, 7));
    }

    #[test]
    fn the_tolerance_is_the_larger_of_count_and_fraction() {
        assert_eq!(allowed_drift(0, 0.0, 1000), 0);
        assert_eq!(allowed_drift(3, 0.0, 1000), 3);
        assert_eq!(allowed_drift(3, 0.01, 1000), 10);
        assert_eq!(allowed_drift(0, 0.01, 99), 0);
    }
}
