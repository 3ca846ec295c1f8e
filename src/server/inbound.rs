//! A session's inbound side: the WebSocket messages a client sent, decoded
//! from the upgraded request's payload strictly in the order they arrived.
//!
//! [`FrameReader`] is the synchronous core (bytes in, whole messages out:
//! fragmented messages are joined, sizes are checked). [`InboundStream`]
//! feeds it from the connection and decides how the stream ends.
//!
//! The rule this module exists for (RFC 6455 §7.1.5 and §7.1.7): every
//! complete frame that arrived before the end of the stream or before a
//! malformed frame is handed out first, in order. Only then does the stream
//! report the malformed frame ([`InboundError`]) or its end
//! ([`Inbound::Ended`]). The end of the TCP stream without a close frame is
//! not a protocol error: it is an abnormal closure (1006), whether it came as
//! a FIN, a reset, or in the middle of a frame. (actix-ws 0.4 reports the
//! end of the payload before decoding what is already buffered, which lost
//! the last frames a client wrote before shutting down its write side.)

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

/// One whole message from the client, or the end of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message (fragments joined), valid UTF-8.
    Text(ByteString),
    /// A binary message (fragments joined).
    Binary(Bytes),
    /// A ping with its payload (at most 125 bytes, RFC 6455 §5.5).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// The client's close frame, with its code and reason if it sent one.
    Close(Option<CloseReason>),
    /// The TCP stream ended without (or after) a close frame; nothing
    /// follows. Always the last item before the stream returns `None`.
    Ended(StreamEnd),
}

/// How a client's byte stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// Bytes received that never formed a whole message (an unfinished
    /// frame or fragmented message); 0 when the stream ended between messages.
    pub unfinished_bytes: usize,
    /// The transport's error when the stream did not end with a plain FIN
    /// (a reset, or actix-http's "payload reached EOF" for an upgraded stream).
    pub cause: Option<String>,
}

/// A frame the relay cannot accept; the session closes with the code that
/// [`InboundError::close_code`] names. Frames before it were already handed out.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// A frame, or the fragments of one message together, exceed the limit
    /// (`server.max_message_bytes`).
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A text message whose joined fragments, or a close frame's reason,
    /// are not UTF-8 (RFC 6455 §8.1).
    #[error("text message or close reason is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame with a code no endpoint may send (RFC 6455 §7.4: 1004–1006,
    /// 1015, other values below 3000 not defined there, or 5000 and above).
    #[error("close frame with code {0}, which may not be sent")]
    BadCloseCode(u16),
    /// A malformed frame: unmasked, bad opcode, bad continuation sequence,
    /// oversized control frame, bad close payload, …
    #[error("{0}")]
    Protocol(ProtocolError),
}

impl InboundError {
    /// The close code to answer with: 4003 (ProxyStore's "message too large")
    /// for [`InboundError::TooLarge`], 1007 for bad UTF-8, 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            InboundError::TooLarge { .. } => crate::protocol::close::TOO_LARGE,
            InboundError::InvalidUtf8 => 1007,
            InboundError::BadCloseCode(_) | InboundError::Protocol(_) => 1002,
        }
    }
}

/// The fragments of a message still being received.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// Bytes in, whole messages out, in order. No I/O.
pub struct FrameReader {
    codec: Codec,
    buf: BytesMut,
    limit: usize,
    partial: Option<Partial>,
}

