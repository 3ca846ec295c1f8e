//! The data-channel chunk format (shared/DESIGN.md "Data-channel chunk format").
//!
//! Every data-channel message is one chunk: an 18-byte big-endian header
//! (dtype `u16`, length `u32` = 18 + payload bytes, stream id `u32`, seq id
//! `u32`, seq len `u32`) followed by the payload. [`chunks`] splits a message
//! into chunks, [`parse_chunk`] checks one chunk, and a [`Reassembler`] (one
//! per connection) puts messages back together from chunks arriving in any
//! order over unordered channels. Plain data: no actix, no I/O.
//!
//! # Compatibility with ProxyStore 1.1 (`proxystore/p2p/chunks.py`)
//!
//! - **Empty messages.** ProxyStore's `chunkify` yields no chunk for an empty
//!   message, so it is never delivered. We send one chunk with seq len 1 and an
//!   empty payload; ProxyStore's receiver accepts and delivers it.
//! - **Text length.** ProxyStore writes `18 + len(str)`, counting characters,
//!   and splits text every 32 768 *characters*. We write the byte count. Our
//!   text chunks are cut on character boundaries, so every chunk is valid UTF-8
//!   on its own, as ProxyStore's receiver (which decodes each chunk) needs.
//! - **Receiving ProxyStore's non-ASCII text.** Such a chunk has dtype 2 and a
//!   length field smaller than the chunk. [`parse_chunk`] accepts it, with the
//!   whole rest of the chunk as payload, exactly when that rest is valid UTF-8
//!   whose number of characters is the length field minus 18: that is the
//!   chunk ProxyStore's `Chunk.__bytes__` writes for this text. Any other short
//!   length is a [`ChunkError::LengthMismatch`]. (ProxyStore's own receiver
//!   cuts such a chunk at the length field, so between two Python peers
//!   non-ASCII text arrives truncated or fails to decode.)
//! - **Stricter than ProxyStore.** It ignores bytes past the length field and
//!   does not notice duplicate or inconsistent chunks; we reject them, since
//!   ProxyStore never sends them.
//!
//! # Memory bounds
//!
//! A [`Reassembler`] holds at most [`ReassemblerLimits::max_pending_streams`]
//! incomplete messages and [`ReassemblerLimits::max_pending_bytes`] bytes for
//! them; a message larger than [`ReassemblerLimits::max_message_bytes`] is
//! dropped. A stream that fails is freed at once and its id remembered (a
//! bounded list), so its later chunks are rejected without being stored.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes in a chunk header.
pub const HEADER_LEN: usize = 18;
/// `dtype` of a chunk carrying bytes.
pub const DTYPE_BYTES: u16 = 1;
/// `dtype` of a chunk carrying (part of) a UTF-8 string.
pub const DTYPE_TEXT: u16 = 2;
/// Smallest chunk size [`chunks`] accepts: one UTF-8 character must fit.
pub const MIN_CHUNK_SIZE: usize = 4;

