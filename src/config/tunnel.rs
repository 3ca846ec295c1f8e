//! `[tunnel]`: the TCP tunnel's relay-side settings and their validation.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_host, invalid, ConfigError, Secret};
use crate::defaults;
use crate::protocol::tunnel::Transport;

/// `[tunnel]`: the TCP tunnel's relay side. Runs when `[[tunnel.services]]` is not empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// Address of the listener where host agents connect (control and data).
    pub host: String,
    /// Port of that listener (0 picks a free one).
    pub port: u16,
    /// How long a client waits for a pooled connection when none is free, in milliseconds.
    pub pool_wait_ms: u64,
    /// Clients of one service waiting for a pooled connection at once; more are closed.
    pub max_waiting: usize,
    /// Pooled data connections one service holds at most.
    pub max_pool: usize,
    /// Tunnelled client connections open at once across all services.
    pub max_clients: usize,
    /// Time an agent connection gets to complete its handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Time a pooled connection gets to answer the heartbeat sent with a
    /// client's `Start` before the client is handed to another, in milliseconds.
    pub handoff_timeout_ms: u64,
    /// Heartbeat interval on control and idle pooled connections, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a control or idle pooled connection is dropped, in milliseconds.
    pub heartbeat_timeout_ms: u64,
    /// Buffer (or splice pipe) size of each direction of a tunnelled connection, in bytes.
    pub copy_buffer: usize,
    /// Forward with zero-copy `splice(2)` on Linux (falls back to copying elsewhere).
    pub splice: bool,
    /// Runtime threads of the tunnel: 1 = single-threaded, 0 = one per core.
    pub workers: usize,
    /// PEM certificate chain; with `keyfile`, agents must connect over TLS.
    pub certfile: Option<PathBuf>,
    /// PEM private key for `certfile`.
    pub keyfile: Option<PathBuf>,
    /// The tunnelled services (`[[tunnel.services]]`).
    pub services: Vec<TunnelService>,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            host: defaults::TUNNEL_HOST.into(),
            port: defaults::TUNNEL_PORT,
            pool_wait_ms: defaults::TUNNEL_POOL_WAIT_MS,
            max_waiting: defaults::TUNNEL_MAX_WAITING,
            max_pool: defaults::TUNNEL_MAX_POOL,
            max_clients: defaults::TUNNEL_MAX_CLIENTS,
            handshake_timeout_ms: defaults::TUNNEL_HANDSHAKE_TIMEOUT_MS,
            handoff_timeout_ms: defaults::TUNNEL_HANDOFF_TIMEOUT_MS,
            heartbeat_interval_ms: defaults::TUNNEL_HEARTBEAT_INTERVAL_MS,
            heartbeat_timeout_ms: defaults::TUNNEL_HEARTBEAT_TIMEOUT_MS,
            copy_buffer: defaults::TUNNEL_COPY_BUFFER,
            splice: defaults::TUNNEL_SPLICE,
            workers: defaults::TUNNEL_WORKERS,
            certfile: None,
            keyfile: None,
            services: Vec::new(),
        }
    }
}

