//! `[log]`: the log filter, the optional log file and the periodic
//! "Connected clients" line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::defaults;

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// An env_logger filter: a level (`info`) or a spec (`info,actix_web=warn`).
    pub level: String,
    /// If set, the log also goes to `<dir>/server.log` (ProxyStore's file
    /// name), rotated weekly, besides stderr.
    pub dir: Option<PathBuf>,
    /// Seconds between "Connected clients: N" lines (0: none).
    pub clients_interval_secs: u64,
    /// The clients line lists each client when there are fewer than this
    /// many (0: never).
    pub clients_limit: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: defaults::LOG_LEVEL.into(),
            dir: None,
            clients_interval_secs: 0,
            clients_limit: 0,
        }
    }
}

impl LogSettings {
    /// Checks the filter and the log directory.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = &self.dir {
            if dir.as_os_str().is_empty() || (dir.exists() && !dir.is_dir()) {
                return Err(invalid(
                    "log.dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        check_log_level(&self.level)
    }
}

/// `level` as env_logger takes it: a level name or a spec with `=`.
pub(super) fn check_log_level(level: &str) -> Result<(), ConfigError> {
    let is_level = ["off", "error", "warn", "info", "debug", "trace"]
        .contains(&level.to_ascii_lowercase().as_str());
    if is_level || level.contains('=') {
        Ok(())
    } else {
        Err(invalid(
            "log.level",
            format!(
                "{level:?} is not one of off, error, warn, info, debug, trace or a filter spec"
            ),
        ))
    }
}
