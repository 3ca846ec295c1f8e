//! The settings tree: loading, layering and validation.
//!
//! Layers, later wins: built-in defaults ([`crate::defaults`]) → the TOML file
//! given with `--config` → environment variables `SWITCHBOARD__SECTION__KEY`
//! → CLI flags. Unknown keys and invalid values fail at load with the key
//! named. Secrets are held in [`Secret`], whose `Debug` prints `MASKED`.
//! Sections with their own file: `[tunnel]` (`tunnel.rs`) and `[cluster]`
//! (`cluster.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::defaults;

mod cluster;
mod logs;
mod proxystore;
mod secret;
mod tunnel;
pub use cluster::{valid_key_prefix, valid_node_id, ClusterSettings, RedisTls, RedisUrl};
pub use logs::LogSettings;
pub use proxystore::{
    proxystore_level, ProxyStoreCli, ProxyStoreLoaded, GLOBUS_CLIENT_ID_ENV,
    GLOBUS_CLIENT_SECRET_ENV, GLOBUS_INTROSPECT_URL_ENV,
};
use secret::mask_url_password;
pub(crate) use secret::serialize_masked_url;
pub use secret::{Secret, MASK};
pub use tunnel::{read_token_file, TunnelService, TunnelSettings, UdpLimits};

/// Environment variable prefix: `SWITCHBOARD__SERVER__PORT=9000`.
pub const ENV_PREFIX: &str = "SWITCHBOARD";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a layer is malformed.
    #[error("cannot load settings: {0}")]
    Load(String),
    /// A key has a value of the wrong type, or is unknown.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `server.port`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The whole settings tree.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The public WebSocket listener and its limits.
    pub server: ServerSettings,
    /// The admin HTTP listener.
    pub admin: AdminSettings,
    /// How clients are authenticated.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// The TCP tunnel (off unless services are configured).
    pub tunnel: TunnelSettings,
    /// Scale-out over Redis (off unless enabled).
    pub cluster: ClusterSettings,
}

/// `[server]`: the public relay listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest accepted frame in bytes.
    pub max_message_bytes: usize,
    /// Most sessions open at once.
    pub max_clients: usize,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Ping interval in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a session is closed, in milliseconds.
    pub heartbeat_timeout_ms: u64,
    /// Frames queued per session before it is a slow consumer.
    pub outbound_queue: usize,
    /// Shutdown grace period in milliseconds.
    pub shutdown_grace_ms: u64,
    /// PEM certificate chain; with `keyfile`, serves `wss://`.
    pub certfile: Option<PathBuf>,
    /// PEM private key for `certfile`.
    pub keyfile: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: defaults::HOST.into(),
            port: defaults::PORT,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_clients: defaults::MAX_CLIENTS,
            workers: defaults::WORKERS,
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_MS,
            heartbeat_timeout_ms: defaults::HEARTBEAT_TIMEOUT_MS,
            outbound_queue: defaults::OUTBOUND_QUEUE,
            shutdown_grace_ms: defaults::SHUTDOWN_GRACE_MS,
            certfile: None,
            keyfile: None,
        }
    }
}

/// `[admin]`: the admin HTTP listener (`/health`, `/clients`, `/metrics`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Whether the admin listener runs at all.
    pub enabled: bool,
    /// Address to bind (loopback by default).
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// If set, requests need `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            host: defaults::ADMIN_HOST.into(),
            port: defaults::ADMIN_PORT,
            token: None,
        }
    }
}

/// How the relay identifies users.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Everyone is the same anonymous user (ProxyStore's default).
    #[default]
    None,
    /// Static bearer tokens mapped to user names.
    Token,
    /// OAuth 2.0 token introspection (RFC 7662).
    Introspection,
}