impl FrameReader {
    /// A reader for a server's side of a WebSocket (client frames must be
    /// masked) that accepts frames and messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameReader {
            codec: Codec::new().max_size(limit),
            buf: BytesMut::new(),
            limit,
            partial: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a chunk read from the connection, without a copy when nothing
    /// is buffered and the chunk is not shared.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if self.buf.is_empty() {
            self.buf = BytesMut::from(bytes);
        } else {
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// Bytes received that are not yet part of a whole message.
    pub fn unfinished_bytes(&self) -> usize {
        self.buf.len() + self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`InboundError`] for a malformed or oversized frame; the reader must
    /// not be used after an error (the frame boundary is lost).
    pub fn next_message(&mut self) -> Result<Option<Inbound>, InboundError> {
        loop {
            // Kept to name what is wrong with a close frame the codec refuses.
            let close_payload = self.whole_close_payload();
            let frame = match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.check_declared_length()?;
                    if self.buf.is_empty() {
                        // Nothing half-received: let go of the last chunk's
                        // storage, so an idle client holds no read buffer.
                        self.buf = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(ProtocolError::Overflow) => {
                    return Err(InboundError::TooLarge { limit: self.limit })
                }
                Err(error) => {
                    // actix-http refuses a bad close code and a non-UTF-8
                    // close reason alike, as `BadOpCode`.
                    if let (ProtocolError::BadOpCode, Some(payload)) = (&error, close_payload) {
                        check_close_payload(&payload)?;
                    }
                    return Err(InboundError::Protocol(error));
                }
            };
            let message = match frame {
                Frame::Text(bytes) => Some(text(bytes)?),
                Frame::Binary(bytes) => Some(Inbound::Binary(bytes)),
                Frame::Ping(bytes) => Some(Inbound::Ping(bytes)),
                Frame::Pong(bytes) => Some(Inbound::Pong(bytes)),
                Frame::Close(reason) => Some(Inbound::Close(reason)),
                Frame::Continuation(item) => self.continuation(item)?,
            };
            if let Some(message) = message {
                return Ok(Some(message));
            }
        }
    }

    /// Called when the codec needs more bytes (so the header bits it checks
    /// early are fine): a declared length over the limit (alone, or with the
    /// fragments before it) is refused as soon as the header is in, so a
    /// client cannot make the relay buffer more than `limit` bytes of one
    /// message (actix-http compares the length only once the whole payload
    /// has arrived).
    fn check_declared_length(&self) -> Result<(), InboundError> {
        let Some(header) = Header::parse(&self.buf) else {
            return Ok(());
        };
        let joined = match (header.opcode, &self.partial) {
            (OPCODE_CONTINUATION, Some(partial)) => partial.data.len(),
            _ => 0,
        };
        let room = self.limit.saturating_sub(joined) as u64;
        if header.payload_len > room {
            return Err(InboundError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// The unmasked payload of the next frame if it is a close frame that
    /// has wholly arrived.
    fn whole_close_payload(&self) -> Option<Vec<u8>> {
        let header = Header::parse(&self.buf)?;
        if header.opcode != OPCODE_CLOSE {
            return None;
        }
        header.unmasked_payload(&self.buf)
    }

    /// Adds a fragment; returns the joined message after the last one.
    fn continuation(&mut self, item: Item) -> Result<Option<Inbound>, InboundError> {
        // The codec checks the sequence (first, continue…, last), so a
        // `Continue` or `Last` always has a `Partial` to join.
        let (first, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(true), bytes, false),
            Item::FirstBinary(bytes) => (Some(false), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        if let Some(text) = first {
            self.partial = Some(Partial {
                text,
                data: BytesMut::new(),
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return Err(InboundError::Protocol(
                ProtocolError::ContinuationNotStarted,
            ));
        };
        if partial.data.len() + bytes.len() > self.limit {
            return Err(InboundError::TooLarge { limit: self.limit });
        }
        partial.data.extend_from_slice(&bytes);
        if !last {
            return Ok(None);
        }
        let Some(Partial {
            text: is_text,
            data,
        }) = self.partial.take()
        else {
            return Ok(None);
        };
        if is_text {
            text(data.freeze()).map(Some)
        } else {
            Ok(Some(Inbound::Binary(data.freeze())))
        }
    }
}

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_CLOSE: u8 = 0x8;

/// The fixed part of a frame (RFC 6455 §5.2), read without consuming it.
struct Header {
    opcode: u8,
    /// Bytes before the payload: 2, plus 2 or 8 for an extended length,
    /// plus 4 for a masking key.
    len: usize,
    mask: Option<[u8; 4]>,
    payload_len: u64,
}

impl Header {
    /// The header at the start of `buf`, once all of it has arrived.
    fn parse(buf: &[u8]) -> Option<Header> {
        let (first, second) = (*buf.first()?, *buf.get(1)?);
        let (payload_len, mut len) = match second & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = if second & 0x80 != 0 {
            let key: [u8; 4] = buf.get(len..len + 4)?.try_into().ok()?;
            len += 4;
            Some(key)
        } else {
            None
        };
        Some(Header {
            opcode: first & 0x0f,
            len,
            mask,
            payload_len,
        })
    }

    /// The payload, unmasked, once the whole frame has arrived.
    fn unmasked_payload(&self, buf: &[u8]) -> Option<Vec<u8>> {
        let end = self
            .len
            .checked_add(usize::try_from(self.payload_len).ok()?)?;
        let mut payload = buf.get(self.len..end)?.to_vec();
        if let Some(key) = self.mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        Some(payload)
    }
}

/// A close payload's code and reason (RFC 6455 §5.5.1, §7.4.1, §8.1). A
/// payload of one byte is left to the codec (1002).
fn check_close_payload(payload: &[u8]) -> Result<(), InboundError> {
    let Some(code) = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])) else {
        return Ok(());
    };
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(InboundError::BadCloseCode(code));
    }
    if std::str::from_utf8(&payload[2..]).is_err() {
        return Err(InboundError::InvalidUtf8);
    }
    Ok(())
}

fn text(bytes: Bytes) -> Result<Inbound, InboundError> {
    ByteString::try_from(bytes)
        .map(Inbound::Text)
        .map_err(|_| InboundError::InvalidUtf8)
}

/// The messages of one upgraded connection: a [`FrameReader`] fed from the
/// request payload. Yields every whole message, then either one
/// `Err(InboundError)` or one `Ok(Inbound::Ended)`, then `None`.
pub struct InboundStream {
    payload: Payload,
    reader: FrameReader,
    end: Option<StreamEnd>,
    done: bool,
}

impl InboundStream {
    /// Reads `payload` (the upgraded request's body) with messages of at
    /// most `limit` bytes.
    pub fn new(payload: Payload, limit: usize) -> Self {
        InboundStream {
            payload,
            reader: FrameReader::new(limit),
            end: None,
            done: false,
        }
    }
}

impl Stream for InboundStream {
    type Item = Result<Inbound, InboundError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.reader.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if let Some(mut end) = this.end.take() {
                this.done = true;
                end.unfinished_bytes = this.reader.unfinished_bytes();
                return Poll::Ready(Some(Ok(Inbound::Ended(end))));
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.reader.push_bytes(bytes),
                Poll::Ready(Some(Err(error))) => {
                    this.end = Some(StreamEnd {
                        unfinished_bytes: 0,
                        cause: end_cause(error),
                    })
                }
                Poll::Ready(None) => {
                    this.end = Some(StreamEnd {
                        unfinished_bytes: 0,
                        cause: None,
                    })
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What to report about a payload error that ended the stream: nothing for a
/// plain FIN (actix-http reports it as `Incomplete(None)` on an upgraded
/// connection), the transport's error otherwise.
fn end_cause(error: actix_http::error::PayloadError) -> Option<String> {
    match error {
        actix_http::error::PayloadError::Incomplete(None) => None,
        actix_http::error::PayloadError::Incomplete(Some(io)) => Some(io.to_string()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
