//! The envelope: what one node publishes on another node's channel.
//!
//! A payload is a one-line JSON header, then, for a forward only, a newline
//! and the relay message's text as it is:
//!
//! ```text
//! {"v":1,"node":"<target node>","kind":"forward","from":"<uuid>","to":"<uuid>","user":"<user>"}\n<text>
//! {"v":1,"node":"<target node>","kind":"takeover","uuid":"<uuid>","session":12}
//! {"v":1,"node":"<target node>","kind":"ping","sender":"<node>","nonce":7}
//! ```
//!
//! The text is not escaped into the JSON: a relay message is itself JSON
//! full of quotes and backslashes (an SDP inside a JSON string), which a
//! second escaping would grow up to twice and cost a pass over every byte
//! both ways. So an envelope is at most the text plus a header of at most
//! [`defaults::CLUSTER_ENVELOPE_HEADER_MAX`] bytes, and the receiver's limit
//! is `server.max_message_bytes` plus that.
//!
//! Decoding refuses, without panicking: a payload over the limit (before
//! reading it), a header that is not the JSON above (unknown or missing
//! fields, fields of another kind), another version, another target node,
//! and a forward's text that is not UTF-8.
//!
//! A forward names the sending peer's user (`""` for the anonymous user of
//! `auth.method = "none"`): the receiving node delivers it only to a peer of
//! that user, as one node does.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::defaults;

/// The envelope version this code writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// What one node tells another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A relay message from a peer on the sending node to a peer on the target node.
    Forward {
        /// The sending peer.
        from: Uuid,
        /// The peer it is for, registered on the target node.
        to: Uuid,
        /// The sending peer's user (`""`: the anonymous user).
        user: String,
        /// The relay message, a WebSocket text frame.
        text: String,
    },
    /// `uuid` was registered on another node: close `session` if it still holds it (4004).
    Takeover {
        /// The UUID taken over.
        uuid: Uuid,
        /// The session on the target node that held it.
        session: u64,
    },
    /// The self-check: a node publishes this to its own channel.
    Ping {
        /// The node that sent it.
        node: String,
        /// Which check this is.
        nonce: u64,
    },
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than the limit.
    #[error("envelope of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The header is not an envelope header.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The envelope is of another version.
    #[error("envelope version {0} is not {ENVELOPE_VERSION}")]
    Version(u64),
    /// The envelope names another target node.
    #[error("envelope for node {0:?} reached another node")]
    WrongNode(String),
}

/// Why an envelope could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The envelope would be larger than the limit.
    #[error("envelope of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Forward,
    Takeover,
    Ping,
}

/// The header line; which optional fields must be there depends on `kind`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    v: u64,
    node: String,
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<u64>,
}

/// Only the version, read before anything else so that another version is
/// named as such (its header may have fields this one does not know).
#[derive(Deserialize)]
struct VersionOnly {
    v: u64,
}

/// The largest envelope for relay messages of at most `max_message_bytes`.
pub fn envelope_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(defaults::CLUSTER_ENVELOPE_HEADER_MAX)
}

/// The pieces the registration script joins around the old node, the UUID
/// and the old session to write a takeover envelope (the script runs in
/// Redis, so it cannot call [`encode`]; a test decodes what it writes).
pub(crate) const TAKEOVER_PARTS: [&str; 4] = [
    "{\"v\":1,\"node\":\"",
    "\",\"kind\":\"takeover\",\"uuid\":\"",
    "\",\"session\":",
    "}",
];

/// Writes `envelope` for `node`'s channel; refused when over `limit` bytes
/// (or when its header is over [`defaults::CLUSTER_ENVELOPE_HEADER_MAX`]).
pub fn encode(node: &str, envelope: &Envelope, limit: usize) -> Result<Vec<u8>, EncodeError> {
    encode_reserving(node, envelope, limit, 0)
}

/// An envelope whose target node is filled in later, by a script in Redis
/// that finds it: the payload is `head`, the node, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaddressed {
    /// Up to the node's id.
    pub head: &'static str,
    /// After it, the body included.
    pub tail: Vec<u8>,
}

/// The start of every header, up to the target node's id.
const HEAD: &str = "{\"v\":1,\"node\":\"";