/// `[auth]`: authentication of WebSocket upgrade requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `none`, `token` or `introspection`.
    pub method: AuthMethod,
    /// `token`: user name → bearer token (`[auth.tokens]`, or
    /// `SWITCHBOARD__AUTH__TOKENS__<USER>=<token>`).
    pub tokens: BTreeMap<String, Secret>,
    /// `token`: a file of `user token` lines (`#` comments), merged with `tokens`.
    pub tokens_file: Option<PathBuf>,
    /// `introspection`: the provider's RFC 7662 endpoint (`http://` or `https://`).
    #[serde(serialize_with = "serialize_masked_url")]
    pub introspection_url: Option<String>,
    /// `introspection`: this relay's client id at the provider.
    pub client_id: Option<String>,
    /// `introspection`: this relay's client secret at the provider.
    pub client_secret: Option<Secret>,
    /// `introspection`: required audience (`aud`), if any.
    pub audience: Option<String>,
    /// `introspection`: HTTP timeout in milliseconds.
    pub introspection_timeout_ms: u64,
    /// `introspection`: seconds a positive result is reused (0 disables the cache).
    pub introspection_cache_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            method: AuthMethod::None,
            tokens: BTreeMap::new(),
            tokens_file: None,
            introspection_url: None,
            client_id: None,
            client_secret: None,
            audience: None,
            introspection_timeout_ms: defaults::INTROSPECTION_TIMEOUT_MS,
            introspection_cache_secs: defaults::INTROSPECTION_CACHE_SECS,
        }
    }
}

