//! Targets for the relay messages (`protocol::relay`, `protocol::pyjson`) and
//! UUID parsing (`protocol::uuid`).

use uuid::Uuid;

use super::input::Input;
use crate::protocol::relay::{self, DescriptionType, PeerConnection, RelayMessage};
use crate::protocol::relay::{RelayRegistration, RelayResponse};
use crate::protocol::uuid::parse_python_uuid;

/// Longest string field `relay_encode` builds, in characters.
const MAX_FIELD_CHARS: usize = 200;

/// A WebSocket text frame as the relay and the peer library decode it.
///
/// Checks: [`relay::decode`] never panics; a frame it accepts re-encodes to
/// a frame that decodes to the same message, and every encoded frame is
/// ASCII (Python's `ensure_ascii`). The relay's [`relay::decode_relayed`]
/// accepts exactly the same frames, and what it forwards (the description
/// kept as its literal) is byte for byte what re-encoding the decoded
/// message writes. Text frames are UTF-8 by then (the WebSocket layer
/// checks), so other bytes are skipped.
pub fn relay_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = relay::decode(text);
    let relayed = relay::decode_relayed(text);
    match (&decoded, &relayed) {
        (Ok(RelayMessage::PeerConnection(pc)), Ok(RelayMessage::PeerConnection(kept))) => {
            assert_eq!(
                relay::encode_forwarded(kept),
                relay::encode_peer_connection(pc),
                "the relay forwards other bytes than ProxyStore's for {text:?}"
            );
            assert_eq!(kept.description.text(), pc.description);
        }
        (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
        _ => panic!("decode and decode_relayed disagree on {text:?}: {decoded:?} / {relayed:?}"),
    }
    if let Ok(message) = decoded {
        assert_round_trip(&message);
    }
}

/// A relay message built from the input, encoded, then decoded.
///
/// Checks `decode(encode(m)) == m` for every message, with strings holding
/// any Unicode (controls, quotes, backslashes, astral characters), which
/// tests the escaping of `protocol::pyjson` against serde_json's reader.
pub fn relay_encode(data: &[u8]) {
    let mut input = Input::new(data);
    let message = match input.byte() % 3 {
        0 => RelayMessage::Registration(RelayRegistration {
            uuid: Uuid::from_u128(input.u128()),
            name: input.text(MAX_FIELD_CHARS),
        }),
        1 => {
            let flags = input.byte();
            RelayMessage::Response(RelayResponse {
                success: flags & 1 != 0,
                error: flags & 2 != 0,
                message: (flags & 4 != 0).then(|| input.text(MAX_FIELD_CHARS)),
            })
        }
        _ => peer_connection(&mut input),
    };
    assert_round_trip(&message);
}

fn peer_connection(input: &mut Input<'_>) -> RelayMessage {
    let flags = input.byte();
    RelayMessage::PeerConnection(PeerConnection {
        source_uuid: Uuid::from_u128(input.u128()),
        peer_uuid: Uuid::from_u128(input.u128()),
        description_type: if flags & 1 == 0 {
            DescriptionType::Offer
        } else {
            DescriptionType::Answer
        },
        source_name: input.text(MAX_FIELD_CHARS),
        description: input.text(MAX_FIELD_CHARS),
        error: (flags & 2 != 0).then(|| input.text(MAX_FIELD_CHARS)),
    })
}

fn assert_round_trip(message: &RelayMessage) {
    let wire = relay::encode(message);
    assert!(wire.is_ascii(), "encoded frame is not ASCII: {wire:?}");
    match relay::decode(&wire) {
        Ok(back) => assert_eq!(&back, message, "round trip changed the message: {wire}"),
        Err(error) => panic!("own encoding does not decode ({error}): {wire}"),
    }
}

/// A UUID field's text, as [`parse_python_uuid`] reads it from a frame.
///
/// Checks: never panics; agrees with CPython's steps (drop `urn:` and
/// `uuid:`, strip braces, drop hyphens, 32 hex digits) written out
/// independently here; accepts everything the `uuid` crate parses (but a
/// `urn:uuid:` prefix in another case), with the same value; and whatever it accepts, it reads back from the
/// canonical spellings it could be written in.
pub fn uuid_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_python_uuid(text);
    assert_eq!(parsed, cpython_steps(text), "differs from CPython's steps");
    // The uuid crate also takes `URN:UUID:` in any case; CPython's
    // `str.replace('urn:', '')` does not (and neither do we).
    let odd_urn = text
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        && !text.starts_with("urn:uuid:");
    if let (Ok(strict), false) = (Uuid::parse_str(text), odd_urn) {
        assert_eq!(parsed, Some(strict), "refuses what the uuid crate accepts");
    }
    if let Some(uuid) = parsed {
        for spelling in [
            uuid.hyphenated().to_string(),
            uuid.simple().to_string(),
            uuid.urn().to_string(),
            uuid.braced().to_string(),
            uuid.hyphenated().to_string().to_uppercase(),
        ] {
            assert_eq!(parse_python_uuid(&spelling), Some(uuid), "{spelling}");
        }
    }
}

/// CPython's `uuid.UUID(hex)` steps, as plainly as possible.
fn cpython_steps(text: &str) -> Option<Uuid> {
    let hex: String = text
        .replace("urn:", "")
        .replace("uuid:", "")
        .trim_matches(['{', '}'])
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok().map(Uuid::from_u128)
}
