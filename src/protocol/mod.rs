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

/// The largest `end <= max` (and `<= text.len()`) at which `text` can be cut
/// without splitting a UTF-8 character: `str::floor_char_boundary`, which
/// is newer than the crate's `rust-version`.
pub fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

pub use relay::{
    decode, encode, DecodeError, DescriptionType, PeerConnection, RelayMessage, RelayRegistration,
    RelayResponse,
};
