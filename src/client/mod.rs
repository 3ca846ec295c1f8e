//! The peer library: a relay session, WebRTC connections and the manager that
//! supervises them, all actix actors embedded in the application's own System.
//!
//! - [`peer_manager`]: [`peer_manager::PeerManager`], the one actor an application
//!   adds: it supervises the relay session and opens, accepts and closes connections.
//! - [`relay_client`]: [`relay_client::RelayClient`], one relay session that registers,
//!   relays offers/answers and reconnects with [`backoff`]; `wss://` options in [`tls`].
//! - [`connection`]: [`connection::Connection`], one WebRTC peer connection with N
//!   data channels carrying chunked messages.
//! - [`runtime`]: [`runtime::SwitchboardRuntime`], tokio for `webrtc` with larger UDP buffers.
//!
//! `examples/two_peers.rs` is the smallest complete program (a relay and two
//! peers in one process); `examples/peer_http.rs` embeds a manager in an
//! actix-web application.

pub mod backoff;
pub mod connection;
pub mod peer_manager;
pub mod relay_client;
pub mod runtime;
pub mod tls;
