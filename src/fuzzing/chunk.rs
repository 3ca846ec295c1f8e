//! Targets for the data-channel chunk format (`protocol::chunk`).

use std::collections::HashMap;

use bytes::Bytes;

use super::input::Input;
use crate::protocol::chunk::{
    chunks, parse_chunk, ChunkError, Payload, Reassembler, ReassemblerLimits, DTYPE_BYTES,
    DTYPE_TEXT, HEADER_LEN,
};

/// One data-channel message, as a peer's connection parses it.
///
/// Checks: [`parse_chunk`] never panics; an accepted chunk has a known
/// dtype, `seq_id < seq_len` and the rest of the input as payload; its
/// length field is the byte count, or (text only) ProxyStore's character
/// count; and a single-chunk message that our encoder could have written
/// is written back byte for byte by [`chunks`].
pub fn chunk_parse(data: &[u8]) {
    let Ok(chunk) = parse_chunk(data) else {
        return;
    };
    let h = chunk.header;
    assert!(h.dtype == DTYPE_BYTES || h.dtype == DTYPE_TEXT);
    assert!(h.seq_id < h.seq_len);
    assert_eq!(chunk.payload, &data[HEADER_LEN..]);
    let text = std::str::from_utf8(chunk.payload).ok();
    if h.length as usize != data.len() {
        let chars = text.map(|t| t.chars().count() + HEADER_LEN);
        assert_eq!(h.dtype, DTYPE_TEXT, "short length accepted for bytes");
        assert_eq!(
            chars,
            Some(h.length as usize),
            "short length is not a char count"
        );
        return;
    }
    if h.seq_len != 1 {
        return;
    }
    let payload = match (h.dtype, text) {
        (DTYPE_BYTES, _) => Payload::Bytes(Bytes::copy_from_slice(chunk.payload)),
        (_, Some(text)) => Payload::Text(text.to_owned()),
        (_, None) => return,
    };
    let size = chunk.payload.len().max(4);
    let written: Vec<Bytes> = match chunks(payload, h.stream_id, size) {
        Ok(written) => written.collect(),
        Err(error) => panic!("cannot re-chunk an accepted chunk: {error}"),
    };
    assert_eq!(written.len(), 1);
    assert_eq!(&written[0][..], data, "re-chunked bytes differ");
}

/// Limits small enough that the fuzzer reaches every one of them.
const LIMITS: ReassemblerLimits = ReassemblerLimits {
    max_message_bytes: 512,
    max_pending_bytes: 2048,
    max_pending_streams: 4,
    dropped_streams_remembered: 4,
};

/// Stream ids at or above this are our encoder's messages; below, forged chunks.
const OWN_IDS: u32 = 1 << 31;

/// What the reassembler model knows about one of our own messages.
struct Sent {
    payload: Payload,
    chunks: usize,
    chunks_left: usize,
    refused: bool,
}

/// A connection's [`Reassembler`], fed a sequence of operations decoded from
/// the input: forged chunks (raw bytes, or well-formed headers with
/// fuzzer-chosen fields, on a few shared stream ids), messages cut by our
/// encoder whose chunks are queued in a fuzzer-chosen order and interleaved,
/// and `clear()`.
///
/// Checks: no panic; the limits hold after every chunk (pending bytes and
/// streams, message size); it never yields more payload bytes than it was
/// fed; each of our messages is yielded once, intact, exactly when its last
/// chunk arrives, unless a limit refused one of its chunks.
pub fn chunk_reassembler(data: &[u8]) {
    let mut input = Input::new(data);
    let mut model = Model::new();
    while !input.is_empty() {
        match input.byte() % 5 {
            0 => {
                let len = usize::from(input.byte());
                model.push_forged(Bytes::copy_from_slice(input.take(len)));
            }
            1 => {
                let forged = forged_chunk(&mut input);
                model.push_forged(forged);
            }
            2 => model.send(&mut input),
            3 => model.deliver(usize::from(input.byte() % 8) + 1),
            _ => model.clear(),
        }
    }
    model.deliver(usize::MAX);
    model.finish();
}

