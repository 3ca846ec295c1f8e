//! What an agent is given and what it reports: [`AgentSettings`] (where
//! the relay is, which service, what to serve locally, pool size, timers)
//! and [`AgentStats`], its live counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use crate::config::Secret;
use crate::defaults;
use crate::protocol::tunnel::Transport;
use crate::proxy::Proxy;
use crate::tunnel::tls::AgentTls;

/// What the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalService {
    /// A TCP service at `host:port`, dialled once per client.
    Addr(String),
    /// The built-in echo service: every byte is sent back.
    Echo,
    /// A UDP service at `host:port`: each UDP session of the relay's UDP
    /// service gets a socket connected to it.
    Udp(String),
}

impl LocalService {
    /// The transport this agent serves (announced in its `Hello`).
    pub fn transport(&self) -> Transport {
        match self {
            LocalService::Udp(_) => Transport::Udp,
            LocalService::Addr(_) | LocalService::Echo => Transport::Tcp,
        }
    }
}

/// Everything the agent needs; [`AgentSettings::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The relay's agents listener, `host:port`.
    pub relay: String,
    /// The service name to serve.
    pub service: String,
    /// The service's token.
    pub token: Secret,
    /// What to serve.
    pub local: LocalService,
    /// Pooled data connections kept open.
    pub pool: usize,
    /// Interval between the agent's heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence from the relay after which a connection is dropped.
    pub heartbeat_timeout: Duration,
    /// Time the relay gets to complete a handshake.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// A session lasting this long resets the backoff.
    pub backoff_reset: Duration,
    /// Time the local service gets to accept a connection.
    pub local_connect_timeout: Duration,
    /// Largest copy buffer (or splice pipe) per direction, in bytes.
    pub copy_buffer: usize,
    /// Forward with zero-copy `splice(2)` on Linux.
    pub splice: bool,
    /// Send a PROXY protocol v2 header (the client's address) to the local service first.
    pub proxy_protocol: bool,
    /// Connect to the relay over TLS.
    pub tls: Option<AgentTls>,
    /// How the relay is reached: directly ([`Proxy::direct`], the default
    /// here) or through an HTTP proxy; `switchboard host` resolves
    /// `--http-proxy` / `http_proxy`, else `HTTPS_PROXY` and `NO_PROXY`.
    pub proxy: Proxy,
}

impl AgentSettings {
    /// Settings with every default from [`crate::defaults`].
    pub fn new(
        relay: impl Into<String>,
        service: impl Into<String>,
        token: Secret,
        local: LocalService,
    ) -> Self {
        let ms = Duration::from_millis;
        AgentSettings {
            relay: relay.into(),
            service: service.into(),
            token,
            local,
            pool: defaults::AGENT_POOL,
            heartbeat_interval: ms(defaults::TUNNEL_HEARTBEAT_INTERVAL_MS),
            heartbeat_timeout: ms(defaults::TUNNEL_HEARTBEAT_TIMEOUT_MS),
            handshake_timeout: ms(defaults::TUNNEL_HANDSHAKE_TIMEOUT_MS),
            backoff_min: ms(defaults::AGENT_BACKOFF_MIN_MS),
            backoff_max: ms(defaults::AGENT_BACKOFF_MAX_MS),
            backoff_reset: ms(defaults::AGENT_BACKOFF_RESET_MS),
            local_connect_timeout: ms(defaults::AGENT_LOCAL_CONNECT_TIMEOUT_MS),
            copy_buffer: defaults::TUNNEL_COPY_BUFFER,
            splice: defaults::TUNNEL_SPLICE,
            proxy_protocol: false,
            tls: None,
            proxy: Proxy::direct(),
        }
    }
}

/// Live counters of an agent (for tests, logs and the agent's `/metrics`).
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Whether the control channel is up now.
    pub connected: AtomicBool,
    /// Control sessions established, ever.
    pub sessions: AtomicU64,
    /// Idle pooled data connections now.
    pub idle: AtomicUsize,
    /// Clients connected through to the local service, ever.
    pub served: AtomicU64,
    /// Clients whose local connection failed, ever.
    pub local_failures: AtomicU64,
    /// Datagrams from the relay sent to the local UDP service, ever.
    pub datagrams_to_local: AtomicU64,
    /// Datagrams from the local UDP service carried to the relay, ever.
    pub datagrams_from_local: AtomicU64,
}
