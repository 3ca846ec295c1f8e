//! A `peer_connection`'s description as the relay forwards it, and how
//! either form of a description is written into a frame.

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::pyjson::{is_dumps_literal, push_str};

/// A description as the relay forwards it: the JSON string literal, quotes
/// included, exactly as Python's `json.dumps` writes the description's text.
///
/// Decoding keeps the frame's own literal when it is already in that form
/// (printable ASCII and the escapes `\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
/// `\f`: [`is_dumps_literal`]), which is how ProxyStore's peers and
/// Switchboard's write it; any other spelling (`\u` escapes, `\/`, raw
/// non-ASCII) is decoded and written again in that form, so the bytes
/// forwarded are ProxyStore's either way. A non-string description is an
/// error, as for the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptionLiteral(String);

impl DescriptionLiteral {
    /// The literal of `text` in `json.dumps`'s form.
    pub fn of_text(text: &str) -> DescriptionLiteral {
        let mut literal = String::with_capacity(text.len() + text.len() / 8 + 2);
        push_str(&mut literal, text);
        DescriptionLiteral(literal)
    }

    /// The JSON literal, quotes included.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The description's text (decodes the literal).
    pub fn text(&self) -> String {
        // The literal was checked or written by `push_str`: it decodes.
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for DescriptionLiteral {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<str> = Box::<RawValue>::deserialize(deserializer)?.into();
        if is_dumps_literal(&raw) {
            return Ok(DescriptionLiteral(raw.into_string()));
        }
        let text: String = serde_json::from_str(&raw).map_err(D::Error::custom)?;
        Ok(DescriptionLiteral::of_text(&text))
    }
}

/// How a `peer_connection` is encoded with its description: a text is
/// escaped, a literal copied.
pub(super) trait WriteDescription {
    /// Appends the description as a JSON string literal.
    fn write_json(&self, out: &mut String);
    /// About how many bytes that appends.
    fn json_len(&self) -> usize;
}

impl WriteDescription for String {
    fn write_json(&self, out: &mut String) {
        push_str(out, self);
    }
    fn json_len(&self) -> usize {
        self.len() + self.len() / 8 + 2
    }
}

impl WriteDescription for DescriptionLiteral {
    fn write_json(&self, out: &mut String) {
        out.push_str(&self.0);
    }
    fn json_len(&self) -> usize {
        self.0.len()
    }
}
