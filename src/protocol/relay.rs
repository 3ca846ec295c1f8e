//! The relay wire protocol: three JSON messages in WebSocket text frames.
//!
//! Wire-compatible with ProxyStore 1.1 (`proxystore.p2p.relay.messages`).
//! [`encode`] writes ProxyStore's exact bytes (key order, `message_type`
//! last, optional fields present as `null`); [`decode`] accepts every frame
//! ProxyStore's decoder accepts from a well-behaved client (any key order,
//! absent optional fields, every UUID spelling of Python's `uuid.UUID`) and
//! returns a typed [`DecodeError`] for everything else.
//!
//! The relay itself decodes with [`decode_relayed`]: a `peer_connection`'s
//! description stays the JSON string literal it arrived as
//! ([`DescriptionLiteral`]) when that literal is already in `json.dumps`'s
//! form, so forwarding it neither unescapes nor escapes the SDP again.

use serde::de::Deserializer;
use serde::Deserialize;
use uuid::Uuid;

use super::pyjson::{push_bool, push_opt_str, push_str};
use super::uuid::parse_python_uuid;

mod description;
pub use description::DescriptionLiteral;
use description::WriteDescription;

/// `message_type` of a registration request.
pub const TYPE_REGISTRATION: &str = "relay_registration";
/// `message_type` of a relay response.
pub const TYPE_RESPONSE: &str = "relay_response";
/// `message_type` of a peer connection request (offer or answer).
pub const TYPE_PEER_CONNECTION: &str = "peer_connection";

/// One relay message. `D` is how a `peer_connection`'s description is held:
/// its text ([`String`], the default) or, in the relay, the JSON literal
/// ([`DescriptionLiteral`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMessage<D = String> {
    /// A client asks to be registered under `uuid`.
    Registration(RelayRegistration),
    /// The relay answers a registration (or reports an error).
    Response(RelayResponse),
    /// A session description to forward to another peer.
    PeerConnection(PeerConnection<D>),
}

/// `relay_registration`: register with the relay as a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRegistration {
    /// Human-readable name of the peer.
    pub name: String,
    /// The UUID the peer wants to be reachable at.
    pub uuid: Uuid,
}

/// `relay_response`: the relay's reply on success or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayResponse {
    /// Whether the request succeeded (default `true`).
    pub success: bool,
    /// Optional text from the relay.
    pub message: Option<String>,
    /// Whether `message` is an error (default `false`).
    pub error: bool,
}

impl Default for RelayResponse {
    fn default() -> Self {
        RelayResponse {
            success: true,
            message: None,
            error: false,
        }
    }
}

/// Whether a session description is an offer or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptionType {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
}

impl DescriptionType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DescriptionType::Offer => "offer",
            DescriptionType::Answer => "answer",
        }
    }
}

/// `peer_connection`: a session description travelling between two peers.
/// `D` holds the description: its text ([`String`], the default) or, in the
/// relay, its JSON literal ([`DescriptionLiteral`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection<D = String> {
    /// UUID of the sending peer.
    pub source_uuid: Uuid,
    /// Name of the sending peer.
    pub source_name: String,
    /// UUID of the destination peer.
    pub peer_uuid: Uuid,
    /// Offer or answer.
    pub description_type: DescriptionType,
    /// The session description, itself JSON `{"sdp": ..., "type": ...}`.
    pub description: D,
    /// Set by the relay when the message could not be forwarded.
    pub error: Option<String>,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The text is not JSON.
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    /// The JSON is valid but not an object.
    #[error("frame is JSON but not an object")]
    NotObject,
    /// The object has no `message_type` string.
    #[error("frame has no message_type string")]
    MissingType,
    /// `message_type` names no known message.
    #[error("unknown message_type {0:?}")]
    UnknownType(String),
    /// A field is missing, unknown, null where not allowed, or of the wrong type.
    #[error("invalid {kind} message: {detail}")]
    InvalidField {
        /// The `message_type` of the frame.
        kind: &'static str,
        /// What is wrong, naming the field.
        detail: String,
    },
}

/// A field that may be absent, `null`, or hold a value.
enum Slot<T> {
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Slot<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Slot::Value(value),
            None => Slot::Null,
        })
    }
}

// Written out: `#[derive(Default)]` would require `T: Default`, which the
// description types do not (and need not) implement.
#[allow(clippy::derivable_impls)]
impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::Absent
    }
}

impl<T> Slot<T> {
    fn present(&self) -> bool {
        !matches!(self, Slot::Absent)
    }

    fn value(self) -> Option<T> {
        match self {
            Slot::Value(value) => Some(value),
            _ => None,
        }
    }
}