/// A chunk with a correct length field and fuzzer-chosen other fields.
fn forged_chunk(input: &mut Input<'_>) -> Bytes {
    let fields = input.byte();
    let dtype = if fields & 1 == 0 {
        DTYPE_BYTES
    } else {
        DTYPE_TEXT
    };
    let stream_id = u32::from(input.byte() % 6);
    let seq_id = u32::from(input.byte() % 5);
    let seq_len = u32::from(input.byte() % 5);
    let len = usize::from(input.byte());
    let payload = input.take(len);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&dtype.to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(&seq_id.to_be_bytes());
    out.extend_from_slice(&seq_len.to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

struct Model {
    reassembler: Reassembler,
    fed_payload: usize,
    yielded_payload: usize,
    sent: HashMap<u32, Sent>,
    queue: Vec<(u32, Bytes)>,
    next_id: u32,
}

impl Model {
    fn new() -> Self {
        Model {
            reassembler: Reassembler::new(LIMITS),
            fed_payload: 0,
            yielded_payload: 0,
            sent: HashMap::new(),
            queue: Vec::new(),
            next_id: 0,
        }
    }

    fn push(&mut self, chunk: Bytes) -> Result<Option<(u32, Payload)>, ChunkError> {
        if parse_chunk(&chunk).is_ok() {
            self.fed_payload += chunk.len() - HEADER_LEN;
        }
        let result = self.reassembler.push(chunk);
        let r = &self.reassembler;
        assert!(
            r.pending_bytes() <= LIMITS.max_pending_bytes,
            "budget broken"
        );
        assert!(r.pending_streams() <= LIMITS.max_pending_streams, "streams");
        if let Ok(Some((_, payload))) = &result {
            assert!(payload.len() <= LIMITS.max_message_bytes, "message cap");
            self.yielded_payload += payload.len();
            assert!(self.yielded_payload <= self.fed_payload, "more out than in");
        }
        result
    }

    fn push_forged(&mut self, chunk: Bytes) {
        if let Ok(Some((id, _))) = self.push(chunk) {
            assert!(id < OWN_IDS, "a forged chunk completed our stream {id}");
        }
    }

    /// Cuts one message and queues its chunks in a fuzzer-chosen order.
    fn send(&mut self, input: &mut Input<'_>) {
        let id = OWN_IDS + self.next_id;
        self.next_id += 1;
        let kind = input.byte();
        let size = usize::from(kind >> 2) + 4;
        let payload = if kind & 1 == 0 {
            let len = usize::from(input.byte()) * 3;
            Payload::Bytes(Bytes::copy_from_slice(input.take(len)))
        } else {
            Payload::Text(input.text(600))
        };
        let Ok(cut) = chunks(payload.clone(), id, size) else {
            panic!("cannot chunk {} bytes in {size}-byte chunks", payload.len());
        };
        let mut cut: Vec<Bytes> = cut.collect();
        for i in (1..cut.len()).rev() {
            cut.swap(i, usize::from(input.byte()) % (i + 1));
        }
        let chunks_left = cut.len();
        let at = usize::from(input.byte()) % (self.queue.len() + 1);
        self.queue.splice(at..at, cut.into_iter().map(|c| (id, c)));
        let sent = Sent {
            payload,
            chunks: chunks_left,
            chunks_left,
            refused: false,
        };
        self.sent.insert(id, sent);
    }

    /// Pushes up to `count` queued chunks, checking what comes out.
    fn deliver(&mut self, count: usize) {
        for _ in 0..count.min(self.queue.len()) {
            let (id, chunk) = self.queue.remove(0);
            let result = self.push(chunk);
            let Some(sent) = self.sent.get_mut(&id) else {
                continue;
            };
            sent.chunks_left -= 1;
            match result {
                Ok(Some((got, payload))) => {
                    assert_eq!(got, id, "another stream completed");
                    assert!(!sent.refused, "completed after a refused chunk");
                    assert_eq!(sent.chunks_left, 0, "completed early");
                    assert_eq!(payload, sent.payload, "message changed");
                    self.sent.remove(&id);
                }
                Ok(None) => assert!(
                    sent.chunks_left > 0 || sent.refused,
                    "last chunk gave nothing"
                ),
                Err(error) => {
                    assert!(is_limit(&error), "our chunk refused: {error}");
                    sent.refused = true;
                }
            }
        }
    }

    /// Forgets every incomplete message: those with chunks already pushed
    /// can no longer complete.
    fn clear(&mut self) {
        self.reassembler.clear();
        for sent in self.sent.values_mut() {
            sent.refused |= sent.chunks_left < sent.chunks;
        }
    }

    fn finish(self) {
        for (id, sent) in &self.sent {
            assert!(sent.refused, "stream {id} never completed");
        }
    }
}

/// Errors a limit (or an earlier refusal of the same stream) may cause.
fn is_limit(error: &ChunkError) -> bool {
    matches!(
        error,
        ChunkError::MessageTooLarge { .. }
            | ChunkError::BudgetExceeded { .. }
            | ChunkError::TooManyStreams { .. }
            | ChunkError::StreamDropped { .. }
    )
}
