//! Full refresh: a whole pass over an endpoint without filters, watching for records that
//! move while it pages (Loop's order is undocumented):
//! * a record met again later with different content moved ahead of us (e.g. to the end
//!   of an `updatedAt`-ascending list), shifting what followed its old place: the pass is
//!   read again from that old page;
//! * a record met again with the same content was pushed down by something that moved or
//!   was inserted behind us (e.g. to the front of an `updatedAt`-descending list): the
//!   front is read again, until a page holds nothing new.

use std::collections::HashMap;

use serde_json::Value;

use crate::event::Level;
use crate::state::{id_key, StreamState};
use crate::streams::Endpoint;

use super::emit::Emitter;
use super::pager::{fixed_params, EarliestPage, Pager};
use super::{Engine, SyncError, PROGRESS_EVERY_PAGES};

/// Keys a full refresh remembers to notice records moving while it pages (about 64 bytes
/// each: memory stays bounded whatever the endpoint's size).
pub const FULL_REFRESH_TRACKED: usize = 500_000;

/// Passes read again because records moved, before the pass is declared unverified (a
/// store this busy will be read again by the next full refresh anyway).
const MAX_REREAD_PASSES: u32 = 20;

pub(super) async fn read(
    engine: &Engine,
    em: &mut Emitter,
    endpoint: &Endpoint,
) -> Result<(), SyncError> {
    let def = em.def;
    let retry_log = em.retry_log();
    let mut pager = Pager::new(&engine.client, endpoint, fixed_params(endpoint));
    // key → (page, content digest, pass it was met in)
    let mut seen: HashMap<String, (u32, u64, u32)> = HashMap::new();
    let mut tracking = true;
    let mut rescan_from = EarliestPage::default();
    let mut front_moved = false;
    let mut front_pass = false;
    let mut rescans = 0u32;
    let mut unverified = false;
    while let Some((page_no, page)) = pager.next_page(&retry_log).await? {
        let last_page = !page.has_next;
        let mut new_on_page = 0usize;
        let on_page = page.records.len();
        for mut rec in page.records {
            em.normalizer.normalize(&mut rec);
            if let Some(id) = rec.get(def.primary_key).and_then(id_key) {
                let digest = content_digest(&rec);
                match seen.get(&id) {
                    Some((first_page, d, pass)) if *d == digest => {
                        // met earlier in this same pass, on an earlier page: pushed down,
                        // something landed behind us
                        if *pass == rescans && *first_page < page_no {
                            front_moved = true;
                        }
                        continue; // already emitted
                    }
                    Some((old_page, _, _)) => rescan_from.note(*old_page),
                    None => {}
                }
                new_on_page += 1;
                if tracking {
                    seen.insert(id, (page_no, digest, rescans));
                    if seen.len() >= FULL_REFRESH_TRACKED {
                        tracking = false;
                        unverified = true;
                    }
                }
            }
            em.emit(rec).await?;
        }
        if page_no % PROGRESS_EVERY_PAGES == 0 {
            em.log(
                Level::Info,
                format!(
                    "{}: {} pages, {} records so far",
                    def.name, page_no, em.report.records
                ),
            )
            .await;
        }
        // a pass over the front ends at the first page with nothing new on it
        let front_done = front_pass && on_page > 0 && new_on_page == 0;
        if !last_page && !front_done {
            continue;
        }
        let next = match (rescan_from.take(), std::mem::take(&mut front_moved)) {
            (Some(p), _) => Some((p, false)),
            (None, true) => Some((1, true)),
            (None, false) => None,
        };
        match next {
            Some((p, front)) if rescans < MAX_REREAD_PASSES => {
                rescans += 1;
                em.report.rereads += 1;
                em.log(
                    Level::Info,
                    format!(
                        "{}: records moved while the endpoint was paged; reading again from page {p}",
                        def.name
                    ),
                )
                .await;
                pager.restart_at(p);
                front_pass = front;
                continue;
            }
            Some(_) => unverified = true,
            None => {}
        }
        break;
    }
    if unverified {
        em.log(
            Level::Warn,
            format!("{}: records kept moving while the endpoint was paged (or it has more than {FULL_REFRESH_TRACKED} records to track); a record may be missing until the next full refresh", def.name),
        )
        .await;
    }
    em.checkpoint(&StreamState::default()).await
}

fn content_digest(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(v).unwrap_or_default().hash(&mut h);
    h.finish()
}