/// Overrides given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl Settings {
    /// Loads defaults → `file` → environment (`SWITCHBOARD__…`) → `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        Self::load_with_env(file, overrides, env)
    }

    /// Like [`Settings::load`] with an explicit environment source (tests use this).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: config::Environment,
    ) -> Result<Settings, ConfigError> {
        let source = match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Load(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Load(format!("cannot read {}: {e}", path.display()))
                })?;
                Some(text)
            }
            None => None,
        };
        Self::load_layers(source.as_deref(), overrides, env)
    }

    /// Layers defaults → the TOML document `file` (in this crate's format)
    /// → `env` → `overrides`, then validates.
    pub(crate) fn load_layers(
        file: Option<&str>,
        overrides: &Overrides,
        env: config::Environment,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(text) = file {
            let file = config::File::from_str(text, config::FileFormat::Toml);
            check_keys(&file)?;
            builder = builder.add_source(file);
        }
        check_keys(&env)?;
        builder = builder.add_source(env);
        let set = |b: config::ConfigBuilder<_>, key: &str, value: Option<config::Value>| match value
        {
            Some(v) => b.set_override(key, v),
            None => Ok(b),
        };
        let load = |e: config::ConfigError| ConfigError::Load(e.to_string());
        builder = set(
            builder,
            "server.host",
            overrides.host.clone().map(Into::into),
        )
        .map_err(load)?;
        builder = set(
            builder,
            "server.port",
            overrides.port.map(|p| i64::from(p).into()),
        )
        .map_err(load)?;
        builder = set(
            builder,
            "log.level",
            overrides.log_level.clone().map(Into::into),
        )
        .map_err(load)?;

        let settings = deserialize(builder.build().map_err(load)?)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults overlaid with the TOML document `text` (no
    /// environment, no CLI), **not validated**: call [`Settings::validate`].
    ///
    /// Errors: [`ConfigError::Load`] when `text` is not TOML,
    /// [`ConfigError::Invalid`] naming the key of a wrong type or unknown key.
    /// The fuzz target `relay_config` (fuzz/README.md) drives this.
    pub fn parse_toml(text: &str) -> Result<Settings, ConfigError> {
        let file = config::File::from_str(text, config::FileFormat::Toml);
        check_keys(&file)?;
        let layered = config::Config::builder()
            .add_source(file)
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        deserialize(layered)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.max_message_bytes == 0 {
            return Err(invalid("server.max_message_bytes", "must be at least 1"));
        }
        if s.max_clients == 0 {
            return Err(invalid("server.max_clients", "must be at least 1"));
        }
        if s.outbound_queue == 0 {
            return Err(invalid("server.outbound_queue", "must be at least 1"));
        }
        if s.heartbeat_interval_ms == 0 {
            return Err(invalid(
                "server.heartbeat_interval_ms",
                "must be at least 1",
            ));
        }
        if s.heartbeat_timeout_ms <= s.heartbeat_interval_ms {
            return Err(invalid(
                "server.heartbeat_timeout_ms",
                "must be larger than server.heartbeat_interval_ms",
            ));
        }
        check_host("server.host", &s.host)?;
        check_host("admin.host", &self.admin.host)?;
        match (&s.certfile, &s.keyfile) {
            (Some(_), None) => {
                return Err(invalid("server.keyfile", "required with server.certfile"))
            }
            (None, Some(_)) => {
                return Err(invalid("server.certfile", "required with server.keyfile"))
            }
            _ => {}
        }
        for (key, path) in [
            ("server.certfile", &s.certfile),
            ("server.keyfile", &s.keyfile),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            return Err(invalid("admin.token", "must not be empty"));
        }
        self.validate_auth()?;
        self.tunnel.validate()?;
        self.cluster.validate()?;
        self.log.validate()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if let Some(path) = &a.tokens_file {
            if !path.is_file() {
                return Err(invalid(
                    "auth.tokens_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if a.tokens.values().any(|t| t.expose().is_empty()) {
            return Err(invalid("auth.tokens", "tokens must not be empty"));
        }
        match a.method {
            AuthMethod::None => Ok(()),
            AuthMethod::Token if a.tokens.is_empty() && a.tokens_file.is_none() => Err(invalid(
                "auth.tokens",
                "method \"token\" needs auth.tokens or auth.tokens_file",
            )),
            AuthMethod::Token => Ok(()),
            AuthMethod::Introspection => {
                let url = a.introspection_url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        "auth.introspection_url",
                        "method \"introspection\" needs an http:// or https:// URL",
                    ));
                }
                if a.client_id.as_deref().unwrap_or("").is_empty() {
                    return Err(invalid(
                        "auth.client_id",
                        "required by method \"introspection\"",
                    ));
                }
                if a.client_secret
                    .as_ref()
                    .is_none_or(|s| s.expose().is_empty())
                {
                    return Err(invalid(
                        "auth.client_secret",
                        "required by method \"introspection\"",
                    ));
                }
                if a.introspection_timeout_ms == 0 {
                    return Err(invalid(
                        "auth.introspection_timeout_ms",
                        "must be at least 1",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Refuses a source with a top-level key that no setting has and that the
/// `config` crate would expand at great cost, before it is layered.
///
/// That crate reads each top-level key of a source (a TOML file's, quoted
/// or not, or an environment variable's name) as a path: `a[N]` is element
/// N of array `a`, which it grows to N + 1 values (or inserts -N in front)
/// before anything is checked (`"a[99999999999]" = 1` asks for terabytes),
/// and each `.` opens a nested table, at a cost that grows with the square
/// of the depth (a 4 KB key of 2 000 parts took over 512 MB). No setting
/// has `[`, `]` or more than [`defaults::SETTINGS_KEY_MAX_PARTS`] parts.
///
/// Errors: [`ConfigError::Load`] when the source cannot be read or parsed,
/// [`ConfigError::Invalid`] naming the first such key.
pub(crate) fn check_keys(source: &dyn config::Source) -> Result<(), ConfigError> {
    let keys = source
        .collect()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    let bad = |key: &&String| {
        key.contains(['[', ']']) || key.split('.').count() > defaults::SETTINGS_KEY_MAX_PARTS
    };
    match keys.keys().find(bad) {
        Some(key) => Err(invalid(
            key,
            format!(
                "not a setting: a key has no `[` or `]` and at most {} parts",
                defaults::SETTINGS_KEY_MAX_PARTS
            ),
        )),
        None => Ok(()),
    }
}

/// Deserializes the layered tree, naming the key of the first error.
fn deserialize(layered: config::Config) -> Result<Settings, ConfigError> {
    serde_path_to_error::deserialize(layered).map_err(|e| {
        let key = e.path().to_string();
        invalid(&key, e.into_inner().to_string())
    })
}

fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(
            key,
            format!("{host:?} is not a host name or address"),
        ));
    }
    Ok(())
}