/// A chunk that could not be parsed, or a message that could not be reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk is shorter than its header.
    #[error("chunk of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The length field does not match the chunk's size.
    #[error("chunk length field says {declared} bytes but the chunk has {actual}")]
    LengthMismatch {
        /// The length field.
        declared: u32,
        /// Bytes received.
        actual: usize,
    },
    /// The dtype is neither 1 (bytes) nor 2 (text).
    #[error("unknown chunk dtype {0}")]
    UnknownDType(u16),
    /// The seq len field is 0.
    #[error("chunk of stream {stream_id} has seq len 0")]
    ZeroSeqLen {
        /// The chunk's stream id.
        stream_id: u32,
    },
    /// The seq id is not below the seq len.
    #[error("chunk seq id {seq_id} is not below seq len {seq_len}")]
    SeqIdOutOfRange {
        /// The chunk's seq id.
        seq_id: u32,
        /// The chunk's seq len.
        seq_len: u32,
    },
    /// The chunk size given to [`chunks`] is too small.
    #[error("chunk size {0} is below the minimum of {MIN_CHUNK_SIZE} bytes")]
    ChunkSizeTooSmall(usize),
    /// A message needs more chunks, or a chunk more bytes, than the header can count.
    #[error("message of {0} bytes does not fit the chunk header's 32-bit fields")]
    MessageTooLong(usize),
    /// The same chunk of a stream arrived twice; the stream is dropped.
    #[error("duplicate chunk {seq_id} of stream {stream_id}")]
    Duplicate {
        /// The stream id.
        stream_id: u32,
        /// The repeated seq id.
        seq_id: u32,
    },
    /// Chunks of one stream disagree on dtype or seq len; the stream is dropped.
    #[error("chunks of stream {stream_id} disagree on {field}")]
    Inconsistent {
        /// The stream id.
        stream_id: u32,
        /// `"dtype"` or `"seq len"`.
        field: &'static str,
    },
    /// The message grew past the per-message cap; the stream is dropped.
    #[error("message of stream {stream_id} exceeds the cap of {limit} bytes")]
    MessageTooLarge {
        /// The stream id.
        stream_id: u32,
        /// The cap in bytes.
        limit: usize,
    },
    /// Incomplete messages would hold more than the connection's budget; the stream is dropped.
    #[error("stream {stream_id} would exceed the reassembly budget of {limit} bytes")]
    BudgetExceeded {
        /// The stream id.
        stream_id: u32,
        /// The budget in bytes.
        limit: usize,
    },
    /// A new stream was refused because too many messages are incomplete.
    #[error("stream {stream_id} refused: {limit} incomplete messages already")]
    TooManyStreams {
        /// The refused stream id.
        stream_id: u32,
        /// The limit on incomplete messages.
        limit: usize,
    },
    /// A chunk of a stream that was dropped earlier; it is discarded.
    #[error("chunk of stream {stream_id}, which was dropped earlier")]
    StreamDropped {
        /// The stream id.
        stream_id: u32,
    },
    /// A complete text message is not valid UTF-8.
    #[error("text message of stream {stream_id} is not valid UTF-8")]
    InvalidUtf8 {
        /// The stream id.
        stream_id: u32,
    },
}

/// A whole message: bytes or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Binary data (dtype 1).
    Bytes(Bytes),
    /// A UTF-8 string (dtype 2).
    Text(String),
}

impl Payload {
    /// The dtype written in this message's chunks.
    pub fn dtype(&self) -> u16 {
        match self {
            Payload::Bytes(_) => DTYPE_BYTES,
            Payload::Text(_) => DTYPE_TEXT,
        }
    }

    /// The message's bytes (UTF-8 for text).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::Text(s) => s.as_bytes(),
        }
    }

    /// Length in bytes (UTF-8 bytes for text).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Bytes(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Payload::Bytes(b.into())
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload::Text(s)
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload::Text(s.to_owned())
    }
}

/// The decoded header of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// [`DTYPE_BYTES`] or [`DTYPE_TEXT`].
    pub dtype: u16,
    /// The length field as sent (see the module docs for ProxyStore's text).
    pub length: u32,
    /// Which message this chunk belongs to.
    pub stream_id: u32,
    /// Position of this chunk in its message, from 0.
    pub seq_id: u32,
    /// Number of chunks in the message.
    pub seq_len: u32,
}

/// A parsed chunk: its header and its payload (borrowed from the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The header.
    pub header: ChunkHeader,
    /// The payload bytes.
    pub payload: &'a [u8],
}

fn be_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Parses and checks one chunk.
///
/// Errors: [`ChunkError::TooShort`], [`ChunkError::UnknownDType`],
/// [`ChunkError::LengthMismatch`], [`ChunkError::ZeroSeqLen`],
/// [`ChunkError::SeqIdOutOfRange`].
pub fn parse_chunk(data: &[u8]) -> Result<Chunk<'_>, ChunkError> {
    if data.len() < HEADER_LEN {
        return Err(ChunkError::TooShort { len: data.len() });
    }
    let header = ChunkHeader {
        dtype: u16::from_be_bytes([data[0], data[1]]),
        length: be_u32(data, 2),
        stream_id: be_u32(data, 6),
        seq_id: be_u32(data, 10),
        seq_len: be_u32(data, 14),
    };
    if header.dtype != DTYPE_BYTES && header.dtype != DTYPE_TEXT {
        return Err(ChunkError::UnknownDType(header.dtype));
    }
    let payload = &data[HEADER_LEN..];
    if !length_matches(&header, payload, data.len()) {
        return Err(ChunkError::LengthMismatch {
            declared: header.length,
            actual: data.len(),
        });
    }
    if header.seq_len == 0 {
        return Err(ChunkError::ZeroSeqLen {
            stream_id: header.stream_id,
        });
    }
    if header.seq_id >= header.seq_len {
        return Err(ChunkError::SeqIdOutOfRange {
            seq_id: header.seq_id,
            seq_len: header.seq_len,
        });
    }
    Ok(Chunk { header, payload })
}