/// `error` is a bool in `relay_response` and a string in `peer_connection`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Flag(bool),
    Text(String),
}

/// Every field of every message in one flat shape: serde streams the frame
/// straight into it (no intermediate buffering of the whole object), and the
/// per-type rules below decide what is allowed, required and well-typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct Flat<D> {
    #[serde(default)]
    message_type: Slot<String>,
    #[serde(default)]
    name: Slot<String>,
    #[serde(default)]
    uuid: Slot<String>,
    #[serde(default)]
    success: Slot<bool>,
    #[serde(default)]
    message: Slot<String>,
    #[serde(default)]
    error: Slot<ErrorField>,
    #[serde(default)]
    source_uuid: Slot<String>,
    #[serde(default)]
    source_name: Slot<String>,
    #[serde(default)]
    peer_uuid: Slot<String>,
    #[serde(default)]
    description_type: Slot<DescriptionType>,
    #[serde(default)]
    description: Slot<D>,
}

fn field_error(kind: &'static str, detail: String) -> DecodeError {
    DecodeError::InvalidField { kind, detail }
}

fn required<T>(kind: &'static str, field: &str, slot: Slot<T>) -> Result<T, DecodeError> {
    match slot {
        Slot::Value(value) => Ok(value),
        Slot::Null => Err(field_error(
            kind,
            format!("field `{field}` must not be null"),
        )),
        Slot::Absent => Err(field_error(kind, format!("missing field `{field}`"))),
    }
}

fn uuid_field(kind: &'static str, field: &str, slot: Slot<String>) -> Result<Uuid, DecodeError> {
    match slot {
        Slot::Value(text) => parse_python_uuid(&text)
            .ok_or_else(|| field_error(kind, format!("field `{field}`: invalid UUID {text:?}"))),
        Slot::Null => Err(field_error(
            kind,
            format!("field `{field}`: expected a UUID string, got null"),
        )),
        Slot::Absent => Err(field_error(kind, format!("missing field `{field}`"))),
    }
}

impl<D> Flat<D> {
    /// Rejects fields that do not belong to `kind`.
    fn only(&self, kind: &'static str, allowed: &[&str]) -> Result<(), DecodeError> {
        let fields = [
            ("name", self.name.present()),
            ("uuid", self.uuid.present()),
            ("success", self.success.present()),
            ("message", self.message.present()),
            ("error", self.error.present()),
            ("source_uuid", self.source_uuid.present()),
            ("source_name", self.source_name.present()),
            ("peer_uuid", self.peer_uuid.present()),
            ("description_type", self.description_type.present()),
            ("description", self.description.present()),
        ];
        match fields
            .iter()
            .find(|(name, present)| *present && !allowed.contains(name))
        {
            Some((name, _)) => Err(field_error(kind, format!("unknown field `{name}`"))),
            None => Ok(()),
        }
    }

