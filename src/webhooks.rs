//! `source-loop serve`: the connector's config mapped onto the webhook receiver.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::config::Config;
use loop_webhooks::server::ServerConfig;

pub fn server_config(
    config: &Config,
    listen: SocketAddr,
    emit: bool,
) -> anyhow::Result<ServerConfig> {
    if config.webhook_secrets.is_empty() {
        bail!("no webhook secret configured: add `webhook_secrets` (a list) to the config or set LOOP_WEBHOOK_SECRETS; every delivery is verified, so the receiver cannot start without one");
    }
    Ok(ServerConfig {
        listen,
        path: config.webhook_path.clone(),
        secrets: config.webhook_secrets.clone(),
        encoding: config.webhook_signature_encoding,
        max_body_bytes: config.webhook_max_body_bytes,
        journal_path: config
            .journal_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("loop-webhooks.sqlite")),
        emit,
    })
}

pub fn run(config: &Config, listen: SocketAddr, emit: bool) -> anyhow::Result<()> {
    let cfg = server_config(config, listen, emit)?;
    if config.journal_path.is_none() {
        eprintln!(
            "source-loop serve: `journal_path` is not set; journaling to {} in the current directory (set `journal_path` in the config so that `read` finds the same file)",
            cfg.journal_path.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        eprintln!(
            "source-loop serve: {} webhook secret(s), signature encoding {}, max body {} bytes",
            cfg.secrets.len(),
            cfg.encoding,
            cfg.max_body_bytes
        );
        // SIGTERM or Ctrl-C: stop accepting, finish in-flight requests, commit, exit 0.
        loop_webhooks::server::serve(cfg, loop_webhooks::server::shutdown_signal()).await
    })
}