/// Writes `envelope` for a node not known yet (any valid node id: at most
/// [`defaults::CLUSTER_NODE_ID_MAX`] characters of `[A-Za-z0-9._-]`, which
/// JSON does not escape); the size checks count the longest id.
pub fn encode_unaddressed(envelope: &Envelope, limit: usize) -> Result<Unaddressed, EncodeError> {
    let mut bytes = encode_reserving("", envelope, limit, defaults::CLUSTER_NODE_ID_MAX)?;
    debug_assert!(bytes.starts_with(HEAD.as_bytes()));
    let tail = bytes.split_off(HEAD.len().min(bytes.len()));
    Ok(Unaddressed { head: HEAD, tail })
}

/// [`encode`], counting `reserve` more bytes in the header and in the whole.
fn encode_reserving(
    node: &str,
    envelope: &Envelope,
    limit: usize,
    reserve: usize,
) -> Result<Vec<u8>, EncodeError> {
    let mut header = Header {
        v: u64::from(ENVELOPE_VERSION),
        node: node.to_owned(),
        kind: Kind::Ping,
        from: None,
        to: None,
        user: None,
        uuid: None,
        session: None,
        sender: None,
        nonce: None,
    };
    let mut body = None;
    match envelope {
        Envelope::Forward {
            from,
            to,
            user,
            text,
        } => {
            header.kind = Kind::Forward;
            header.from = Some(*from);
            header.to = Some(*to);
            header.user = Some(user.clone());
            body = Some(text.as_bytes());
        }
        Envelope::Takeover { uuid, session } => {
            header.kind = Kind::Takeover;
            header.uuid = Some(*uuid);
            header.session = Some(*session);
        }
        Envelope::Ping {
            node: sender,
            nonce,
        } => {
            header.sender = Some(sender.clone());
            header.nonce = Some(*nonce);
        }
    }
    // A header of strings, UUIDs and numbers always serializes.
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    let header_max = defaults::CLUSTER_ENVELOPE_HEADER_MAX;
    if out.len() + reserve > header_max {
        return Err(EncodeError::TooLarge {
            len: out.len() + reserve,
            limit: header_max,
        });
    }
    if let Some(body) = body {
        out.reserve(body.len() + 1);
        out.push(b'\n');
        out.extend_from_slice(body);
    }
    if out.len() + reserve > limit {
        return Err(EncodeError::TooLarge {
            len: out.len() + reserve,
            limit,
        });
    }
    Ok(out)
}

