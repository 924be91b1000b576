//! `source-loop serve --config C [--listen ADDR] [--emit] [--into URL]`: the webhook
//! receiver, and with `--into` the applier that keeps the database's tables current from
//! the journal. It reads the receiver's part of the config: no `api_token` needed.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{inputs, ExitStatus};
use crate::load::apply::Applier;
use crate::load::Target;
use crate::normalize::Normalizer;
use crate::webhooks::{self, SECRETS_ENV};

/// What `serve` was given.
pub struct ServeArgs {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub emit: bool,
    pub into: Option<String>,
}

fn say(message: &dyn std::fmt::Display) {
    eprintln!("source-loop serve: {message}");
}

pub fn serve(args: &ServeArgs) -> ExitStatus {
    let config = match inputs::load_receiver_config(std::slice::from_ref(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            say(&e);
            return ExitStatus::Usage;
        }
    };
    let mut settings = config.webhooks;
    if let Ok(list) = std::env::var(SECRETS_ENV) {
        settings.add_secrets_from_list(&list);
    }
    let applier = match args.into.as_deref().map(Target::parse).transpose() {
        Ok(target) => target.map(|target| {
            Applier::spawn(
                target,
                webhooks::journal_path(&settings),
                Normalizer::of(&config.sync),
            )
        }),
        Err(e) => {
            eprintln!("source-loop serve --into: {e}");
            return ExitStatus::Usage;
        }
    };
    let result = webhooks::run(&settings, args.listen, args.emit);
    if let Some(applier) = applier {
        applier.stop();
    }
    match result {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            say(&e);
            ExitStatus::of_error(e.failure_type())
        }
    }
}
