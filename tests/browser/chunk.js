// The data-channel chunk format of Switchboard and ProxyStore (DESIGN.md
// "Data-channel chunk format"; src/protocol/chunk/ is the reference):
//
//   offset 0  u16 dtype      1 = bytes, 2 = UTF-8 text
//   offset 2  u32 length     18 + payload bytes
//   offset 6  u32 stream id  per-connection message counter, from 0
//   offset 10 u32 seq id     0-based position of this chunk in its message
//   offset 14 u32 seq len    chunks in the message
//   offset 18 ...            payload
//
// All fields big-endian. An empty message is one chunk with seq len 1 and no
// payload; text is cut on UTF-8 character boundaries, so every text chunk is
// valid UTF-8 on its own. The parser is as strict as Switchboard's: the length
// field must be the chunk's byte count, duplicate or inconsistent chunks drop
// their message.

export const HEADER_LEN = 18;
export const DTYPE_BYTES = 1;
export const DTYPE_TEXT = 2;

/** Payload bytes per chunk (ProxyStore's 32 KiB). */
export const CHUNK_SIZE = 32 * 1024;

/** The largest chunk end at or before `end` that is a UTF-8 character boundary. */
function textBoundary(bytes, start, end) {
  let cut = end;
  // Continuation bytes are 0b10xxxxxx; a chunk never ends before one.
  while (cut > start && cut < bytes.length && (bytes[cut] & 0xc0) === 0x80) {
    cut -= 1;
  }
  return cut;
}

/**
 * Splits one message into chunks (Uint8Array each).
 * @param {number} dtype DTYPE_BYTES or DTYPE_TEXT
 * @param {Uint8Array} bytes the payload (UTF-8 for text)
 * @param {number} streamId the message's stream id
 * @param {number} chunkSize payload bytes per chunk
 */
export function chunkMessage(dtype, bytes, streamId, chunkSize = CHUNK_SIZE) {
  const bounds = [];
  let at = 0;
  while (at < bytes.length) {
    let end = Math.min(at + chunkSize, bytes.length);
    if (dtype === DTYPE_TEXT) {
      end = textBoundary(bytes, at, end);
    }
    bounds.push([at, end]);
    at = end;
  }
  if (bounds.length === 0) {
    bounds.push([0, 0]);
  }
  return bounds.map(([start, end], seqId) => {
    const chunk = new Uint8Array(HEADER_LEN + end - start);
    const view = new DataView(chunk.buffer);
    view.setUint16(0, dtype);
    view.setUint32(2, chunk.length);
    view.setUint32(6, streamId);
    view.setUint32(10, seqId);
    view.setUint32(14, bounds.length);
    chunk.set(bytes.subarray(start, end), HEADER_LEN);
    return chunk;
  });
}

/** Parses and checks one chunk; throws an Error naming what is wrong. */
export function parseChunk(chunk) {
  if (chunk.length < HEADER_LEN) {
    throw new Error(`chunk of ${chunk.length} bytes is shorter than the header`);
  }
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const header = {
    dtype: view.getUint16(0),
    length: view.getUint32(2),
    streamId: view.getUint32(6),
    seqId: view.getUint32(10),
    seqLen: view.getUint32(14),
  };
  if (header.dtype !== DTYPE_BYTES && header.dtype !== DTYPE_TEXT) {
    throw new Error(`unknown dtype ${header.dtype}`);
  }
  if (header.length !== chunk.length) {
    throw new Error(`length field ${header.length} but the chunk has ${chunk.length} bytes`);
  }
  if (header.seqLen === 0 || header.seqId >= header.seqLen) {
    throw new Error(`seq id ${header.seqId} of seq len ${header.seqLen}`);
  }
  return { header, payload: chunk.subarray(HEADER_LEN) };
}

/** Puts messages back together from chunks arriving in any order. */
export class Reassembler {
  constructor() {
    this.streams = new Map();
  }

  /**
   * Takes one chunk. Returns null while its message is incomplete, else
   * { streamId, dtype, bytes, firstAt } with the whole payload; throws on a
   * bad, duplicate or inconsistent chunk (the message is then dropped).
   */
  push(chunk, now) {
    const { header, payload } = parseChunk(chunk);
    let stream = this.streams.get(header.streamId);
    if (stream === undefined) {
      stream = {
        dtype: header.dtype,
        seqLen: header.seqLen,
        parts: new Array(header.seqLen),
        received: 0,
        size: 0,
        firstAt: now,
      };
      this.streams.set(header.streamId, stream);
    }
    const fail = (why) => {
      this.streams.delete(header.streamId);
      throw new Error(`stream ${header.streamId}: ${why}`);
    };
    if (stream.dtype !== header.dtype) fail('chunks disagree on dtype');
    if (stream.seqLen !== header.seqLen) fail('chunks disagree on seq len');
    if (stream.parts[header.seqId] !== undefined) fail(`duplicate chunk ${header.seqId}`);
    // The chunk's buffer belongs to the event that delivered it: keep a view.
    stream.parts[header.seqId] = payload;
    stream.received += 1;
    stream.size += payload.length;
    if (stream.received < stream.seqLen) {
      return null;
    }
    this.streams.delete(header.streamId);
    const bytes = new Uint8Array(stream.size);
    let at = 0;
    for (const part of stream.parts) {
      bytes.set(part, at);
      at += part.length;
    }
    return { streamId: header.streamId, dtype: stream.dtype, bytes, firstAt: stream.firstAt };
  }
}
