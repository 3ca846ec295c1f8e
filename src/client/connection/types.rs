//! The errors, events and messages of a [`Connection`](super::Connection).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::protocol::chunk::Payload;
use crate::protocol::DescriptionType;

/// Why a connection could not be made, or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The settings cannot work (e.g. 0 channels).
    #[error("invalid connection settings: {0}")]
    Config(String),
    /// The WebRTC stack failed (ICE, DTLS, SCTP).
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// The peer's session description is not `{"sdp","type"}` JSON with valid SDP.
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    /// The peer opened a channel whose label is not `p2p-{i}-{N}`.
    #[error("data channel label {0:?} is not p2p-<i>-<n> with i < n <= the channel limit")]
    BadLabel(String),
    /// Not every channel opened within the connect timeout.
    #[error("connection not ready within {0:?}")]
    Timeout(Duration),
    /// The connection closed (by either side) before or while this was asked.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The relay answered the offer with an error (e.g. unknown peer).
    #[error("relay error: {0}")]
    Relay(String),
    /// A message could not be cut into chunks.
    #[error("chunking: {0}")]
    Chunk(String),
    /// The peer's SCTP stack did not acknowledge every chunk handed to the
    /// data channels: a [`Flush`] or [`Close`] gave up (the peer acknowledged
    /// nothing new for the stall limit, or the channels went away), or the
    /// connection ended with data unacknowledged.
    ///
    /// `acked` and `total` count the payload bytes of the chunks this
    /// connection handed over during its life (chunk headers excluded; text
    /// as UTF-8 bytes), so a connection that carried one message reports that
    /// message's length as `total`. `acked` counts whole chunks.
    #[error("the peer acknowledged {acked} of {total} bytes sent ({reason})")]
    Unacknowledged {
        /// Payload bytes the peer acknowledged.
        acked: u64,
        /// Payload bytes handed to the data channels.
        total: u64,
        /// Why the wait ended (stall, channel gone, or the connection's own error).
        reason: String,
    },
}

/// Which side of the handshake this connection is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Creates the channels and sends the offer.
    Offerer,
    /// Answers this offer (the relay's `description` text).
    Answerer {
        /// The offer as received: `{"sdp": ..., "type": "offer"}`.
        offer: String,
    },
}

/// What a connection reports to its owner.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectionEvent {
    /// The remote peer.
    pub peer: Uuid,
    /// The owner's id for this connection, to tell a replaced one from its successor.
    pub id: u64,
    /// What happened.
    pub kind: ConnectionEventKind,
}

/// The events of a [`ConnectionEvent`].
#[derive(Debug)]
pub enum ConnectionEventKind {
    /// Our offer or answer, complete with candidates, to forward through the relay.
    LocalDescription {
        /// Offer (offerer) or answer (answerer).
        description_type: DescriptionType,
        /// `{"sdp": ..., "type": ...}` JSON, as ProxyStore sends it.
        description: String,
    },
    /// Every channel is open; the candidate pair ICE selected, when the
    /// stack reported it.
    Ready(Option<super::Route>),
    /// A whole message from the peer.
    Message(Payload),
    /// The connection ended; `None` when closed on request. Always the last event.
    Closed(Option<ConnectionError>),
}

/// Hands the peer's answer to an offering connection.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConnectionError>")]
pub struct SetAnswer(pub String);

/// Sends one message; resolves once every chunk is handed to the channels'
/// SCTP stack, not when the peer acknowledged them: [`Flush`] or [`Close`]
/// waits for that. (Waiting for the acknowledgement of each message before
/// sending the next would idle the link for a round trip, and up to SCTP's
/// 200 ms delayed acknowledgement, per message.) A hand-over that waits for
/// send-buffer room while the peer acknowledges nothing for
/// [`defaults::PEER_FLUSH_STALL_MS`](crate::defaults::PEER_FLUSH_STALL_MS)
/// fails with [`ConnectionError::Unacknowledged`] and ends the connection.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConnectionError>")]
pub struct SendMessage(pub Payload);

/// Resolves when the connection is ready, or with why it cannot become so.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConnectionError>")]
pub struct WaitReady(pub Duration);

/// Resolves once the peer's SCTP stack has acknowledged every chunk of every
/// message handed to the channels before it (messages already queued by
/// [`SendMessage`] included). Fails with [`ConnectionError::Unacknowledged`]
/// when the peer acknowledges nothing new for the given stall limit, or the
/// connection ends first. Without a ready connection there is nothing to wait for.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConnectionError>")]
pub struct Flush(pub Duration);

/// Stops taking messages, flushes (as [`Flush`] with
/// [`defaults::PEER_FLUSH_STALL_MS`](crate::defaults::PEER_FLUSH_STALL_MS)),
/// then closes. A connection that received a message within the last
/// [`defaults::PEER_CLOSE_ACK_LINGER_MS`](crate::defaults::PEER_CLOSE_ACK_LINGER_MS)
/// first waits out the rest of it, so that the peer gets the acknowledgement
/// of what it sent last. Resolves with the flush's result; the `Closed` event
/// that follows carries the same error (`Closed(None)` when everything was
/// acknowledged).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ConnectionError>")]
pub struct Close;

/// A relay error echo for our offer: the connection fails with it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RelayFailed(pub String);

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ChannelOpen {
    pub index: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ChannelClosed {
    pub index: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct MessageIn(pub Payload);

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct IncomingChannel {
    pub channel: Arc<dyn DataChannel>,
    pub label: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StateChanged(pub RTCPeerConnectionState);

/// The sender could not hand a message over (the peer stopped acknowledging,
/// or a channel refused a chunk): the connection ends with this error.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct SendFailed(pub ConnectionError);
