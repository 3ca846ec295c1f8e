//! The peer library: a relay session, WebRTC connections and the manager that
//! supervises them, all actix actors embedded in the application's own System.
//!
//! (filled in as the modules land)
//! - [`relay_client`]: [`relay_client::RelayClient`], one relay session that registers,
//!   relays offers/answers and reconnects; rejections (4001/4002/4004) are final.
//! - [`backoff`]: capped, jittered exponential backoff for reconnecting.
//! - [`tls`]: rustls client configurations for `wss://` (custom CA, skip-verify).

pub mod backoff;
pub mod relay_client;
pub mod tls;
