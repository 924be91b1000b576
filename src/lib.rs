//! source-loop: the Loop Subscriptions Admin API as an Airbyte source, with a webhook
//! receiver. One engine, several front ends:
//!
//! [`cli`] parses arguments → [`command`] (one module per command: inputs loaded through
//! one loader, one exit status) → [`run`] (`check`, and `read`: [`config`] → [`client`]
//! (HTTP, pacing, retries) → [`sync`] (the engine; neutral [`event::Event`]s for the
//! [`streams`] selected) → an [`output::Writer`]). The writers: [`airbyte`] and
//! [`singer`] (`tap-loop`) messages, the database [`load`]er, [`reconcile`]'s collector.
//! [`formats`] reads the catalog and state forms; [`webhooks`] wires the receiver, whose
//! journal is a source too ([`sync::JournalTail`], applied by `serve --into`).
//! docs/architecture.md draws the map.

pub mod airbyte;
pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod event;
pub mod formats;
pub mod load;
pub mod normalize;
pub mod output;
pub mod reconcile;
pub mod run;
pub mod singer;
pub mod state;
pub mod streams;
pub mod sync;
pub mod validate;
pub mod webhooks;
