//! Receiver for Loop Subscriptions webhooks: verifies `X-Loop-Signature`, journals every
//! verified delivery durably in SQLite (group commit, acknowledged only after commit),
//! deduplicates by webhook id, tracks the newest version of each subscription and
//! order, and exposes health, readiness and Prometheus metrics.
//!
//! - [`signature`]: HMAC-SHA256 verification (hex/base64, rotation, constant time).
//! - [`journal`]: the SQLite journal, its writer thread and a read-only reader.
//! - [`server`]: the axum HTTP server.
//! - [`connection`]: the accept loop, the cap on connections and their timeouts.
//! - [`metrics`]: the Prometheus registry.
//! - [`reconciliation`]: reconciliation runs and repair events in the journal's database.

pub mod connection;
pub mod journal;
pub mod metrics;
pub mod reconciliation;
pub mod server;
pub mod signature;

pub use connection::ConnectionLimits;
pub use journal::{Journal, JournalError, JournalReader, StoredEvent};
pub use server::{bind, serve, ServeError, ServerConfig};
pub use signature::{Encoding, Secret};
