//! `source-loop serve`: the connector's config mapped onto the webhook receiver, and
//! why the receiver could not start or run ([`ReceiverError`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use loop_webhooks::server::{ServeError, ServerConfig};
use loop_webhooks::JournalError;

use crate::config::WebhookSettings;
use crate::event::FailureType;

/// Why `source-loop serve` stopped with an error. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("no webhook secret configured: add `webhook_secrets` (a list) to the config or set LOOP_WEBHOOK_SECRETS; every delivery is verified, so the receiver cannot start without one")]
    NoSecret,
    #[error("cannot start the async runtime: {0} (the process may be out of threads or file descriptors)")]
    Runtime(#[source] std::io::Error),
    /// Invalid receiver settings, the journal, the listen address, or serving itself.
    #[error(transparent)]
    Receiver(#[from] ServeError),
}

impl ReceiverError {
    pub fn failure_type(&self) -> FailureType {
        match self {
            ReceiverError::NoSecret => FailureType::Config,
            ReceiverError::Receiver(ServeError::InvalidConfig { .. }) => FailureType::Config,
            // The journal's directory or the listen address is the user's to fix.
            ReceiverError::Receiver(ServeError::Journal(JournalError::Open { .. })) => {
                FailureType::Config
            }
            ReceiverError::Receiver(ServeError::Bind { .. }) => FailureType::Config,
            ReceiverError::Receiver(ServeError::Journal(_)) => FailureType::System,
            ReceiverError::Runtime(_) => FailureType::System,
        }
    }
}

/// Webhook secrets may also come from the environment (comma-separated), so that they
/// need not be written into the config file.
pub const SECRETS_ENV: &str = "LOOP_WEBHOOK_SECRETS";

/// Where `serve` journals: `journal_path`, or a file in the current directory.
pub fn journal_path(config: &WebhookSettings) -> PathBuf {
    config
        .journal_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("loop-webhooks.sqlite"))
}

pub fn server_config(
    config: &WebhookSettings,
    listen: SocketAddr,
    emit: bool,
) -> Result<ServerConfig, ReceiverError> {
    if config.secrets.is_empty() {
        return Err(ReceiverError::NoSecret);
    }
    Ok(ServerConfig {
        listen,
        path: config.path.clone(),
        secrets: config.secrets.clone(),
        encoding: config.signature_encoding,
        max_body_bytes: config.max_body_bytes,
        limits: config.limits,
        journal_path: journal_path(config),
        emit,
    })
}

pub fn run(config: &WebhookSettings, listen: SocketAddr, emit: bool) -> Result<(), ReceiverError> {
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
        .map_err(ReceiverError::Runtime)?;
    rt.block_on(async move {
        eprintln!(
            "source-loop serve: {} webhook secret(s), signature encoding {}, max body {} bytes",
            cfg.secrets.len(),
            cfg.encoding,
            cfg.max_body_bytes
        );
        // SIGTERM or Ctrl-C: stop accepting, finish in-flight requests, commit, exit 0.
        loop_webhooks::server::serve(cfg, loop_webhooks::server::shutdown_signal()).await
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver_config(journal: &std::path::Path) -> WebhookSettings {
        let (mut config, _) =
            WebhookSettings::from_json_str(r#"{"webhook_secrets": ["s"]}"#).unwrap();
        config.journal_path = Some(journal.to_path_buf());
        config
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn without_a_secret_the_receiver_refuses_to_start_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = receiver_config(&dir.path().join("journal.sqlite"));
        config.secrets.clear();
        let err = run(&config, any_port(), false).unwrap_err();
        assert!(matches!(err, ReceiverError::NoSecret), "{err:?}");
        assert_eq!(err.failure_type(), FailureType::Config);
        assert!(err.to_string().contains("`webhook_secrets`"), "{err}");
        assert!(!dir.path().join("journal.sqlite").exists());
    }

    #[test]
    fn a_journal_in_a_missing_directory_is_a_config_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("no-such-dir").join("journal.sqlite");
        let err = run(&receiver_config(&journal), any_port(), false).unwrap_err();
        assert_eq!(err.failure_type(), FailureType::Config, "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&journal.display().to_string()), "{text}");
    }

    #[test]
    fn a_busy_listen_address_is_a_config_error_naming_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind(any_port()).unwrap();
        let addr = taken.local_addr().unwrap();
        let config = receiver_config(&dir.path().join("journal.sqlite"));
        let err = run(&config, addr, false).unwrap_err();
        assert_eq!(err.failure_type(), FailureType::Config, "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{err}"
        );
    }
}
