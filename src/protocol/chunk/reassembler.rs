//! [`Reassembler`]: messages rebuilt from chunks arriving in any order, within
//! bounded memory (see the parent module for the rules).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::{parse_chunk, ChunkError, ChunkHeader, Payload, DTYPE_BYTES, HEADER_LEN};
use crate::defaults;

/// Bytes of bookkeeping counted per stored chunk on top of the chunk itself,
/// so that many tiny chunks still use up [`ReassemblerLimits::max_pending_bytes`].
const STORED_CHUNK_OVERHEAD: usize = 64;

/// Limits of a [`Reassembler`]; the defaults come from [`crate::defaults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblerLimits {
    /// Largest message, in payload bytes.
    pub max_message_bytes: usize,
    /// Most bytes held for all incomplete messages of the connection, counting
    /// each stored chunk plus a small per-chunk overhead.
    pub max_pending_bytes: usize,
    /// Most incomplete messages at once.
    pub max_pending_streams: usize,
    /// How many dropped stream ids are remembered to reject their later chunks.
    pub dropped_streams_remembered: usize,
}

impl Default for ReassemblerLimits {
    fn default() -> Self {
        ReassemblerLimits {
            max_message_bytes: defaults::PEER_MAX_MESSAGE_BYTES,
            max_pending_bytes: defaults::PEER_MAX_PENDING_BYTES,
            max_pending_streams: defaults::PEER_MAX_PENDING_STREAMS,
            dropped_streams_remembered: defaults::PEER_DROPPED_STREAMS_REMEMBERED,
        }
    }
}

/// An incomplete message.
#[derive(Debug)]
struct Partial {
    dtype: u16,
    seq_len: u32,
    parts: BTreeMap<u32, Bytes>,
    payload_bytes: usize,
    held_bytes: usize,
}

