//! [`PeerManager`]: the one actor an application adds to talk to peers.
//!
//! It owns a [`RelayClient`](crate::client::relay_client::RelayClient) and one
//! [`Connection`](crate::client::connection::Connection) per remote peer.
//! [`Send`] opens a connection on demand and waits until it is ready;
//! [`Flush`] waits until the peer acknowledged what was sent;
//! incoming offers create connections; every message received is delivered,
//! tagged with its sender, to the subscribers ([`Subscribe`]) or, when there
//! are none, to a bounded inbox read with [`Recv`].
//!
//! Supervision: the relay client reconnects by itself after transient losses
//! and re-registers under the same UUID; existing connections never depend on
//! the relay. A final verdict of the relay, at the first registration or at
//! any later one (close 4001 unauthorized, 4002 forbidden, 4004 our UUID taken
//! over by a newer registration, HTTP 401/403, a refused registration; see
//! [`RelayClientError::is_final`]), ends the manager's usefulness: subscribers
//! get [`PeerEvent::RelayFailed`], every connection ends (a ready one after
//! flushing what was sent; the UUID may now belong to another process), and
//! every pending or later [`Send`], [`Connect`] and [`Recv`] returns
//! [`PeerError::Relay`] with the close code and reason at once (`Recv` first
//! returns what had already arrived). If the relay client stops for another
//! reason, the manager starts a new one after a delay. Glare (both sides offer
//! at once) is resolved by UUID: the lower UUID stays offerer, the higher one
//! drops its own offer and answers. An offer from a peer we already have a
//! connection with replaces that connection.
//!
//! Delivery: [`Send`] resolves when the message is handed to the connection's
//! SCTP stack, so that an application awaiting each send keeps the link busy.
//! Whether the peer's SCTP stack acknowledged it is what [`Flush`], [`Close`]
//! and [`CloseConnection`] report, as
//! [`ConnectionError::Unacknowledged`] with the bytes acknowledged and sent,
//! never as success. A connection that ends with unacknowledged data (it
//! failed, the relay's verdict closed it, or it was replaced and its flush
//! gave up) makes the next `Flush`/`Close` of that peer fail with it, once;
//! unless it was replaced, its [`PeerEvent::Disconnected`] carries it too.
//!
//! # Examples
//!
//! Start a manager inside the application's actix System, send, and receive
//! (a complete program is `examples/two_peers.rs`; `examples/peer_http.rs`
//! shares the manager's `Addr` with actix-web handlers):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use actix::Actor;
//! use switchboard::client::peer_manager::{
//!     Flush, PeerManager, PeerManagerConfig, Recv, Send, Status,
//! };
//!
//! # async fn example(peer: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PeerManager::new(PeerManagerConfig::new("ws://relay.example:8700"))?.start();
//! // A send fails until the relay has accepted our registration.
//! for _ in 0..100 {
//!     if manager.send(Status).await?.registered {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//! }
//! manager.send(Send::text(peer, "hello")).await??;
//! manager.send(Flush(peer)).await??; // the peer has acknowledged "hello"
//! let message = manager.send(Recv::default()).await??;
//! println!("{} sent {} bytes", message.peer, message.payload.len());
//! # Ok(())
//! # }
//! ```

mod actor;
mod handlers;

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use uuid::Uuid;

use crate::client::connection::{ConnectionConfig, ConnectionError};
use crate::client::relay_client::{RelayClientConfig, RelayClientError};
use crate::defaults;
use crate::protocol::chunk::Payload;
pub use actor::PeerManager;

/// Everything a [`PeerManager`] needs.
#[derive(Debug, Clone)]
pub struct PeerManagerConfig {
    /// The relay session (URL, name, UUID, headers, TLS, backoff).
    pub relay: RelayClientConfig,
    /// How connections are made (channels, ICE servers, addresses, limits).
    pub connection: ConnectionConfig,
    /// Received messages kept for [`Recv`] when nobody subscribed; the oldest is
    /// dropped (and logged) beyond this.
    pub recv_queue: usize,
}

impl PeerManagerConfig {
    /// Defaults for everything but the relay URL.
    pub fn new(relay_url: impl Into<String>) -> Self {
        PeerManagerConfig {
            relay: RelayClientConfig::new(relay_url),
            connection: ConnectionConfig::default(),
            recv_queue: defaults::PEER_RECV_QUEUE,
        }
    }
}

/// Why a [`PeerManager`] request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The settings cannot work.
    #[error("invalid peer manager settings: {0}")]
    Config(String),
    /// The relay session failed for good (a final verdict such as
    /// `Rejected { code: 4004, .. }`, or a bad URL); returned at once by
    /// every pending and later request.
    #[error("relay: {0}")]
    Relay(RelayClientError),
    /// The connection to this peer failed or closed.
    #[error("connection to {peer}: {error}")]
    Connection {
        /// The remote peer.
        peer: Uuid,
        /// What went wrong.
        error: ConnectionError,
    },
    /// Sending to ourselves is not possible.
    #[error("cannot send to our own UUID {0}")]
    SelfSend(Uuid),
    /// No message arrived within the timeout given to [`Recv`].
    #[error("no message within {0:?}")]
    RecvTimeout(Duration),
    /// The manager is closed.
    #[error("peer manager is closed")]
    Closed,
    /// [`Close`] found peers that did not acknowledge everything sent to
    /// them: one [`PeerError::Connection`] per peer (usually with
    /// [`ConnectionError::Unacknowledged`]), ordered by UUID.
    #[error("not every peer acknowledged what was sent: {}", list(.0))]
    Undelivered(Vec<PeerError>),
}

