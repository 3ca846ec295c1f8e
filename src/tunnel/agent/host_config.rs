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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::services::{self, ServiceConfig};
use super::settings::{AgentSettings, LocalService};
use crate::config::{read_token_file, ConfigError, Secret};
use crate::defaults;
use crate::proxy::{Proxy, ProxyConfig, ProxyError};
use crate::tunnel::tls::AgentTls;

/// Every key of the agent's settings file; all optional so flags can fill them in.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    #[serde(serialize_with = "crate::config::serialize_masked_url")]
    pub http_proxy: Option<String>,
    /// Several services (`[[services]]`, see [`super::services`]) instead of
    /// `service` and its keys.
    pub services: Option<Vec<ServiceConfig>>,
    /// Serve `/metrics` and `/health` (see [`super::metrics`]) on this
    /// `IP:PORT` (default: no listener). Read at start only.
    pub metrics_listen: Option<String>,
    /// Bearer token the metrics listener requires (default: none; then keep
    /// `metrics_listen` on loopback).
    pub metrics_token: Option<Secret>,
}

/// The metrics listener's settings (`metrics_listen`, `metrics_token`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsListen {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token requests must carry, if any.
    pub token: Option<Secret>,
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
            services: flags.services.or(self.services),
            metrics_listen: flags.metrics_listen.or(self.metrics_listen),
            metrics_token: flags.metrics_token.or(self.metrics_token),
        }
    }

    /// The metrics listener, if `metrics_listen` is set: an `IP:PORT`
    /// (port 0 picks one); `metrics_token`, if given, is not empty and
    /// needs `metrics_listen`.
    pub fn metrics(&self) -> Result<Option<MetricsListen>, ConfigError> {
        if let Some(token) = &self.metrics_token {
            if token.expose().trim().is_empty() {
                return Err(invalid("metrics_token", "must not be empty"));
            }
        }
        let Some(listen) = &self.metrics_listen else {
            return match self.metrics_token {
                Some(_) => Err(invalid("metrics_token", "needs metrics_listen")),
                None => Ok(None),
            };
        };
        let addr = listen.parse().map_err(|_| {
            invalid(
                "metrics_listen",
                format!("{listen:?} is not IP:PORT or [IPv6]:PORT"),
            )
        })?;
        Ok(Some(MetricsListen {
            addr,
            token: self.metrics_token.clone(),
        }))
    }

    /// Validates and fills in defaults: one agent per service (the
    /// one-service keys, or each `[[services]]` entry) and relay node
    /// (`relay`, then `more_relays`; each `HOST:PORT`, and a node named
    /// twice, in any spelling of the same address, is refused), in that
    /// order: every relay of the first service, then of the next.
    pub fn into_agents(self) -> Result<Vec<AgentSettings>, ConfigError> {
        Ok(self
            .into_agents_with_sources()?
            .into_iter()
            .map(|(settings, _)| settings)
            .collect())
    }

    /// [`into_agents`](Self::into_agents), each agent with the one-service,
    /// one-relay configuration it was made from (what a reload compares).
    pub fn into_agents_with_sources(self) -> Result<Vec<(AgentSettings, HostConfig)>, ConfigError> {
        let mut relays: Vec<String> = self.relay.iter().cloned().collect();
        relays.extend(self.more_relays.iter().flatten().cloned());
        if relays.is_empty() {
            return Err(invalid("relay", "is required"));
        }
        let mut seen = Vec::with_capacity(relays.len());
        for relay in &relays {
            let node = relay_node(relay).map_err(|m| invalid("relay", m))?;
            if let Some(i) = seen.iter().position(|n| *n == node) {
                return Err(invalid(
                    "relay",
                    format!("{relay} is given twice (as {})", relays[i]),
                ));
            }
            seen.push(node);
        }
        let services = expand(self)?;
        let mut agents = Vec::with_capacity(relays.len() * services.len());
        for (entry, service) in services {
            for relay in &relays {
                // The metrics listener is the process's, not an agent's:
                // changing it restarts no agent.
                let one = HostConfig {
                    relay: Some(relay.clone()),
                    more_relays: None,
                    metrics_listen: None,
                    metrics_token: None,
                    ..service.clone()
                };
                let settings = one
                    .clone()
                    .into_settings()
                    .map_err(|e| services::in_entry(entry, e))?;
                agents.push((settings, one));
            }
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

/// The one-service configurations `config` stands for: itself without
/// `[[services]]`, else one per entry (its index kept for messages), the
/// shared keys copied in. A per-service key at the top level beside
/// `[[services]]` is refused, naming it.
fn expand(config: HostConfig) -> Result<Vec<(Option<usize>, HostConfig)>, ConfigError> {
    let Some(entries) = config.services.clone() else {
        return Ok(vec![(None, config)]);
    };
    let top_level = [
        config.service.is_some(),
        config.token.is_some(),
        config.token_file.is_some(),
        config.local.is_some(),
        config.echo.is_some(),
        config.pool.is_some(),
        config.proxy_protocol.is_some(),
        config.local_udp.is_some(),
    ];
    if let Some(index) = top_level.iter().position(|set| *set) {
        return Err(invalid(
            services::PER_SERVICE[index],
            "belongs in each [[services]] entry when [[services]] is given \
             (the --service, --token-file, --local, --local-udp, --echo, --pool and \
             --proxy-protocol flags are for the one-service form)",
        ));
    }
    services::check(&entries)?;
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let one = HostConfig {
                services: None,
                service: entry.name,
                token: entry.token,
                token_file: entry.token_file,
                local: entry.local,
                echo: entry.echo,
                pool: entry.pool,
                proxy_protocol: entry.proxy_protocol,
                local_udp: entry.local_udp,
                ..config.clone()
            };
            (Some(index), one)
        })
        .collect())
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

/// A relay address as a node: `(host, port)` from `HOST:PORT` or
/// `[IPv6]:PORT` (the forms a TCP connect takes), with the host lowercased
/// (and without a final `.`) or an IP address in its canonical form, and
/// the port as a number; so `Relay.example:07000` and `relay.example:7000`,
/// or `[::1]:7000` and `[0:0::1]:7000`, are one node. Different names of
/// one machine (`localhost`, `127.0.0.1`) stay different: nothing is resolved.
fn relay_node(relay: &str) -> Result<(String, u16), String> {
    let form = || format!("{relay:?} is not HOST:PORT or [IPv6]:PORT");
    let (host, port) = match relay.strip_prefix('[') {
        Some(rest) => {
            let (ip, port) = rest.split_once("]:").ok_or_else(form)?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| form())?;
            (ip.to_string(), port)
        }
        None => {
            let (host, port) = relay.rsplit_once(':').ok_or_else(form)?;
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
            if host.is_empty() || !host.bytes().all(valid) {
                return Err(form());
            }
            let host = match host.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
            };
            (host, port)
        }
    };
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits && port > 0 => Ok((host, port)),
        _ => Err(format!("{relay:?} has no port in 1-65535")),
    }
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
#[path = "host_config_tests.rs"]
mod tests;
