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
    #[error("timed out {0}")]
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
}