/// Reads a payload that arrived on `node`'s channel.
pub fn decode(payload: &[u8], node: &str, limit: usize) -> Result<Envelope, DecodeError> {
    if payload.len() > limit {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            limit,
        });
    }
    let (head, body) = match payload.iter().position(|&b| b == b'\n') {
        Some(i) => (&payload[..i], Some(&payload[i + 1..])),
        None => (payload, None),
    };
    let malformed = |what: &str| DecodeError::Malformed(what.to_owned());
    if head.len() > defaults::CLUSTER_ENVELOPE_HEADER_MAX {
        return Err(malformed("header too long"));
    }
    let version: VersionOnly =
        serde_json::from_slice(head).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version.v != u64::from(ENVELOPE_VERSION) {
        return Err(DecodeError::Version(version.v));
    }
    let h: Header =
        serde_json::from_slice(head).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if h.node != node {
        return Err(DecodeError::WrongNode(h.node));
    }
    let fields = (h.from, h.to, h.user, h.uuid, h.session, h.sender, h.nonce);
    match (h.kind, fields, body) {
        (Kind::Forward, (Some(from), Some(to), Some(user), None, None, None, None), Some(body)) => {
            let text = std::str::from_utf8(body).map_err(|_| malformed("text is not UTF-8"))?;
            Ok(Envelope::Forward {
                from,
                to,
                user,
                text: text.to_owned(),
            })
        }
        (Kind::Takeover, (None, None, None, Some(uuid), Some(session), None, None), None) => {
            Ok(Envelope::Takeover { uuid, session })
        }
        (Kind::Ping, (None, None, None, None, None, Some(sender), Some(nonce)), None) => {
            Ok(Envelope::Ping {
                node: sender,
                nonce,
            })
        }
        (kind, _, _) => Err(DecodeError::Malformed(format!(
            "fields or body do not match kind {kind:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 4096;

    #[test]
    fn every_kind_round_trips() {
        let from = Uuid::new_v4();
        let to = Uuid::new_v4();
        for envelope in [
            Envelope::Forward {
                from,
                to,
                user: "alice \"quoted\"".into(),
                text: "{\"a\": \"line\\nbreak\"}\nraw newline too".into(),
            },
            Envelope::Forward {
                from,
                to,
                user: String::new(),
                text: String::new(),
            },
            Envelope::Takeover {
                uuid: from,
                session: u64::MAX,
            },
            Envelope::Ping {
                node: "n1".into(),
                nonce: 7,
            },
        ] {
            let bytes = encode("n1", &envelope, LIMIT).unwrap();
            assert_eq!(decode(&bytes, "n1", LIMIT), Ok(envelope));
        }
    }

    #[test]
    fn the_scripts_takeover_decodes() {
        let uuid = Uuid::new_v4();
        let p = TAKEOVER_PARTS;
        let text = format!("{}n-2{}{uuid}{}42{}", p[0], p[1], p[2], p[3]);
        let envelope = Envelope::Takeover { uuid, session: 42 };
        assert_eq!(decode(text.as_bytes(), "n-2", LIMIT), Ok(envelope));
    }

    #[test]
    fn bad_payloads_are_refused() {
        let ping = Envelope::Ping {
            node: "n1".into(),
            nonce: 1,
        };
        let good = encode("n1", &ping, LIMIT).unwrap();
        assert_eq!(
            decode(&good, "n2", LIMIT),
            Err(DecodeError::WrongNode("n1".into()))
        );
        assert!(matches!(
            decode(&good, "n1", good.len() - 1),
            Err(DecodeError::TooLarge { .. })
        ));
        let v2 = br#"{"v":2,"node":"n1","kind":"ping","shiny":true}"#;
        assert_eq!(decode(v2, "n1", LIMIT), Err(DecodeError::Version(2)));
        for bad in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"{\"v\":1}",
            br#"{"v":1,"node":"n1","kind":"ping","sender":"n1","nonce":1,"x":0}"#,
            br#"{"v":1,"node":"n1","kind":"ping","sender":"n1"}"#,
            br#"{"v":1,"node":"n1","kind":"takeover","uuid":"x","session":1}"#,
            br#"{"v":1,"node":"n1","kind":"ping","sender":"n1","nonce":1}
body"#,
            br#"{"v":1,"node":"n1","kind":"forward","from":"00000000-0000-0000-0000-000000000000","to":"00000000-0000-0000-0000-000000000000"}"#,
            b"{\"v\":1,\"node\":\"n1\",\"kind\":\"forward\",\"from\":\"00000000-0000-0000-0000-000000000000\",\"to\":\"00000000-0000-0000-0000-000000000000\",\"user\":\"\"}\n\xff\xfe",
            // A forward that does not name the sender's user.
            b"{\"v\":1,\"node\":\"n1\",\"kind\":\"forward\",\"from\":\"00000000-0000-0000-0000-000000000000\",\"to\":\"00000000-0000-0000-0000-000000000000\"}\nhi",
        ] {
            assert!(
                decode(bad, "n1", LIMIT).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_limit_is_the_text_plus_the_header() {
        let limit = envelope_limit(1000);
        let text = "x".repeat(1000);
        let to = Uuid::new_v4();
        let forward = Envelope::Forward {
            from: to,
            to,
            user: "alice".into(),
            text,
        };
        let node = "n".repeat(64);
        let bytes = encode(&node, &forward, limit).unwrap();
        assert!(decode(&bytes, &node, limit).is_ok());
        let over = Envelope::Forward {
            from: to,
            to,
            user: "alice".into(),
            text: "x".repeat(limit),
        };
        assert!(encode(&node, &over, limit).is_err());
    }

    #[test]
    fn an_unaddressed_envelope_is_the_encoding_with_the_node_in_between() {
        let forward = Envelope::Forward {
            from: Uuid::new_v4(),
            to: Uuid::new_v4(),
            user: "bob".into(),
            text: "{\"x\":1}\nsecond line".into(),
        };
        let parts = encode_unaddressed(&forward, LIMIT).unwrap();
        let node = "node-7";
        let mut joined = parts.head.as_bytes().to_vec();
        joined.extend_from_slice(node.as_bytes());
        joined.extend_from_slice(&parts.tail);
        assert_eq!(joined, encode(node, &forward, LIMIT).unwrap());
        assert_eq!(decode(&joined, node, LIMIT), Ok(forward));
        // The size checks count the longest node id.
        let text = "x".repeat(1000);
        let long = Envelope::Forward {
            from: Uuid::new_v4(),
            to: Uuid::new_v4(),
            user: "u".repeat(400),
            text,
        };
        assert!(
            encode_unaddressed(&long, LIMIT).is_err(),
            "header over the maximum"
        );
    }
}
