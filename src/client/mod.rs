//! The peer library: a relay session, WebRTC connections and the manager that
//! supervises them, all actix actors embedded in the application's own System.
//!
//! (filled in as the modules land)
//! - [`relay_client`]: [`relay_client::RelayClient`], one relay session that registers,
//!   relays offers/answers and reconnects with [`backoff`]; `wss://` options in [`tls`].
//! - `runtime`: [`runtime::SwitchboardRuntime`], tokio for `webrtc` with larger UDP buffers.

pub mod backoff;
pub mod connection;
pub mod peer_manager;
pub mod relay_client;
pub mod runtime;
pub mod tls;
