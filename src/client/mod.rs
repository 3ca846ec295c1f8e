//! The peer library: a relay session, WebRTC connections and the manager that
//! supervises them, all actix actors embedded in the application's own System.
//!
//! (filled in as the modules land)
//! - [`backoff`]: capped, jittered exponential backoff for reconnecting.
//! - [`tls`]: rustls client configurations for `wss://` (custom CA, skip-verify).

pub mod backoff;
pub mod tls;
