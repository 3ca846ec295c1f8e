//! The TCP tunnel: host agents behind NAT serve plain TCP clients through the relay.
//!
//! - [`relay`]: the relay side: [`relay::start`] runs the agents' listener and
//!   one public listener per service on its own runtime and returns a handle;
//!   `relay_agents` (handshakes, control channels) and `relay_carry` (a
//!   pooled connection's task: idle, then carrying one client) do the work.
//! - [`pool`]: a service's queue of idle pooled data connections and of
//!   clients waiting for one (oldest first on both sides).
//! - [`agent`]: the host agent (`switchboard host`): a control channel, N
//!   pooled data connections refilled as soon as one is taken (`agent_pool`),
//!   reconnect with backoff; [`host_config`] is its settings file.
//! - [`pump`]: moves bytes both ways between two sockets, honouring half-close.
//! - `splice` (Linux): zero-copy forwarding through a kernel pipe, used by the pump.
//! - [`tls`]: optional TLS on agent connections (rustls, ring).
//! - [`framing`]: reading and writing [`crate::protocol::tunnel`] frames on sockets.
//!
//! The wire format and the handshake MAC live in [`crate::protocol::tunnel`].

pub mod agent;
mod agent_pool;
pub mod framing;
pub mod host_config;
pub mod pool;
pub mod pump;
pub mod relay;
mod relay_agents;
mod relay_carry;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tls;

pub use agent::{AgentError, AgentHandle, AgentSettings, LocalService};
pub use relay::{TunnelListeners, TunnelRelay, TunnelState};

use crate::protocol::tunnel::{ErrorCode, FrameError};

/// A runtime for the tunnel: `workers` 1 is single-threaded (fewest
/// thread hand-offs per connection), 0 is one worker per core.
pub fn runtime(workers: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    match workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                builder.worker_threads(n);
            }
            builder.enable_all().thread_name(name).build()
        }
    }
}

/// Sets TCP keepalive and (on Linux) `TCP_USER_TIMEOUT` on an agent
/// connection, relay and agent side alike, so a host that vanishes (power
/// loss, a dropped NAT mapping) is noticed even while nothing is sent, or
/// while sent bytes go unacknowledged (`defaults::TUNNEL_TCP_*`).
pub fn tune_agent_socket(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    use crate::defaults;
    use std::time::Duration;
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_millis(
            defaults::TUNNEL_TCP_KEEPALIVE_IDLE_MS,
        ))
        .with_interval(Duration::from_millis(
            defaults::TUNNEL_TCP_KEEPALIVE_INTERVAL_MS,
        ))
        .with_retries(defaults::TUNNEL_TCP_KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(Duration::from_millis(
        defaults::TUNNEL_TCP_USER_TIMEOUT_MS,
    )))?;
    Ok(())
}

/// Why a tunnel connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The peer sent a valid frame that does not belong here.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    /// The other side refused us with an error frame.
    #[error("refused ({code:?}): {reason}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The reason given.
        reason: String,
    },
    /// One side speaks TLS and the other does not.
    #[error("{0}")]
    Tls(#[from] TlsMismatch),
    /// The relay's certificate failed the agent's verification (untrusted
    /// issuer, wrong name, expired, …): the agent's `--tls-ca-file` or
    /// `--tls-server-name`, or the relay's certificate, must change.
    #[error(
        "the relay's certificate is not trusted ({0}): check --tls-ca-file and \
         --tls-server-name, or the relay's tunnel.certfile"
    )]
    UntrustedRelay(String),
}

/// A TLS setting that differs between the relay (`tunnel.certfile`) and an
/// agent (`--tls`), as each side recognises it; the message says what to
/// change. An agent that meets one stops (it cannot work by retrying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsMismatch {
    /// A plain agent got a TLS record (the relay's alert) instead of a frame.
    #[error("the relay requires TLS: start the agent with --tls")]
    RelayRequiresTls,
    /// A TLS agent got an answer that is not TLS (the relay's plain frame).
    #[error(
        "this agent speaks TLS but the relay's tunnel has no certificate: start the agent \
         without --tls, or give the relay tunnel.certfile and tunnel.keyfile"
    )]
    RelayWithoutTls,
    /// A TLS relay got a plain `Hello`.
    #[error(
        "the agent connected without TLS but this relay's tunnel requires TLS: start the \
         agent with --tls"
    )]
    AgentWithoutTls,
    /// A plain relay got a TLS ClientHello instead of a frame.
    #[error(
        "the agent speaks TLS but the relay's tunnel has no certificate: set tunnel.certfile \
         and tunnel.keyfile, or start the agent without --tls"
    )]
    AgentSpeaksTls,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::defaults;

    #[tokio::test]
    async fn agent_sockets_get_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        super::tune_agent_socket(&stream).unwrap();
        let socket = socket2::SockRef::from(&stream);
        let ms = Duration::from_millis;
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            ms(defaults::TUNNEL_TCP_KEEPALIVE_IDLE_MS)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            ms(defaults::TUNNEL_TCP_KEEPALIVE_INTERVAL_MS)
        );
        assert_eq!(
            socket.tcp_keepalive_retries().unwrap(),
            defaults::TUNNEL_TCP_KEEPALIVE_PROBES
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(ms(defaults::TUNNEL_TCP_USER_TIMEOUT_MS))
        );
    }
}
