//! `RelayClient`: one relay session, kept alive.
//!
//! The actor connects when it starts (TCP, TLS for `wss://`, WebSocket
//! handshake with the configured extra headers, all within
//! [`RelayClientConfig::connect_timeout`]), registers its name and UUID, and
//! reports everything that happens to one subscriber as [`RelayEvent`]s:
//!
//! - [`RelayEvent::Registered`] after every successful (re)registration;
//! - [`RelayEvent::Peer`] for each offer, answer or relay error echo;
//! - [`RelayEvent::Disconnected`] when the session is lost or an attempt fails
//!   (it will retry after `retry_in`: at once on the next of several relay
//!   URLs, else backing off 1 s → 60 s with jitter once a whole round of
//!   URLs failed, starting over after a connection that stayed up for
//!   `stable_after`);
//! - [`RelayEvent::Failed`] when retrying cannot help: the relay closed with
//!   4001 (unauthorized), 4002 (forbidden) or 4004 (replaced by a newer
//!   registration of our UUID), refused the upgrade with HTTP 401/403, or
//!   answered the registration with `success: false`. The actor stops right after.
//!
//! Descriptions go out with [`SendPeerConnection`], which fails fast with
//! [`RelayClientError::NotConnected`] when the client is not registered right
//! now (nothing is buffered across reconnects). [`Shutdown`] closes with 1000
//! and stops; [`GetStatus`] reports the session state.
//!
//! Events reach the subscriber with `do_send`: relay traffic is a handful of
//! small signaling frames, and waiting for the subscriber's reply could
//! deadlock a subscriber that itself waits on this actor.
//!
//! # Examples
//!
//! ```no_run
//! use actix::prelude::*;
//! use switchboard::client::relay_client::{RelayClient, RelayClientConfig, RelayEvent};
//!
//! struct Printer;
//! impl Actor for Printer {
//!     type Context = Context<Self>;
//! }
//! impl Handler<RelayEvent> for Printer {
//!     type Result = ();
//!     fn handle(&mut self, event: RelayEvent, _: &mut Context<Self>) {
//!         log::info!("relay: {event:?}");
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() {
//!     let printer = Printer.start();
//!     let mut config = RelayClientConfig::new("ws://127.0.0.1:8700");
//!     config.headers.push(("Authorization".into(), "Bearer secret".into()));
//!     let client = RelayClient::new(config, printer.recipient()).unwrap();
//!     let relay = client.start();
//!     // ... relay.send(SendPeerConnection(..)).await ...
//! }
//! ```

mod actor;
mod socket;

use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

pub use super::backoff::BackoffConfig;
pub use super::tls::ClientTls;
pub use crate::protocol::PeerConnection;
pub use actor::RelayClient;

use crate::defaults::RELAY_CONNECT_TIMEOUT_MS;
pub use crate::proxy::ProxyConfig;

/// How to reach and register with a relay.
#[derive(Clone, Debug)]
pub struct RelayClientConfig {
    /// `ws://` or `wss://` URL of the relay; anything else is [`RelayClientError::InvalidUrl`].
    pub url: String,
    /// Further relays (nodes of the same cluster), checked like `url`. After a
    /// lost session or a failed attempt the client tries the next URL in
    /// turn (`url`, then these, round and round), each at once; it backs off
    /// only after a whole round failed. It registers under the same UUID
    /// wherever it lands.
    pub fallback_urls: Vec<String>,
    /// Name to register under; `None` means the host name.
    pub name: Option<String>,
    /// UUID to register under; `None` means a random v4 UUID.
    pub uuid: Option<Uuid>,
    /// Extra headers of the upgrade request, e.g. `("Authorization", "Bearer x")`.
    pub headers: Vec<(String, String)>,
    /// TLS options for `wss://`.
    pub tls: ClientTls,
    /// Time allowed for TCP connect + TLS + WebSocket handshake, and again for
    /// the registration reply.
    pub connect_timeout: Duration,
    /// Reconnect timing.
    pub backoff: BackoffConfig,
    /// How relays are reached: by default through `HTTPS_PROXY` (else
    /// `ALL_PROXY`) unless `NO_PROXY` exempts the relay's host, with
    /// `CONNECT` ([`crate::proxy`]); a bad proxy URL is
    /// [`RelayClientError::InvalidProxy`].
    pub http_proxy: ProxyConfig,
}

impl RelayClientConfig {
    /// Checks what [`RelayClient::new`] checks (URLs, headers, TLS files)
    /// without starting anything.
    pub fn validate(&self) -> Result<(), RelayClientError> {
        socket::Endpoint::all(self).map(|_| ())
    }

    /// Every relay URL in the order they are tried: `url`, then `fallback_urls`.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.fallback_urls.iter().map(String::as_str))
    }

    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RelayClientConfig {
            url: url.into(),
            fallback_urls: Vec::new(),
            name: None,
            uuid: None,
            headers: Vec::new(),
            tls: ClientTls::default(),
            connect_timeout: Duration::from_millis(RELAY_CONNECT_TIMEOUT_MS),
            backoff: BackoffConfig::default(),
            http_proxy: ProxyConfig::Env,
        }
    }
}

