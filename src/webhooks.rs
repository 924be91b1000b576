//! `source-loop serve`: the connector's config mapped onto the webhook receiver.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::config::{Config, SignatureEncoding};
use loop_webhooks::server::ServerConfig;
use loop_webhooks::signature::{Encoding, Secret};

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
        secrets: config
            .webhook_secrets
            .iter()
            .map(|s| Secret::new(s.expose()))
            .collect(),
        encoding: match config.webhook_signature_encoding {
            SignatureEncoding::Auto => Encoding::Auto,
            SignatureEncoding::Hex => Encoding::Hex,
            SignatureEncoding::Base64 => Encoding::Base64,
        },
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
        };
        loop_webhooks::server::serve(cfg, shutdown).await
    })
}