/// The length rule: exact byte count, or ProxyStore's character count for text.
fn length_matches(header: &ChunkHeader, payload: &[u8], total: usize) -> bool {
    let declared = header.length as usize;
    if declared == total {
        return true;
    }
    if header.dtype != DTYPE_TEXT || declared < HEADER_LEN || declared > total {
        return false;
    }
    match std::str::from_utf8(payload) {
        Ok(text) => text.chars().count() == declared - HEADER_LEN,
        Err(_) => false,
    }
}

/// Splits `payload` into chunks of at most `chunk_size` payload bytes, for
/// stream `stream_id`. Text is cut on character boundaries, so each text chunk
/// is valid UTF-8. An empty message gives one chunk with an empty payload.
///
/// Errors: [`ChunkError::ChunkSizeTooSmall`] below [`MIN_CHUNK_SIZE`],
/// [`ChunkError::MessageTooLong`] when a field would overflow 32 bits.
pub fn chunks(payload: Payload, stream_id: u32, chunk_size: usize) -> Result<Chunks, ChunkError> {
    if chunk_size < MIN_CHUNK_SIZE {
        return Err(ChunkError::ChunkSizeTooSmall(chunk_size));
    }
    let len = payload.len();
    if chunk_size.min(len).saturating_add(HEADER_LEN) > u32::MAX as usize {
        return Err(ChunkError::MessageTooLong(len));
    }
    let mut chunks = Chunks {
        payload,
        stream_id,
        chunk_size,
        seq_len: 0,
        next_seq: 0,
        offset: 0,
    };
    let count = match &chunks.payload {
        Payload::Bytes(_) => len.div_ceil(chunk_size).max(1),
        Payload::Text(_) => {
            let mut n = 0usize;
            let mut at = 0;
            while at < len {
                at = chunks.chunk_end(at);
                n += 1;
            }
            n.max(1)
        }
    };
    chunks.seq_len = u32::try_from(count).map_err(|_| ChunkError::MessageTooLong(len))?;
    Ok(chunks)
}

/// The chunks of one message, each a ready-to-send `Bytes` (see [`chunks`]).
#[derive(Debug, Clone)]
pub struct Chunks {
    payload: Payload,
    stream_id: u32,
    chunk_size: usize,
    seq_len: u32,
    next_seq: u32,
    offset: usize,
}

impl Chunks {
    /// Number of chunks of the message (the seq len field).
    pub fn seq_len(&self) -> u32 {
        self.seq_len
    }

    /// End of the chunk starting at `start`: `chunk_size` bytes on, moved back to a
    /// character boundary for text.
    fn chunk_end(&self, start: usize) -> usize {
        let end = start.saturating_add(self.chunk_size);
        match &self.payload {
            Payload::Text(text) => crate::protocol::floor_char_boundary(text, end),
            Payload::Bytes(bytes) => end.min(bytes.len()),
        }
    }
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.next_seq >= self.seq_len {
            return None;
        }
        let end = self.chunk_end(self.offset);
        let slice = &self.payload.as_bytes()[self.offset..end];
        let mut out = BytesMut::with_capacity(HEADER_LEN + slice.len());
        out.put_u16(self.payload.dtype());
        // Checked in `chunks`: a chunk is at most chunk_size bytes and fits in u32.
        out.put_u32((HEADER_LEN + slice.len()) as u32);
        out.put_u32(self.stream_id);
        out.put_u32(self.next_seq);
        out.put_u32(self.seq_len);
        out.put_slice(slice);
        self.offset = end;
        self.next_seq += 1;
        Some(out.freeze())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.seq_len - self.next_seq) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Chunks {}

mod reassembler;

pub use reassembler::{Reassembler, ReassemblerLimits};

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
