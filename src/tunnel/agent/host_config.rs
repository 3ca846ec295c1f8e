//! The host agent's settings file (`switchboard host --config FILE`) and
//! its merge with command-line flags (flags win).
//!
//! ```toml
//! relay = "relay.example.org:8702"
//! service = "web"
//! token_file = "/etc/switchboard/web.token"
//! local = "127.0.0.1:8080"   # or: echo = true, or: local_udp = "127.0.0.1:53"
//! pool = 10
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::settings::{AgentSettings, LocalService};
use crate::config::{read_token_file, ConfigError, Secret};
use crate::defaults;
use crate::proxy::{Proxy, ProxyConfig, ProxyError};
use crate::tunnel::tls::AgentTls;

/// Every key of the agent's settings file; all optional so flags can fill them in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The relay's agents listener, `host:port`.
    pub relay: Option<String>,
    /// Further relay nodes (`host:port` each) of a cluster: the agent keeps
    /// a control channel and a pool on `relay` and on each of these, so the
    /// service's public port on any node serves clients.
    pub more_relays: Option<Vec<String>>,
    /// Service name.
    pub service: Option<String>,
    /// The service token (prefer `token_file`).
    pub token: Option<Secret>,
    /// File whose first line is the service token.
    pub token_file: Option<PathBuf>,
    /// Local service `host:port`.
    pub local: Option<String>,
    /// Serve the built-in echo service instead of `local`.
    pub echo: Option<bool>,
    /// Local UDP service `host:port` (for a relay service of `type = "udp"`),
    /// instead of `local`.
    pub local_udp: Option<String>,
    /// Pooled data connections kept open.
    pub pool: Option<usize>,
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// Relay silence after which a connection is dropped, in milliseconds.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Handshake timeout, in milliseconds.
    pub handshake_timeout_ms: Option<u64>,
    /// First reconnect delay, in milliseconds.
    pub backoff_min_ms: Option<u64>,
    /// Largest reconnect delay, in milliseconds.
    pub backoff_max_ms: Option<u64>,
    /// Time the local service gets to accept, in milliseconds.
    pub local_connect_timeout_ms: Option<u64>,
    /// Forward with zero-copy `splice(2)` on Linux (default true).
    pub splice: Option<bool>,
    /// Send a PROXY protocol v2 header to the local service (default false).
    pub proxy_protocol: Option<bool>,
    /// Connect to the relay over TLS (default false).
    pub tls: Option<bool>,
    /// PEM file of the CA(s) to trust for the relay's certificate (default: web PKI roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Name to check the relay's certificate against (default: the host part of `relay`).
    pub tls_server_name: Option<String>,
    /// HTTP proxy to reach the relay through with `CONNECT`,
    /// `http://[user:password@]host[:port]` (default: `HTTPS_PROXY`, else
    /// `ALL_PROXY`; `NO_PROXY` exempts relays either way).
    pub http_proxy: Option<String>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl HostConfig {
    /// Reads a settings file; unknown keys are an error naming the key.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        HostConfig::parse(&text)
    }

    /// Parses the text of a settings file (TOML); unknown keys are an error
    /// naming the key. Not validated: see [`HostConfig::into_settings`].
    /// The fuzz target `host_config` (fuzz/README.md) drives this.
    pub fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        let de = toml_deserializer(text)?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })
    }

    /// `self` with every key that `flags` sets replaced.
    pub fn merge(self, flags: HostConfig) -> HostConfig {
        HostConfig {
            // Relays given as flags replace the file's whole list.
            more_relays: if flags.relay.is_some() {
                flags.more_relays
            } else {
                flags.more_relays.or(self.more_relays)
            },
            relay: flags.relay.or(self.relay),
            service: flags.service.or(self.service),
            token: flags.token.or(self.token),
            token_file: flags.token_file.or(self.token_file),
            local: flags.local.or(self.local),
            echo: flags.echo.or(self.echo),
            local_udp: flags.local_udp.or(self.local_udp),
            pool: flags.pool.or(self.pool),
            heartbeat_interval_ms: flags.heartbeat_interval_ms.or(self.heartbeat_interval_ms),
            heartbeat_timeout_ms: flags.heartbeat_timeout_ms.or(self.heartbeat_timeout_ms),
            handshake_timeout_ms: flags.handshake_timeout_ms.or(self.handshake_timeout_ms),
            backoff_min_ms: flags.backoff_min_ms.or(self.backoff_min_ms),
            backoff_max_ms: flags.backoff_max_ms.or(self.backoff_max_ms),
            local_connect_timeout_ms: flags
                .local_connect_timeout_ms
                .or(self.local_connect_timeout_ms),
            splice: flags.splice.or(self.splice),
            proxy_protocol: flags.proxy_protocol.or(self.proxy_protocol),
            tls: flags.tls.or(self.tls),
            tls_ca_file: flags.tls_ca_file.or(self.tls_ca_file),
            tls_server_name: flags.tls_server_name.or(self.tls_server_name),
            http_proxy: flags.http_proxy.or(self.http_proxy),
        }
    }

    /// Validates and fills in defaults: one agent per relay node (`relay`,
    /// then `more_relays`; a node named twice is refused), all serving the
    /// same service.
    pub fn into_agents(self) -> Result<Vec<AgentSettings>, ConfigError> {
        let mut relays: Vec<String> = self.relay.iter().cloned().collect();
        relays.extend(self.more_relays.iter().flatten().cloned());
        if relays.is_empty() {
            return Err(invalid("relay", "is required"));
        }
        let mut agents = Vec::with_capacity(relays.len());
        for (index, relay) in relays.iter().enumerate() {
            if relays[..index].contains(relay) {
                return Err(invalid("relay", format!("{relay} is given twice")));
            }
            let one = HostConfig {
                relay: Some(relay.clone()),
                more_relays: None,
                ..self.clone()
            };
            agents.push(one.into_settings()?);
        }
        Ok(agents)
    }

    /// Validates and fills in defaults for `relay` alone (`more_relays` is
    /// ignored; [`into_agents`](Self::into_agents) makes one per node).
    pub fn into_settings(self) -> Result<AgentSettings, ConfigError> {
        let relay = self.relay.ok_or_else(|| invalid("relay", "is required"))?;
        let service = self
            .service
            .ok_or_else(|| invalid("service", "is required"))?;
        if !crate::protocol::tunnel::valid_service_name(&service) {
            return Err(invalid(
                "service",
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let token = token(self.token, self.token_file)?;
        let local = match self.local_udp {
            Some(_) if self.local.is_some() || self.echo == Some(true) => {
                return Err(invalid(
                    "local_udp",
                    "give one of local, local_udp and echo",
                ))
            }
            Some(addr) if addr.rsplit_once(':').is_some() => LocalService::Udp(addr),
            Some(addr) => return Err(invalid("local_udp", format!("{addr:?} is not host:port"))),
            None => local(self.echo.unwrap_or(false), self.local)?,
        };
        let tls = if self.tls.unwrap_or(false) || self.tls_ca_file.is_some() {
            Some(tls(
                &relay,
                self.tls_ca_file.as_deref(),
                self.tls_server_name.as_deref(),
            )?)
        } else {
            None
        };
        let proxy = match self.http_proxy {
            Some(url) => Proxy::new(&ProxyConfig::Url(url), "http_proxy"),
            None => Proxy::new(&ProxyConfig::Env, "http_proxy"),
        }
        .map_err(|e| match e {
            ProxyError::InvalidUrl { origin, reason } => invalid(&origin, reason),
            other => invalid("http_proxy", other.to_string()),
        })?;
        let mut settings = AgentSettings::new(relay, service, token, local);
        settings.tls = tls;
        settings.proxy = proxy;
        settings.pool = self.pool.unwrap_or(defaults::AGENT_POOL);
        settings.splice = self.splice.unwrap_or(defaults::TUNNEL_SPLICE);
        settings.proxy_protocol = self.proxy_protocol.unwrap_or(false);
        if settings.proxy_protocol && settings.local == LocalService::Echo {
            return Err(invalid("proxy_protocol", "needs a local service, not echo"));
        }
        if settings.proxy_protocol && matches!(settings.local, LocalService::Udp(_)) {
            return Err(invalid(
                "proxy_protocol",
                "is for TCP services only, not with local_udp",
            ));
        }
        if settings.pool == 0 {
            return Err(invalid("pool", "must be at least 1"));
        }
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        settings.heartbeat_interval = ms(self.heartbeat_interval_ms, settings.heartbeat_interval);
        settings.heartbeat_timeout = ms(self.heartbeat_timeout_ms, settings.heartbeat_timeout);
        settings.handshake_timeout = ms(self.handshake_timeout_ms, settings.handshake_timeout);
        settings.backoff_min = ms(self.backoff_min_ms, settings.backoff_min);
        settings.backoff_max = ms(self.backoff_max_ms, settings.backoff_max);
        settings.local_connect_timeout = ms(
            self.local_connect_timeout_ms,
            settings.local_connect_timeout,
        );
        if settings.heartbeat_timeout <= settings.heartbeat_interval {
            return Err(invalid(
                "heartbeat_timeout_ms",
                "must be larger than heartbeat_interval_ms",
            ));
        }
        if settings.backoff_min.is_zero() || settings.backoff_max < settings.backoff_min {
            return Err(invalid(
                "backoff_max_ms",
                "needs 0 < backoff_min_ms <= backoff_max_ms",
            ));
        }
        Ok(settings)
    }
}

/// The token: exactly one of an inline token and a token file.
fn token(token: Option<Secret>, file: Option<PathBuf>) -> Result<Secret, ConfigError> {
    match (token, file) {
        (Some(token), None) if !token.expose().is_empty() => Ok(token),
        (None, Some(path)) => read_token_file(&path).map_err(|m| invalid("token_file", m)),
        (Some(_), Some(_)) => Err(invalid("token", "give token or token_file, not both")),
        _ => Err(invalid("token_file", "a token or token file is required")),
    }
}

/// What the agent serves: exactly one of `local` (host:port) and `echo`.
fn local(echo: bool, local: Option<String>) -> Result<LocalService, ConfigError> {
    match (echo, local) {
        (true, None) => Ok(LocalService::Echo),
        (false, Some(addr)) if addr.rsplit_once(':').is_some() => Ok(LocalService::Addr(addr)),
        (false, Some(addr)) => Err(invalid("local", format!("{addr:?} is not host:port"))),
        (true, Some(_)) => Err(invalid("local", "give local or echo, not both")),
        (false, None) => Err(invalid("local", "local (host:port) or echo is required")),
    }
}

/// TLS towards `relay`: the name checked defaults to the relay's host.
fn tls(
    relay: &str,
    ca_file: Option<&Path>,
    server_name: Option<&str>,
) -> Result<AgentTls, ConfigError> {
    let host = relay.rsplit_once(':').map_or(relay, |(h, _)| h);
    let name = server_name.unwrap_or(host.trim_matches(['[', ']']));
    AgentTls::new(ca_file, name).map_err(|m| invalid("tls_ca_file", m))
}

fn toml_deserializer(text: &str) -> Result<config::Config, ConfigError> {
    let file = config::File::from_str(text, config::FileFormat::Toml);
    crate::config::check_keys(&file)?;
    config::Config::builder()
        .add_source(file)
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HostConfig {
        HostConfig {
            relay: Some("127.0.0.1:7000".into()),
            service: Some("web".into()),
            token: Some(Secret::new("t0ken")),
            local: Some("127.0.0.1:8080".into()),
            ..HostConfig::default()
        }
    }

    fn refused(config: HostConfig) -> String {
        match config.into_settings() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn an_array_index_key_is_refused_before_any_array_grows() {
        // The config crate would grow an array `relay` to 10^12 values.
        let text = "\"relay[999999999999]\" = 1\n";
        match HostConfig::parse(text) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "relay[999999999999]"),
            other => panic!("expected the key named, got {other:?}"),
        }
    }

    #[test]
    fn one_agent_per_relay_node_and_flags_replace_the_files_nodes() {
        let text =
            "relay = \"10.0.0.1:7000\"\nmore_relays = [\"10.0.0.2:7000\", \"10.0.0.3:7000\"]\n\
                    service = \"web\"\ntoken = \"t0ken\"\nlocal = \"127.0.0.1:8080\"\n";
        let file = HostConfig::parse(text).unwrap();
        let relays = |agents: Vec<AgentSettings>| -> Vec<String> {
            agents.into_iter().map(|a| a.relay).collect()
        };
        assert_eq!(
            relays(file.clone().into_agents().unwrap()),
            ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
        );
        let flags = HostConfig {
            relay: Some("10.0.0.9:7000".into()),
            ..HostConfig::default()
        };
        assert_eq!(
            relays(file.merge(flags).into_agents().unwrap()),
            ["10.0.0.9:7000"]
        );
        let twice = HostConfig {
            more_relays: Some(vec!["127.0.0.1:7000".into()]),
            ..valid()
        };
        assert!(matches!(
            twice.into_agents(),
            Err(ConfigError::Invalid { key, .. }) if key == "relay"
        ));
    }

    #[test]
    fn a_complete_config_fills_in_defaults() {
        let s = valid().into_settings().unwrap();
        assert_eq!(s.pool, defaults::AGENT_POOL);
        assert_eq!(s.local, LocalService::Addr("127.0.0.1:8080".into()));
        assert!(s.tls.is_none() && !s.proxy_protocol);
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases: Vec<(&str, HostConfig)> = vec![
            (
                "relay",
                HostConfig {
                    relay: None,
                    ..valid()
                },
            ),
            (
                "service",
                HostConfig {
                    service: Some("a b".into()),
                    ..valid()
                },
            ),
            (
                "token",
                HostConfig {
                    token_file: Some("/x".into()),
                    ..valid()
                },
            ),
            (
                "token_file",
                HostConfig {
                    token: None,
                    ..valid()
                },
            ),
            (
                "token_file",
                HostConfig {
                    token: Some(Secret::new("")),
                    ..valid()
                },
            ),
            (
                "local",
                HostConfig {
                    local: Some("nowhere".into()),
                    ..valid()
                },
            ),
            (
                "local",
                HostConfig {
                    echo: Some(true),
                    ..valid()
                },
            ),
            (
                "local",
                HostConfig {
                    local: None,
                    ..valid()
                },
            ),
            (
                "pool",
                HostConfig {
                    pool: Some(0),
                    ..valid()
                },
            ),
            (
                "proxy_protocol",
                HostConfig {
                    local: None,
                    echo: Some(true),
                    proxy_protocol: Some(true),
                    ..valid()
                },
            ),
            (
                "proxy_protocol",
                HostConfig {
                    local: None,
                    local_udp: Some("127.0.0.1:53".into()),
                    proxy_protocol: Some(true),
                    ..valid()
                },
            ),
            (
                "local_udp",
                HostConfig {
                    local_udp: Some("127.0.0.1:53".into()),
                    ..valid()
                },
            ),
            (
                "local_udp",
                HostConfig {
                    local: None,
                    local_udp: Some("nowhere".into()),
                    ..valid()
                },
            ),
            (
                "heartbeat_timeout_ms",
                HostConfig {
                    heartbeat_interval_ms: Some(100),
                    heartbeat_timeout_ms: Some(100),
                    ..valid()
                },
            ),
            (
                "backoff_max_ms",
                HostConfig {
                    backoff_min_ms: Some(0),
                    ..valid()
                },
            ),
            (
                "backoff_max_ms",
                HostConfig {
                    backoff_min_ms: Some(50),
                    backoff_max_ms: Some(10),
                    ..valid()
                },
            ),
            (
                "tls_ca_file",
                HostConfig {
                    tls_ca_file: Some("/no/such/ca.pem".into()),
                    ..valid()
                },
            ),
        ];
        for (key, config) in cases {
            assert_eq!(refused(config.clone()), key, "{config:?}");
        }
    }
}