/// One `[[tunnel.services]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelService {
    /// Service name agents announce: 1–64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Public `host:port` where clients of this service connect (port 0
    /// picks one): a TCP listener, or a UDP socket with `type = "udp"`.
    pub bind: String,
    /// `"tcp"` (the default) or `"udp"`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// UDP only: a session idle (no datagram either way) this long is
    /// closed, in milliseconds.
    #[serde(default)]
    pub udp_idle_timeout_ms: Option<u64>,
    /// UDP only: sessions (client addresses) open at once.
    #[serde(default)]
    pub udp_max_sessions: Option<usize>,
    /// UDP only: datagrams queued per session before its pooled connection
    /// is ready or while it is slow.
    #[serde(default)]
    pub udp_queue: Option<usize>,
    /// The service's shared token (agents prove they hold it; it never crosses the wire).
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file whose first line is the token (instead of `token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// A UDP service's limits, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// Idle time after which a session is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Sessions open at once.
    pub max_sessions: usize,
    /// Datagrams queued per session.
    pub queue: usize,
}

impl TunnelService {
    /// The service's transport (`type`; TCP unless `"udp"`).
    pub fn transport(&self) -> Transport {
        match self.kind.as_deref() {
            Some("udp") => Transport::Udp,
            _ => Transport::Tcp,
        }
    }

    /// The UDP limits, defaults filled in.
    pub fn udp_limits(&self) -> UdpLimits {
        UdpLimits {
            idle_timeout_ms: self
                .udp_idle_timeout_ms
                .unwrap_or(defaults::TUNNEL_UDP_IDLE_TIMEOUT_MS),
            max_sessions: self
                .udp_max_sessions
                .unwrap_or(defaults::TUNNEL_UDP_MAX_SESSIONS),
            queue: self.udp_queue.unwrap_or(defaults::TUNNEL_UDP_QUEUE),
        }
    }

    /// The service's token, from `token` or the first line of `token_file`.
    pub fn load_token(&self) -> Result<Secret, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let path = self
            .token_file
            .as_ref()
            .ok_or_else(|| invalid("tunnel.services.token", "token or token_file is required"))?;
        read_token_file(path).map_err(|message| invalid("tunnel.services.token_file", message))
    }
}

/// Reads a token file: its first line, trimmed, must not be empty.
pub fn read_token_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "{} holds no token on its first line",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

impl TunnelSettings {
    /// Checks every `tunnel.*` key and each service (reads token files).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_host("tunnel.host", &self.host)?;
        for (key, value) in [
            ("tunnel.pool_wait_ms", self.pool_wait_ms),
            ("tunnel.handshake_timeout_ms", self.handshake_timeout_ms),
            ("tunnel.handoff_timeout_ms", self.handoff_timeout_ms),
            ("tunnel.heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("tunnel.max_waiting", self.max_waiting as u64),
            ("tunnel.max_pool", self.max_pool as u64),
            ("tunnel.max_clients", self.max_clients as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "tunnel.heartbeat_timeout_ms",
                "must be larger than tunnel.heartbeat_interval_ms",
            ));
        }
        if self.handoff_timeout_ms > self.handshake_timeout_ms {
            return Err(invalid(
                "tunnel.handoff_timeout_ms",
                "must not exceed tunnel.handshake_timeout_ms (the wait for Started)",
            ));
        }
        match (&self.certfile, &self.keyfile) {
            (Some(_), None) => {
                return Err(invalid("tunnel.keyfile", "required with tunnel.certfile"))
            }
            (None, Some(_)) => {
                return Err(invalid("tunnel.certfile", "required with tunnel.keyfile"))
            }
            _ => {}
        }
        for (key, path) in [
            ("tunnel.certfile", &self.certfile),
            ("tunnel.keyfile", &self.keyfile),
        ] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                return Err(invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if self.copy_buffer < 1024 {
            return Err(invalid("tunnel.copy_buffer", "must be at least 1024"));
        }
        let mut names = std::collections::BTreeSet::new();
        for service in &self.services {
            service.validate()?;
            if !names.insert(service.name.as_str()) {
                return Err(invalid(
                    "tunnel.services.name",
                    format!("{:?} is configured twice", service.name),
                ));
            }
        }
        Ok(())
    }
}

impl TunnelService {
    /// Checks this service's name, bind address and token (reads a token file).
    fn validate(&self) -> Result<(), ConfigError> {
        if !crate::protocol::tunnel::valid_service_name(&self.name) {
            return Err(invalid(
                "tunnel.services.name",
                format!(
                    "{:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    self.name
                ),
            ));
        }
        if self
            .bind
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid(
                "tunnel.services.bind",
                format!("{:?} is not host:port", self.bind),
            ));
        }
        self.validate_transport()?;
        match (&self.token, &self.token_file) {
            (Some(token), None) if token.expose().is_empty() => {
                return Err(invalid("tunnel.services.token", "must not be empty"))
            }
            (Some(_), None) => {}
            (None, Some(_)) => {
                self.load_token()?;
            }
            _ => {
                return Err(invalid(
                    "tunnel.services.token",
                    "exactly one of token and token_file is required",
                ))
            }
        }
        Ok(())
    }
}

impl TunnelService {
    /// Checks `type` and the UDP keys (set only with `type = "udp"`, at least 1).
    fn validate_transport(&self) -> Result<(), ConfigError> {
        let udp = match self.kind.as_deref() {
            None | Some("tcp") => false,
            Some("udp") => true,
            Some(other) => {
                return Err(invalid(
                    "tunnel.services.type",
                    format!("{other:?} is neither \"tcp\" nor \"udp\""),
                ))
            }
        };
        let keys = [
            (
                "tunnel.services.udp_idle_timeout_ms",
                self.udp_idle_timeout_ms,
            ),
            (
                "tunnel.services.udp_max_sessions",
                self.udp_max_sessions.map(|n| n as u64),
            ),
            (
                "tunnel.services.udp_queue",
                self.udp_queue.map(|n| n as u64),
            ),
        ];
        for (key, value) in keys {
            match value {
                Some(_) if !udp => {
                    return Err(invalid(
                        key,
                        format!(
                        "applies to UDP services only (service {:?} is TCP: set type = \"udp\")",
                        self.name
                    ),
                    ))
                }
                Some(0) => return Err(invalid(key, "must be at least 1")),
                _ => {}
            }
        }
        Ok(())
    }
}
