//! The TCP tunnel: host agents behind NAT serve plain TCP clients (and, for
//! a service of `type = "udp"`, UDP clients) through the relay.
//!
//! Two sides, each in its own folder, and what both use beside them:
//!
//! - [`relay`]: the relay side. [`relay::start`] takes the `[tunnel]`
//!   settings, the process's metrics and the bound listeners (the agents'
//!   and one public listener per service), runs them on a runtime of its own
//!   and returns a [`TunnelRelay`] handle (addresses, `/tunnels` state,
//!   shutdown). Agent handshakes and control channels, the per-service pool
//!   of idle pooled connections, the task that carries one client over a
//!   pooled connection, and UDP services' sockets and sessions live there.
//! - [`agent`]: the host agent (`switchboard host`): a control channel and N
//!   pooled data connections refilled as soon as one is taken, reconnecting
//!   with backoff, each serving a client by dialling the local service;
//!   [`agent::host_config`] is its settings file.
//!
//! Shared by both sides (none of them imports a side):
//!
//! - [`framing`]: reading and writing [`crate::protocol::tunnel`] frames on sockets.
//! - [`pump`]: moves bytes both ways between two sockets, honouring half-close.
//! - `splice` (Linux): zero-copy forwarding through a kernel pipe, used by the pump.
//! - [`tls`]: optional TLS on agent connections (rustls, ring).
//! - [`net`]: the tunnel's runtime, agent-socket keepalive, passing a FIN on.
//! - [`error`]: [`TunnelError`] (one connection failed) and [`TlsMismatch`].
//!
//! The wire format and the handshake MAC live in [`crate::protocol::tunnel`],
//! the PROXY header an agent may send in [`crate::protocol::proxy_v2`].

pub mod agent;
pub mod error;
pub mod framing;
pub mod net;
pub mod pump;
pub mod relay;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tls;

pub use agent::{AgentError, AgentHandle, AgentSettings, LocalService};
pub use error::{TlsMismatch, TunnelError};
pub use net::{runtime, tune_agent_socket};
pub use relay::{TunnelListeners, TunnelRelay, TunnelState};