    fn into_message(self) -> Result<RelayMessage<D>, DecodeError> {
        let message_type = match &self.message_type {
            Slot::Value(t) => t.as_str(),
            _ => return Err(DecodeError::MissingType),
        };
        match message_type {
            TYPE_REGISTRATION => self.into_registration(),
            TYPE_RESPONSE => self.into_response(),
            TYPE_PEER_CONNECTION => self.into_peer_connection(),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }

    fn into_registration(self) -> Result<RelayMessage<D>, DecodeError> {
        let kind = TYPE_REGISTRATION;
        self.only(kind, &["name", "uuid"])?;
        Ok(RelayMessage::Registration(RelayRegistration {
            name: required(kind, "name", self.name)?,
            uuid: uuid_field(kind, "uuid", self.uuid)?,
        }))
    }

    fn into_response(self) -> Result<RelayMessage<D>, DecodeError> {
        let kind = TYPE_RESPONSE;
        self.only(kind, &["success", "message", "error"])?;
        let error = match self.error {
            Slot::Value(ErrorField::Flag(flag)) => flag,
            Slot::Value(ErrorField::Text(_)) => {
                return Err(field_error(
                    kind,
                    "field `error`: expected a boolean".into(),
                ))
            }
            Slot::Absent | Slot::Null => false,
        };
        Ok(RelayMessage::Response(RelayResponse {
            success: self.success.value().unwrap_or(true),
            message: self.message.value(),
            error,
        }))
    }

    fn into_peer_connection(self) -> Result<RelayMessage<D>, DecodeError> {
        let kind = TYPE_PEER_CONNECTION;
        self.only(
            kind,
            &[
                "source_uuid",
                "source_name",
                "peer_uuid",
                "description_type",
                "description",
                "error",
            ],
        )?;
        let error = match self.error {
            Slot::Value(ErrorField::Text(text)) => Some(text),
            Slot::Value(ErrorField::Flag(_)) => {
                return Err(field_error(
                    kind,
                    "field `error`: expected a string or null".into(),
                ))
            }
            Slot::Absent | Slot::Null => None,
        };
        Ok(RelayMessage::PeerConnection(PeerConnection {
            source_uuid: uuid_field(kind, "source_uuid", self.source_uuid)?,
            source_name: required(kind, "source_name", self.source_name)?,
            peer_uuid: uuid_field(kind, "peer_uuid", self.peer_uuid)?,
            description_type: required(kind, "description_type", self.description_type)?,
            description: required(kind, "description", self.description)?,
            error,
        }))
    }
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<RelayMessage, DecodeError> {
    decode_as(text)
}

/// Decodes one text frame as the relay forwards it: like [`decode`], with
/// the same errors, but a `peer_connection`'s description is kept as its
/// JSON literal ([`DescriptionLiteral`]).
pub fn decode_relayed(text: &str) -> Result<RelayMessage<DescriptionLiteral>, DecodeError> {
    decode_as(text)
}

fn decode_as<D: for<'de> Deserialize<'de>>(text: &str) -> Result<RelayMessage<D>, DecodeError> {
    match serde_json::from_str::<Flat<D>>(text) {
        Ok(flat) => flat.into_message(),
        Err(error) => Err(classify(text, error)),
    }
}

/// Turns a serde failure into a typed error (error path only: parses again).
fn classify(text: &str, error: serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return DecodeError::NotJson(e.to_string()),
    };
    let Some(object) = value.as_object() else {
        return DecodeError::NotObject;
    };
    let kind = match object.get("message_type").and_then(|v| v.as_str()) {
        None => return DecodeError::MissingType,
        Some(TYPE_REGISTRATION) => TYPE_REGISTRATION,
        Some(TYPE_RESPONSE) => TYPE_RESPONSE,
        Some(TYPE_PEER_CONNECTION) => TYPE_PEER_CONNECTION,
        Some(other) => return DecodeError::UnknownType(other.to_owned()),
    };
    DecodeError::InvalidField {
        kind,
        detail: error.to_string(),
    }
}

/// Encodes a message exactly as ProxyStore's `encode_relay_message` does.
pub fn encode(message: &RelayMessage) -> String {
    match message {
        RelayMessage::Registration(m) => encode_registration(m),
        RelayMessage::Response(m) => encode_response(m),
        RelayMessage::PeerConnection(m) => encode_peer_connection(m),
    }
}

/// Encodes a `relay_registration` frame.
pub fn encode_registration(m: &RelayRegistration) -> String {
    let mut out = String::with_capacity(96 + m.name.len());
    out.push_str("{\"name\": ");
    push_str(&mut out, &m.name);
    out.push_str(", \"uuid\": \"");
    out.push_str(&m.uuid.hyphenated().to_string());
    out.push_str("\", \"message_type\": \"relay_registration\"}");
    out
}

/// Encodes a `relay_response` frame.
pub fn encode_response(m: &RelayResponse) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"success\": ");
    push_bool(&mut out, m.success);
    out.push_str(", \"message\": ");
    push_opt_str(&mut out, m.message.as_deref());
    out.push_str(", \"error\": ");
    push_bool(&mut out, m.error);
    out.push_str(", \"message_type\": \"relay_response\"}");
    out
}

/// Encodes a `peer_connection` frame.
pub fn encode_peer_connection(m: &PeerConnection) -> String {
    encode_pc(m)
}

/// Encodes a `peer_connection` frame as the relay forwards it: the same
/// bytes as [`encode_peer_connection`] of the decoded message, the
/// description copied as its literal.
pub fn encode_forwarded(m: &PeerConnection<DescriptionLiteral>) -> String {
    encode_pc(m)
}

fn encode_pc<D: WriteDescription>(m: &PeerConnection<D>) -> String {
    let mut out = String::with_capacity(256 + m.description.json_len());
    out.push_str("{\"source_uuid\": \"");
    out.push_str(&m.source_uuid.hyphenated().to_string());
    out.push_str("\", \"source_name\": ");
    push_str(&mut out, &m.source_name);
    out.push_str(", \"peer_uuid\": \"");
    out.push_str(&m.peer_uuid.hyphenated().to_string());
    out.push_str("\", \"description_type\": \"");
    out.push_str(m.description_type.as_str());
    out.push_str("\", \"description\": ");
    m.description.write_json(&mut out);
    out.push_str(", \"error\": ");
    push_opt_str(&mut out, m.error.as_deref());
    out.push_str(", \"message_type\": \"peer_connection\"}");
    out
}
