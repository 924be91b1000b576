//! One loader of the files a command is given (config, catalog, state) and one error
//! for all of them. Every variant is the user's to fix (an Airbyte `config_error`, exit
//! 2), names the file, and says what is wrong; none ever contains the token.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{kind, Config, ConfigError, ReceiverConfig};
use crate::formats::bookmarks::Bookmarks;
use crate::formats::catalog::{parse_configured_catalog, CatalogError};
use crate::formats::state::{parse_bookmarked_state, StateFormError};
use crate::state::{StreamState, StreamStateError};
use crate::streams::Selected;

/// A catalog in the form a command reads: Airbyte's configured catalog (`read`, `sync`)
/// or Singer's catalog (`tap-loop`).
#[derive(Debug, thiserror::Error)]
pub enum CatalogFormError {
    #[error(transparent)]
    Configured(#[from] CatalogError),
    #[error(transparent)]
    Singer(#[from] crate::singer::catalog::CatalogError),
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no --config: pass the config file, e.g. --config config.json holding {{\"api_token\": \"...\"}}")]
    NoConfig,
    #[error("config file {}: not a JSON object ({problem}); a config is e.g. {{\"api_token\": \"...\", \"start_date\": \"2024-01-01\"}}", path.display())]
    ConfigFile { path: PathBuf, problem: String },
    #[error("{source} (config: {files})")]
    Config {
        files: String,
        #[source]
        source: ConfigError,
    },
    #[error("{source} (file {})", path.display())]
    Catalog {
        path: PathBuf,
        #[source]
        source: CatalogFormError,
    },
    #[error("{source} (file {})", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: StateFormError,
    },
    #[error("{source} (file {})", path.display())]
    Resume {
        path: PathBuf,
        #[source]
        source: StreamStateError,
    },
}

/// The text of an input file; `what` names it in the error.
pub fn read_file(path: &Path, what: &'static str) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn file_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `add` merged into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Map<String, Value>, add: Map<String, Value>) {
    for (k, v) in add {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(a)) => merge(b, a),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The config files merged in order (a later file's keys win, inside objects too), as
/// one JSON object.
fn merged_config(paths: &[PathBuf]) -> Result<Map<String, Value>, InputError> {
    if paths.is_empty() {
        return Err(InputError::NoConfig);
    }
    let mut merged = Map::new();
    for path in paths {
        let text = read_file(path, "config")?;
        // the token is never in a serde_json error message: it names positions only
        let problem = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => {
                merge(&mut merged, m);
                continue;
            }
            Ok(other) => format!("got {}", kind(&other)),
            Err(e) => e.to_string(),
        };
        return Err(InputError::ConfigFile {
            path: path.clone(),
            problem,
        });
    }
    Ok(merged)
}

/// The connector's config (the API token required), from one or more files. Its warnings
/// (unknown keys, with a suggestion) are shown on stderr, and kept in `Config::warnings`.
pub fn load_config(paths: &[PathBuf]) -> Result<Config, InputError> {
    let merged = merged_config(paths)?;
    let config =
        Config::from_value(&Value::Object(merged)).map_err(|source| InputError::Config {
            files: file_list(paths),
            source,
        })?;
    show_warnings(&config.warnings);
    Ok(config)
}

/// A config's warnings, one stderr line each (`source-loop: warning: …`, `tap-loop: …`).
fn show_warnings(warnings: &[String]) {
    for w in warnings {
        crate::output::warning_line(w);
    }
}

/// The receiver's config (`serve`): the same file, the API token not required.
pub fn load_receiver_config(paths: &[PathBuf]) -> Result<ReceiverConfig, InputError> {
    let merged = merged_config(paths)?;
    let config = ReceiverConfig::from_value(&Value::Object(merged)).map_err(|source| {
        InputError::Config {
            files: file_list(paths),
            source,
        }
    })?;
    show_warnings(&config.warnings);
    Ok(config)
}

/// An Airbyte configured catalog.
pub fn load_configured_catalog(path: &Path) -> Result<Vec<Selected>, InputError> {
    parse_configured_catalog(&read_file(path, "catalog")?).map_err(|e| InputError::Catalog {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// A Singer catalog (`tap-loop --catalog`).
pub fn load_singer_catalog(
    path: &Path,
) -> Result<crate::singer::catalog::ParsedCatalog, InputError> {
    crate::singer::catalog::parse_catalog(&read_file(path, "catalog")?).map_err(|e| {
        InputError::Catalog {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// A state in any form (Airbyte's, Singer's bookmarks, STATE lines), with the bookmarks
/// as found; `None` for a file that does not exist (a first sync: the command says so).
pub fn load_state(path: &Path) -> Result<Option<Bookmarks>, InputError> {
    if !path.exists() {
        return Ok(None);
    }
    parse_bookmarked_state(&read_file(path, "state")?)
        .map(Some)
        .map_err(|source| InputError::State {
            path: path.to_path_buf(),
            source,
        })
}

/// Every selected stream's state must be one the engine can resume from: checked before
/// the read starts, so that a bad state file is an input error, not a failed stream.
pub fn check_resumable(
    path: &Path,
    state: &Bookmarks,
    selected: &[Selected],
) -> Result<(), InputError> {
    for sel in selected {
        if let Some(v) = state.input.get(sel.def.name) {
            StreamState::from_value(sel.def, v).map_err(|source| InputError::Resume {
                path: path.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The note for a state file that does not exist.
pub fn first_sync_note(path: &Path) -> String {
    format!(
        "state file {} does not exist: this is a first sync",
        path.display()
    )
}