/// Reassembles messages from chunks arriving in any order; one per connection.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblerLimits,
    streams: HashMap<u32, Partial>,
    pending_bytes: usize,
    pub(super) dropped: VecDeque<u32>,
    pub(super) dropped_set: HashSet<u32>,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: ReassemblerLimits) -> Self {
        Reassembler {
            limits,
            ..Reassembler::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ReassemblerLimits {
        &self.limits
    }

    /// Bytes held for incomplete messages (chunks plus per-chunk overhead).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Number of incomplete messages.
    pub fn pending_streams(&self) -> usize {
        self.streams.len()
    }

    /// Forgets every incomplete message and dropped stream (the peer went away).
    pub fn clear(&mut self) {
        self.streams = HashMap::new();
        self.pending_bytes = 0;
        self.dropped = VecDeque::new();
        self.dropped_set = HashSet::new();
    }

    /// Adds one received chunk. Returns the stream id and message when this
    /// chunk completes it, `None` while it is incomplete, or the error; a
    /// stream-level error drops that stream and frees its state.
    ///
    /// `chunk` should be exactly one data-channel message: stored chunks keep
    /// its buffer alive, and the budget counts `chunk.len()`.
    pub fn push(&mut self, chunk: Bytes) -> Result<Option<(u32, Payload)>, ChunkError> {
        let header = parse_chunk(&chunk)?.header;
        let id = header.stream_id;
        if self.dropped_set.contains(&id) {
            return Err(ChunkError::StreamDropped { stream_id: id });
        }
        let payload = chunk.slice(HEADER_LEN..);
        if header.seq_len == 1 && !self.streams.contains_key(&id) {
            if payload.len() > self.limits.max_message_bytes {
                let limit = self.limits.max_message_bytes;
                let error = ChunkError::MessageTooLarge {
                    stream_id: id,
                    limit,
                };
                return Err(self.drop_stream(id, error));
            }
            return single(id, header.dtype, payload).map(Some);
        }
        self.store(header, payload, chunk.len())
    }

    /// Stores one chunk of a multi-chunk message; completes it when all are in.
    fn store(
        &mut self,
        header: ChunkHeader,
        payload: Bytes,
        chunk_len: usize,
    ) -> Result<Option<(u32, Payload)>, ChunkError> {
        let id = header.stream_id;
        let held = chunk_len + STORED_CHUNK_OVERHEAD;
        if !self.streams.contains_key(&id) && self.streams.len() >= self.limits.max_pending_streams
        {
            return Err(ChunkError::TooManyStreams {
                stream_id: id,
                limit: self.limits.max_pending_streams,
            });
        }
        let partial = self.streams.entry(id).or_insert_with(|| Partial {
            dtype: header.dtype,
            seq_len: header.seq_len,
            parts: BTreeMap::new(),
            payload_bytes: 0,
            held_bytes: 0,
        });
        let over_budget = self.pending_bytes + held > self.limits.max_pending_bytes;
        if let Some(error) = check(partial, &header, payload.len(), over_budget, &self.limits) {
            return Err(self.drop_stream(id, error));
        }
        partial.payload_bytes += payload.len();
        partial.held_bytes += held;
        partial.parts.insert(header.seq_id, payload);
        self.pending_bytes += held;
        if partial.parts.len() < partial.seq_len as usize {
            return Ok(None);
        }
        let done = self
            .remove(id)
            .ok_or(ChunkError::StreamDropped { stream_id: id })?;
        let mut whole = Vec::with_capacity(done.payload_bytes);
        for part in done.parts.values() {
            whole.extend_from_slice(part);
        }
        let message = match done.dtype {
            DTYPE_BYTES => Payload::Bytes(whole.into()),
            _ => Payload::Text(
                String::from_utf8(whole).map_err(|_| ChunkError::InvalidUtf8 { stream_id: id })?,
            ),
        };
        Ok(Some((id, message)))
    }

    /// Removes a stream's state and returns it, keeping `pending_bytes` true.
    fn remove(&mut self, id: u32) -> Option<Partial> {
        let partial = self.streams.remove(&id)?;
        self.pending_bytes -= partial.held_bytes;
        Some(partial)
    }

    /// Frees a failed stream, remembers its id (bounded) and returns `error`.
    fn drop_stream(&mut self, id: u32, error: ChunkError) -> ChunkError {
        self.remove(id);
        let keep = self.limits.dropped_streams_remembered;
        if keep > 0 && self.dropped_set.insert(id) {
            self.dropped.push_back(id);
            while self.dropped.len() > keep {
                if let Some(old) = self.dropped.pop_front() {
                    self.dropped_set.remove(&old);
                }
            }
        }
        error
    }
}

/// The first reason a chunk cannot join `partial`, if any.
fn check(
    partial: &Partial,
    header: &ChunkHeader,
    payload_len: usize,
    over_budget: bool,
    limits: &ReassemblerLimits,
) -> Option<ChunkError> {
    let stream_id = header.stream_id;
    if partial.dtype != header.dtype {
        Some(ChunkError::Inconsistent {
            stream_id,
            field: "dtype",
        })
    } else if partial.seq_len != header.seq_len {
        Some(ChunkError::Inconsistent {
            stream_id,
            field: "seq len",
        })
    } else if partial.parts.contains_key(&header.seq_id) {
        Some(ChunkError::Duplicate {
            stream_id,
            seq_id: header.seq_id,
        })
    } else if partial.payload_bytes + payload_len > limits.max_message_bytes {
        Some(ChunkError::MessageTooLarge {
            stream_id,
            limit: limits.max_message_bytes,
        })
    } else if over_budget {
        Some(ChunkError::BudgetExceeded {
            stream_id,
            limit: limits.max_pending_bytes,
        })
    } else {
        None
    }
}

/// Turns a single-chunk message's payload into a [`Payload`].
fn single(stream_id: u32, dtype: u16, data: Bytes) -> Result<(u32, Payload), ChunkError> {
    if dtype == DTYPE_BYTES {
        return Ok((stream_id, Payload::Bytes(data)));
    }
    match std::str::from_utf8(&data) {
        Ok(text) => Ok((stream_id, Payload::Text(text.to_owned()))),
        Err(_) => Err(ChunkError::InvalidUtf8 { stream_id }),
    }
}
