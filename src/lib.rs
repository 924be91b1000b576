//! source-loop: the Loop Subscriptions Admin API as an Airbyte source, with a webhook
//! receiver. One engine, several front ends:
//!
//! [`config`] → [`client`] (HTTP, pacing, retries) → [`sync`] (the engine; emits neutral
//! [`event::Event`]s for the [`streams`] a front end selected) → an [`output::Writer`]
//! (the front end's messages). [`run`] drives `check` and `read` once for every front
//! end; [`airbyte`] is the Airbyte front end, [`singer`] the Singer one (`tap-loop`);
//! [`webhooks`] wires `serve`; [`reconcile`] compares the journal with the API; [`cli`] parses
//! arguments. docs/architecture.md draws the map.

pub mod airbyte;
pub mod cli;
pub mod client;
pub mod config;
pub mod event;
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
