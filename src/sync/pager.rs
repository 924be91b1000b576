//! The page loop, written once: a cursor over the pages of one filtered query that can
//! be sent back to an earlier page when records moved under it.

use crate::client::{LoopClient, Page};
use crate::streams::Endpoint;

use super::emit::RetryLog;
use super::SyncError;

/// The query parameters every request of the endpoint sends (e.g. `type=ALL`).
pub(crate) fn fixed_params(endpoint: &Endpoint) -> Vec<(&'static str, String)> {
    endpoint
        .fixed_params
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect()
}

pub(crate) struct Pager<'a> {
    client: &'a LoopClient,
    endpoint: &'a str,
    params: Vec<(&'static str, String)>,
    next: Option<u32>,
}

impl<'a> Pager<'a> {
    pub fn new(
        client: &'a LoopClient,
        endpoint: &'a Endpoint,
        params: Vec<(&'static str, String)>,
    ) -> Self {
        Pager {
            client,
            endpoint: endpoint.path,
            params,
            next: Some(1),
        }
    }

    /// The next page and its number, or None after the last page. Stops as soon as the
    /// output is gone (`read | head`): no request is made for records nobody reads.
    pub async fn next_page(
        &mut self,
        observer: &RetryLog,
    ) -> Result<Option<(u32, Page)>, SyncError> {
        let Some(page_no) = self.next else {
            return Ok(None);
        };
        if observer.output_closed() {
            return Err(SyncError::OutputClosed);
        }
        let page = self
            .client
            .get_page(self.endpoint, &self.params, page_no, observer)
            .await?;
        self.next = page.has_next.then_some(page_no + 1);
        Ok(Some((page_no, page)))
    }

    /// Continue from `page` (records moved: read again from there).
    pub fn restart_at(&mut self, page: u32) {
        self.next = Some(page);
    }
}

/// The earliest page noted so far: where a re-read has to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EarliestPage(Option<u32>);

impl EarliestPage {
    pub fn note(&mut self, page: u32) {
        self.0 = Some(self.0.map_or(page, |p| p.min(page)));
    }

    pub fn merge(&mut self, other: EarliestPage) {
        if let Some(p) = other.0 {
            self.note(p);
        }
    }

    pub fn get(self) -> Option<u32> {
        self.0
    }

    pub fn take(&mut self) -> Option<u32> {
        self.0.take()
    }
}
