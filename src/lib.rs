//! Switchboard: a ProxyStore-compatible relay (signaling) server.
pub mod protocol;
