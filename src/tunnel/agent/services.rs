//! Many services in one agent: the `[[services]]` tables of the agent's
//! settings file, as rathole's client and frp's frpc serve several services
//! from one process.
//!
//! ```toml
//! relay = "relay.example.org:8702"   # shared: relays, timers, TLS, proxy, splice
//!
//! [[services]]
//! name = "web"
//! token_file = "/etc/switchboard/web.token"
//! local = "127.0.0.1:8080"
//! pool = 10
//! proxy_protocol = true
//!
//! [[services]]
//! name = "ssh"
//! token_file = "/etc/switchboard/ssh.token"
//! local = "127.0.0.1:22"
//! ```
//!
//! Each entry takes the per-service keys of the one-service form (`service`
//! becomes `name`); everything else is shared by all entries. The one-service
//! keys at the top level and `[[services]]` exclude each other; errors name
//! the entry, e.g. `services[1].local`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Secret};

/// One `[[services]]` entry: the keys that differ between services.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, as configured on the relay (required).
    pub name: Option<String>,
    /// The service token (prefer `token_file`).
    pub token: Option<Secret>,
    /// File whose first line is the service token.
    pub token_file: Option<PathBuf>,
    /// Local service `host:port`.
    pub local: Option<String>,
    /// Serve the built-in echo service instead of `local`.
    pub echo: Option<bool>,
    /// Pooled data connections kept open for this service.
    pub pool: Option<usize>,
    /// Send a PROXY protocol v2 header to the local service (default false).
    pub proxy_protocol: Option<bool>,
    /// Local UDP service `host:port`, for a relay service of `type = "udp"`.
    pub local_udp: Option<String>,
}

/// Keys of the one-service form that belong in each `[[services]]` entry.
pub(super) const PER_SERVICE: [&str; 8] = [
    "service",
    "token",
    "token_file",
    "local",
    "echo",
    "pool",
    "proxy_protocol",
    "local_udp",
];

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks the entries themselves: at least one, each named, no name twice.
pub(super) fn check(entries: &[ServiceConfig]) -> Result<(), ConfigError> {
    if entries.is_empty() {
        return Err(invalid("services", "needs at least one [[services]] entry"));
    }
    for (index, entry) in entries.iter().enumerate() {
        let name = entry
            .name
            .as_deref()
            .ok_or_else(|| invalid(&format!("services[{index}].name"), "is required"))?;
        if entries[..index]
            .iter()
            .any(|e| e.name.as_deref() == Some(name))
        {
            return Err(invalid(
                &format!("services[{index}].name"),
                format!("{name:?} is given twice"),
            ));
        }
    }
    Ok(())
}

/// An error from entry `index`'s settings, its key named in the entry
/// (`services[1].local`; `service` is the entry's `name`); shared keys as they are.
pub(super) fn in_entry(index: Option<usize>, error: ConfigError) -> ConfigError {
    match (index, error) {
        (Some(index), ConfigError::Invalid { key, message })
            if PER_SERVICE.contains(&key.as_str()) =>
        {
            let key = if key == "service" {
                "name"
            } else {
                key.as_str()
            };
            invalid(&format!("services[{index}].{key}"), message)
        }
        (_, error) => error,
    }
}
