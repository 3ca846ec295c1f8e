//! WebSocket close codes and reasons used by the relay (ProxyStore's set).

/// Undecodable, binary, non-object or unexpected frame.
pub const UNKNOWN_MESSAGE: u16 = 4000;
/// Authentication missing or malformed.
pub const UNAUTHORIZED: u16 = 4001;
/// Authenticated but not allowed: bad token, another user's UUID, forwarding before registering.
pub const FORBIDDEN: u16 = 4002;
/// Frame larger than `max_message_bytes`.
pub const TOO_LARGE: u16 = 4003;
/// Replaced by a newer registration of the same UUID by the same user.
pub const REPLACED: u16 = 4004;
/// The server is shutting down (standard "going away").
pub const GOING_AWAY: u16 = 1001;
/// The session could not keep up with its outbound traffic (standard "policy violation").
pub const SLOW_CONSUMER: u16 = 1008;
/// The session stopped answering pings (standard "going away").
pub const HEARTBEAT_TIMEOUT: u16 = 1001;
/// A server-side dependency (the token introspection endpoint) failed; try again later.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Reason sent with [`UNKNOWN_MESSAGE`] (ProxyStore's text).
pub const REASON_UNKNOWN_MESSAGE: &str = "Unknown message type.";
/// Reason sent with [`TOO_LARGE`] (ProxyStore's text).
pub const REASON_TOO_LARGE: &str = "Message length exceeds limit.";
/// Reason sent with [`REPLACED`] (ProxyStore's text).
pub const REASON_REPLACED: &str = "Relay received a registration with the same ID. \
     This might mean that the endpoint is running in multiple locations.";
/// Reason sent with [`FORBIDDEN`] when forwarding before registering (ProxyStore's text).
pub const REASON_NOT_REGISTERED: &str =
    "ForbiddenError: Client has not registered and authenticated with the relay server.";
/// Reason sent with [`GOING_AWAY`] on shutdown.
pub const REASON_SHUTDOWN: &str = "Relay server is shutting down.";
/// Reason sent with [`SLOW_CONSUMER`].
pub const REASON_SLOW_CONSUMER: &str = "Client is not reading its messages fast enough.";
/// Reason sent with [`HEARTBEAT_TIMEOUT`].
pub const REASON_HEARTBEAT: &str = "Heartbeat timeout.";
