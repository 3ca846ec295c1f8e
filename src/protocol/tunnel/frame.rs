//! The tunnel protocol's vocabulary: its constants, the [`Frame`]s with
//! their fields, and the errors of decoding them. The codec that turns them
//! into bytes and back is in the parent module.

use std::net::SocketAddr;

/// First bytes of every `Hello` payload: tells a tunnel agent from garbage.
pub const MAGIC: [u8; 4] = *b"SBTN";
/// Protocol version carried in `Hello` (3: `Hello` names the service's
/// transport, `StartUdp`, `WrongTransport`; 2 and 3 refuse each other).
pub const VERSION: u8 = 3;
/// Largest frame (kind byte plus payload) either side accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 1024;
/// Size of the length prefix, in bytes.
pub const LEN_BYTES: usize = 2;
/// Size of the relay's challenge nonce, in bytes.
pub const NONCE_BYTES: usize = 32;
/// Size of an HMAC-SHA256 proof, in bytes.
pub const MAC_BYTES: usize = 32;
/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;
/// Largest UDP datagram a UDP session carries, in bytes (the most an IPv4
/// UDP packet holds; larger ones are dropped and counted).
pub const MAX_DATAGRAM: usize = 65_507;
/// Size of a datagram record's length prefix on a started UDP session, in bytes.
pub const DATAGRAM_LEN_BYTES: usize = 2;
/// Longest reason text in an `Error` frame, in bytes (longer ones are cut).
pub const MAX_REASON_BYTES: usize = 512;

/// What a connection from an agent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one control channel of an agent.
    Control,
    /// A pooled data connection waiting for a client.
    Data,
}

/// The transport of a tunnelled service: what a pooled connection carries
/// once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP service: raw bytes after `Started`.
    Tcp,
    /// A UDP service: length-framed datagrams after `Started`.
    Udp,
}

impl Transport {
    /// `"tcp"` or `"udp"`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Why the relay refused or ended an agent connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The proof did not match the service's token.
    AuthFailed,
    /// No service of that name is configured.
    UnknownService,
    /// The frame sequence or content was wrong.
    Protocol,
    /// A data connection named a session that is not connected.
    UnknownSession,
    /// The relay is shutting down.
    ShuttingDown,
    /// A limit was reached (too many agents or pooled connections).
    Busy,
    /// Agent → relay on a data connection: the local service refused the client.
    LocalUnavailable,
    /// The agent serves a TCP service and the relay's is UDP, or the reverse.
    WrongTransport,
}

impl ErrorCode {
    /// The code's byte on the wire.
    pub(super) fn to_byte(self) -> u8 {
        match self {
            ErrorCode::AuthFailed => 1,
            ErrorCode::UnknownService => 2,
            ErrorCode::Protocol => 3,
            ErrorCode::UnknownSession => 4,
            ErrorCode::ShuttingDown => 5,
            ErrorCode::Busy => 6,
            ErrorCode::LocalUnavailable => 7,
            ErrorCode::WrongTransport => 8,
        }
    }

    /// The code a wire byte names.
    pub(super) fn from_byte(byte: u8) -> Result<Self, FrameError> {
        Ok(match byte {
            1 => ErrorCode::AuthFailed,
            2 => ErrorCode::UnknownService,
            3 => ErrorCode::Protocol,
            4 => ErrorCode::UnknownSession,
            5 => ErrorCode::ShuttingDown,
            6 => ErrorCode::Busy,
            7 => ErrorCode::LocalUnavailable,
            8 => ErrorCode::WrongTransport,
            other => return Err(FrameError::BadValue("error code", other)),
        })
    }

    /// Whether an agent should stop retrying after this error. An unknown
    /// service is not fatal: the relay's services can be reloaded and the
    /// service added back, so the agent retries with its backoff.
    pub fn is_fatal(self) -> bool {
        matches!(self, ErrorCode::AuthFailed | ErrorCode::WrongTransport)
    }
}

/// One tunnel frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Agent → relay: the first frame of every connection.
    Hello {
        /// Control or data.
        role: Role,
        /// The service the agent serves.
        service: String,
        /// For data connections, the session id the control channel was given; 0 for control.
        session: u64,
        /// The transport of the service the agent serves locally.
        transport: Transport,
    },
    /// Relay → agent: prove you hold the token.
    Challenge {
        /// Fresh random bytes.
        nonce: [u8; NONCE_BYTES],
    },
    /// Agent → relay: HMAC-SHA256 over the handshake context and the nonce.
    Proof {
        /// The MAC.
        mac: [u8; MAC_BYTES],
    },
    /// Relay → agent: the handshake succeeded.
    Accepted {
        /// The control session id (echoed on data connections).
        session: u64,
    },
    /// Either way: the connection is refused or ends, with a reason.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable reason.
        reason: String,
    },
    /// Either way: heartbeat request.
    Ping {
        /// Echoed by `Pong`.
        seq: u64,
    },
    /// Either way: heartbeat answer.
    Pong {
        /// The `Ping`'s sequence number.
        seq: u64,
    },
    /// Relay → agent, control: a client was assigned to a pooled connection.
    ConnectionOpen {
        /// The relay's id for this client connection.
        conn: u64,
        /// The client's address.
        client: SocketAddr,
    },
    /// Relay → agent, control: a client connection ended.
    ConnectionDrop {
        /// The relay's id for the client connection.
        conn: u64,
    },
    /// Relay → agent, data: this pooled connection now carries a client.
    Start {
        /// The relay's id for this client connection.
        conn: u64,
        /// The client's address.
        client: SocketAddr,
        /// The address the client connected to (the service's public port),
        /// the destination of a PROXY v2 header.
        server: SocketAddr,
    },
    /// Relay → agent, data: this pooled connection now carries a UDP
    /// session (a client address of a UDP service); length-framed
    /// datagrams follow `Started` both ways. A TCP agent refuses it.
    StartUdp {
        /// The relay's id for this UDP session.
        conn: u64,
        /// The client's address.
        client: SocketAddr,
        /// The service's public address the client sent to.
        server: SocketAddr,
    },
    /// Agent → relay, data: the local service is connected; raw bytes follow.
    Started {
        /// The id from `Start`.
        conn: u64,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    Oversized(usize),
    /// The length prefix is zero.
    #[error("empty frame")]
    Empty,
    /// The payload ends before its fields do.
    #[error("frame truncated")]
    Truncated,
    /// Bytes are left over after the last field.
    #[error("{0} trailing bytes after the frame's fields")]
    Trailing(usize),
    /// The kind byte names no frame.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A `Hello` does not start with [`MAGIC`]: not a tunnel agent.
    #[error("not a switchboard tunnel hello (bad magic)")]
    BadMagic,
    /// A `Hello` carries a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A field holds a value outside its range.
    #[error("bad {0}: {1}")]
    BadValue(&'static str, u8),
    /// A service name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid service name")]
    BadServiceName,
    /// A text field is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// A TLS record header where a frame's length should be: the other side speaks TLS.
    #[error("a TLS record (content type {0}) where a tunnel frame was expected")]
    TlsRecord(u8),
}
