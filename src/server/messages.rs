//! Actor messages between sessions and the registry.
//!
//! Sessions talk to the one [`Registry`](super::registry::Registry) with
//! [`Connect`], [`Register`], [`Forward`] and [`Disconnect`]; the registry
//! talks back through each session's `Recipient<ToSession>`. What `/clients`
//! and `/health` show is asked with [`ListClients`] and [`Counts`] (through
//! `server::clients` and `server::counts`), and a stop sends [`CloseAll`].
//! With the cluster on, the engine asks for [`LocalRegistrations`] and
//! hands over what other nodes send as [`ClusterDelivery`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use bytestring::ByteString;
use serde::Serialize;
use uuid::Uuid;

use crate::cluster::{Delivery, Holder};
use crate::protocol::relay::DescriptionLiteral;
use crate::protocol::PeerConnection;

/// Identifies one WebSocket session for the lifetime of the process.
pub type SessionId = u64;

/// An authenticated user; `None` is the anonymous user of `auth.method = "none"`
/// (all anonymous users are the same user, as in ProxyStore).
pub type User = Option<Arc<str>>;

/// What the registry asks a session to do.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToSession {
    /// Send this text frame to the client.
    Deliver(ByteString),
    /// Close the socket with this code and reason.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

/// A session opened; the registry tracks it until [`Disconnect`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The new session.
    pub session: SessionId,
    /// Where to reach it.
    pub recipient: Recipient<ToSession>,
    /// The client's address.
    pub remote: Option<SocketAddr>,
}

/// A session closed (any path): forget it and every UUID it registered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The closed session.
    pub session: SessionId,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// The UUID belongs to another user's live registration.
    #[error("The client UUID {0} is already registered to another user.")]
    OwnedByAnotherUser(Uuid),
    /// The session is no longer known (it is closing).
    #[error("The session is closing.")]
    SessionGone,
}

/// Register `uuid` for `session`; a same-user registration elsewhere is replaced (4004).
#[derive(Message)]
#[rtype(result = "Result<(), RegisterError>")]
pub struct Register {
    /// The registering session.
    pub session: SessionId,
    /// The UUID asked for.
    pub uuid: Uuid,
    /// The peer's name.
    pub name: String,
    /// The authenticated user.
    pub user: User,
}

/// Forward a peer connection request from `session` to `request.peer_uuid`.
///
/// The session has already checked that `request.source_uuid` is one of its
/// registrations; the registry checks the target and echoes errors back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forward {
    /// The sending session.
    pub session: SessionId,
    /// The decoded request (its description kept as the JSON literal).
    pub request: PeerConnection<DescriptionLiteral>,
    /// The request encoded in ProxyStore's form, ready to deliver.
    pub text: ByteString,
}

/// Close every session (shutdown); returns how many were asked to close.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

/// One registered client, as `/clients` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Registered UUID.
    pub uuid: Uuid,
    /// Registered name.
    pub name: String,
    /// Authenticated user (`null` when auth is `none`).
    pub user: Option<String>,
    /// The client's address.
    pub remote_address: Option<String>,
    /// When the socket connected (RFC 3339, UTC).
    pub connected_since: String,
    /// Peer connection messages forwarded from this client.
    pub messages_forwarded: u64,
}

/// List registered clients for `/clients`.
#[derive(Message)]
#[rtype(result = "Vec<ClientInfo>")]
pub struct ListClients;

/// Connected and registered counts.
#[derive(Debug, Clone, Copy, Serialize, MessageResponse)]
pub struct CountsReply {
    /// Open WebSocket sessions.
    pub connected: usize,
    /// Registered UUIDs.
    pub registered: usize,
}

/// Ask for [`CountsReply`].
#[derive(Message)]
#[rtype(result = "CountsReply")]
pub struct Counts;

/// This node's registrations, as the cluster engine re-asserts them.
#[derive(Message)]
#[rtype(result = "Vec<(Uuid, Holder)>")]
pub struct LocalRegistrations;

/// What another node sent (a forward to deliver, a takeover to close), in
/// the order the engine received it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClusterDelivery(pub Delivery);

/// Formats a time as RFC 3339 UTC with second precision.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
