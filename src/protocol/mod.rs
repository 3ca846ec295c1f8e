//! Wire types and codecs only: no actix, no I/O.
//!
//! - [`chunk`]: the data-channel chunk format, its encoder and the [`chunk::Reassembler`].
//! - [`relay`]: the three relay messages, [`relay::decode`] and [`relay::encode`].
//! - [`close`]: close codes and the reasons sent with them.
//! - [`uuid`]: UUID spellings accepted like Python's `uuid.UUID`.
//! - [`pyjson`]: string escaping identical to Python's `json.dumps`.
//! - [`proxy_v2`]: the PROXY protocol v2 header a tunnel agent can send its local service.
//! - [`bearer`]: the token of an `Authorization: Bearer` header.
//! - [`tunnel`]: the TCP tunnel's frames between relay and host agents, and the handshake MAC.

pub mod bearer;
pub mod chunk;
pub mod close;
pub mod proxy_v2;
pub mod pyjson;
pub mod relay;
pub mod tunnel;
pub mod uuid;

#[cfg(test)]
mod tests;

pub use relay::{
    decode, encode, DecodeError, DescriptionType, PeerConnection, RelayMessage, RelayRegistration,
    RelayResponse,
};