/// What went wrong in a relay session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayClientError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid relay URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An extra header has an invalid name or value.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP proxy URL (`http_proxy`, or `HTTPS_PROXY` / `ALL_PROXY`)
    /// cannot be used.
    #[error("{0}")]
    InvalidProxy(String),
    /// The TLS configuration could not be built, or the TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The TCP connection or WebSocket handshake failed.
    #[error("cannot connect to the relay: {0}")]
    Connect(String),
    /// Connecting or registering took longer than the connect timeout.
    #[error("timed out connecting to or registering with the relay")]
    Timeout,
    /// The relay refused us for good (close 4001, 4002, 4004, or HTTP 401/403
    /// at the upgrade, reported as 4001/4002); never retried.
    #[error("rejected by the relay ({code}): {reason}")]
    Rejected {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The relay answered the registration with `success: false`.
    #[error("registration refused by the relay: {0}")]
    Registration(String),
    /// The session broke after it was established (read or write error).
    #[error("relay connection lost: {0}")]
    Socket(String),
    /// The relay closed the session (other than a rejection).
    #[error("relay closed the session ({code}): {reason}")]
    ClosedByRelay {
        /// The close code (1005 when the relay sent none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The client is not registered right now; try again after `Registered`.
    #[error("not connected to the relay")]
    NotConnected,
    /// The outbound queue is full (the relay is not reading fast enough).
    #[error("relay client send queue is full")]
    QueueFull,
    /// The client has been shut down.
    #[error("relay client is closed")]
    Closed,
}

impl RelayClientError {
    /// Whether this is a final verdict that retrying cannot change: a
    /// rejection (close 4001 unauthorized, 4002 forbidden, 4004 replaced by a
    /// newer registration of our UUID, or HTTP 401/403 at the upgrade), a
    /// registration answered with `success: false`, or settings that cannot
    /// work (URL, headers). The relay client stops after reporting one as
    /// [`RelayEvent::Failed`]; everything else is retried with backoff.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RelayClientError::Rejected { .. }
                | RelayClientError::Registration(_)
                | RelayClientError::InvalidUrl { .. }
                | RelayClientError::InvalidHeader { .. }
                | RelayClientError::InvalidProxy(_)
        )
    }
}

/// Events sent to the subscriber given to [`RelayClient::new`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum RelayEvent {
    /// The relay accepted our registration (after every successful (re)registration).
    Registered {
        /// Our UUID.
        uuid: Uuid,
        /// Our name.
        name: String,
        /// The relay URL the registration was made on.
        relay: String,
    },
    /// An offer or answer for us, or the relay's echo of one of ours that it
    /// could not forward (`error` is `Some`).
    Peer(PeerConnection),
    /// The session was lost or an attempt failed; the client retries after `retry_in`.
    Disconnected {
        /// The relay's close code, if it sent one.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Retrying cannot help; the actor stops right after this event.
    Failed(RelayClientError),
}

/// Sends a session description through the relay.
///
/// Fails with [`RelayClientError::NotConnected`] when not registered right
/// now and [`RelayClientError::QueueFull`] when the outbound queue is full.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), RelayClientError>")]
pub struct SendPeerConnection(pub PeerConnection);

/// Closes the session with 1000 and stops the actor without reconnecting.
/// Resolves once the actor stopped: after the relay answered the close frame
/// (the close handshake is complete, so the relay counts a normal close), or
/// after at most [`RELAY_CLIENT_CLOSE_WAIT_MS`](crate::defaults::RELAY_CLIENT_CLOSE_WAIT_MS).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Asks for a [`RelayStatus`].
#[derive(Message, Debug)]
#[rtype(result = "RelayStatus")]
pub struct GetStatus;

/// A snapshot of the session state.
#[derive(MessageResponse, Clone, Debug)]
pub struct RelayStatus {
    /// Our UUID.
    pub uuid: Uuid,
    /// Our name.
    pub name: String,
    /// The relay URL in use (connected or being tried), or tried last.
    pub relay: String,
    /// The WebSocket is open.
    pub connected: bool,
    /// The relay accepted our registration on the open WebSocket.
    pub registered: bool,
    /// Connection attempts since the actor started.
    pub attempts: u64,
    /// Successful registrations since the actor started.
    pub registrations: u64,
    /// Failed attempts or losses since the last stable connection.
    pub retries: u32,
    /// The most recent error, if any.
    pub last_error: Option<RelayClientError>,
}