fn list(errors: &[PeerError]) -> String {
    let items: Vec<String> = errors.iter().map(ToString::to_string).collect();
    items.join("; ")
}

/// A message from a peer.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct PeerMessage {
    /// The sender.
    pub peer: Uuid,
    /// What it sent.
    pub payload: Payload,
}

/// Connection life-cycle notifications, for [`SubscribeEvents`].
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum PeerEvent {
    /// The relay accepted our registration (again, after a reconnect).
    Registered {
        /// Our UUID.
        uuid: Uuid,
    },
    /// The relay session was lost; it is being re-established.
    RelayLost {
        /// Why.
        reason: String,
    },
    /// The relay gave its final verdict (e.g. `Rejected { code: 4004, reason }`
    /// when another registration took our UUID over); the manager will not
    /// reconnect, and a `Disconnected` follows for every connection.
    RelayFailed(RelayClientError),
    /// A connection to `peer` is ready.
    Connected {
        /// The remote peer.
        peer: Uuid,
        /// The candidate pair ICE selected and the set-up time, when the
        /// WebRTC stack reported the pair.
        route: Option<crate::client::connection::Route>,
    },
    /// The connection to `peer` closed; `error` is `None` when closed on request.
    Disconnected {
        /// The remote peer.
        peer: Uuid,
        /// Why, unless closed on request.
        error: Option<ConnectionError>,
    },
}

/// Sends `payload` to `peer`, connecting first if needed. Resolves once every
/// chunk is handed to the data channels' SCTP stack, which is not yet
/// delivery: [`Flush`] (or [`Close`]) reports whether the peer acknowledged it.
///
/// Resolving at the hand-over keeps sends pipelined: waiting for each
/// message's acknowledgement would cost a round trip per message, and SCTP
/// acknowledges a lone last packet only after its 200 ms delayed-ack timer
/// (`switchboard-peer-bench throughput --flush-each` measures the difference).
/// A hand-over that waits for send-buffer room while the peer acknowledges
/// nothing for [`defaults::PEER_FLUSH_STALL_MS`] fails with
/// [`ConnectionError::Unacknowledged`] (the whole message counts) and ends
/// the connection.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PeerError>")]
pub struct Send {
    /// The receiver.
    pub peer: Uuid,
    /// The message.
    pub payload: Payload,
}

impl Send {
    /// Sends bytes.
    pub fn bytes(peer: Uuid, data: impl Into<Bytes>) -> Self {
        Send {
            peer,
            payload: Payload::Bytes(data.into()),
        }
    }

    /// Sends text.
    pub fn text(peer: Uuid, text: impl Into<String>) -> Self {
        Send {
            peer,
            payload: Payload::Text(text.into()),
        }
    }
}

/// The next received message (when nobody subscribed), waiting at most the
/// given time (default: forever).
#[derive(Debug, Default, Message)]
#[rtype(result = "Result<PeerMessage, PeerError>")]
pub struct Recv(pub Option<Duration>);

/// Delivers every received message to this recipient from now on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<PeerMessage>);

/// Delivers every [`PeerEvent`] to this recipient from now on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubscribeEvents(pub Recipient<PeerEvent>);

/// Opens a connection to `peer` (if there is none) and waits until it is ready.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PeerError>")]
pub struct Connect(pub Uuid);

/// Resolves once `peer`'s SCTP stack has acknowledged every chunk of every
/// message to it whose [`Send`] resolved before. Fails with
/// [`PeerError::Connection`] carrying [`ConnectionError::Unacknowledged`]
/// (payload bytes acknowledged and sent, over the connection's life) when
/// the peer acknowledges nothing new for
/// [`defaults::PEER_FLUSH_STALL_MS`]
/// or the connection ends first, or when an earlier connection to `peer`
/// ended with unacknowledged data since the last `Flush` (reported once).
/// With no connection and no such loss there is nothing to wait for.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PeerError>")]
pub struct Flush(pub Uuid);

/// Closes the connection to one peer after flushing it (see
/// [`connection::Close`](crate::client::connection::Close)); the result is
/// [`Flush`]'s. Ok if there is no connection and no unreported loss.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PeerError>")]
pub struct CloseConnection(pub Uuid);

/// Closes every connection (each first flushes, bounded by progress) and
/// the relay session (a WebSocket close handshake, bounded), then stops the
/// manager. Fails with [`PeerError::Undelivered`] when some peer did not
/// acknowledge everything sent to it, by this close or by a connection that
/// ended earlier without a `Flush` reporting it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PeerError>")]
pub struct Close;

/// Our UUID and the peers we have connections with.
#[derive(Debug, Message)]
#[rtype(result = "ManagerStatus")]
pub struct Status;

/// The answer to [`Status`].
#[derive(Debug, Clone, MessageResponse)]
pub struct ManagerStatus {
    /// The UUID we register under.
    pub uuid: Uuid,
    /// The name we register under.
    pub name: String,
    /// The relay accepted our registration and the session is up.
    pub registered: bool,
    /// Peers with a connection (ready or not).
    pub peers: Vec<Uuid>,
    /// Relay clients started so far (1 + restarts).
    pub relay_sessions: u64,
}
