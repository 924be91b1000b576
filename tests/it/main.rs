//! One integration-test binary: drives the compiled `source-loop` against the fake Loop
//! API on 127.0.0.1, as a user (or Airbyte) would.

mod databases;
mod harness;

mod cli;
mod efficiency;
mod faults;
mod incremental;
mod layout;
mod load;
mod metrics;
mod normalization;
mod receiver_limits;
mod reconcile;
mod singer;
mod spill;
mod webhooks;
