//! The relay's start options, shared by a start (`switchboard [OPTIONS]`) and
//! `switchboard check-config`, so both load exactly the same layers: the
//! settings file (ours or ProxyStore's), the `SWITCHBOARD__…` environment,
//! then these flags.

use std::path::PathBuf;

use clap::Args;
use switchboard::config::{proxystore_level, ConfigError, Overrides, ProxyStoreCli, Settings};

/// Where the relay's settings come from.
#[derive(Args, Debug, Clone, Default)]
pub struct StartArgs {
    /// TOML settings file (see config/prod.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// ProxyStore's relay TOML (`proxystore-relay --config`), read as is
    /// (README: "Coming from ProxyStore's relay").
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub proxystore_config: Option<PathBuf>,
    /// Address of the public WebSocket listener (overrides server.host).
    #[arg(long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Port of the public WebSocket listener (overrides server.port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Log filter: off, error, warn, info, debug, trace, or an env_logger spec (overrides RUST_LOG and log.level); ProxyStore's DEBUG, INFO, WARNING, ERROR, CRITICAL too.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Also log to DIR/server.log, rotated weekly (overrides log.dir, ProxyStore's logging.log_dir).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

impl StartArgs {
    /// `--log-level` as an env_logger filter: ProxyStore's level names mean
    /// the same in both modes.
    pub fn log_level(&self) -> Option<String> {
        self.log_level
            .as_deref()
            .map(|level| match proxystore_level(level) {
                Some(ours) if level.parse::<i64>().is_err() => ours.to_owned(),
                _ => level.to_owned(),
            })
    }

    /// The flags that override the settings file and the environment.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            log_level: self.log_level(),
        }
    }

    /// Settings from `--config` or `--proxystore-config`, the environment
    /// and the flags, with the warnings to log once logging is up.
    ///
    /// Errors: the [`ConfigError`] a start exits 2 with, naming the key.
    pub fn load(&self) -> Result<(Settings, Vec<String>), ConfigError> {
        self.load_layers().map_err(|e| self.name_flag(e))
    }

    /// An invalid value that came from a flag names the flag (`--host`), not
    /// the settings key it overrides (`server.host`).
    fn name_flag(&self, error: ConfigError) -> ConfigError {
        let ConfigError::Invalid { key, message } = error else {
            return error;
        };
        let flag = match key.as_str() {
            "server.host" if self.host.is_some() => "--host",
            "server.port" if self.port.is_some() => "--port",
            "log.level" if self.log_level.is_some() => "--log-level",
            "log.dir" if self.log_dir.is_some() => "--log-dir",
            _ => return ConfigError::Invalid { key, message },
        };
        ConfigError::Invalid {
            key: flag.into(),
            message,
        }
    }

    fn load_layers(&self) -> Result<(Settings, Vec<String>), ConfigError> {
        if let Some(path) = &self.proxystore_config {
            let ps = ProxyStoreCli {
                host: self.host.clone(),
                port: self.port,
                log_dir: self.log_dir.clone(),
                log_level: self.log_level.clone(),
            };
            let loaded = Settings::load_proxystore(path, &ps)?;
            return Ok((loaded.settings, loaded.warnings));
        }
        let mut settings = Settings::load(self.config.as_deref(), &self.overrides())?;
        if let Some(dir) = &self.log_dir {
            settings.log.dir = Some(dir.clone());
            settings.validate()?;
        }
        Ok((settings, Vec::new()))
    }
}
