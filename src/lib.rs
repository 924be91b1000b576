//! source-loop: an Airbyte source for the Loop Subscriptions Admin API.
//!
//! Layers: [`config`] → [`client`] (HTTP, pacing, retries) → [`sync`] (the engine, emits
//! [`event::Event`]s) → [`protocol`] (Airbyte messages). [`cli`] wires them together.

pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod event;
pub mod normalize;
pub mod protocol;
pub mod state;
pub mod streams;
pub mod sync;
pub mod validate;
pub mod webhooks;
