//! The tunnel's connection errors, shared by both sides: what went wrong
//! on one agent connection ([`TunnelError`]) and which TLS setting differs
//! between a relay and an agent ([`TlsMismatch`]).

use crate::protocol::tunnel::{ErrorCode, FrameError};

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
    /// Reaching the relay directly or through the HTTP proxy failed (the
    /// proxy's refusal names its status).
    #[error("{0}")]
    Proxy(#[from] crate::proxy::ProxyError),
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
