// A Switchboard / ProxyStore peer in plain browser JavaScript.
//
// Relay: one WebSocket, JSON text frames discriminated by `message_type`
// (DESIGN.md "Relay wire protocol"). The peer registers a UUID, then sends and
// receives `peer_connection` messages whose `description` is the JSON text
// {"sdp": ..., "type": "offer"|"answer"}. Like ProxyStore's aiortc peers there
// is no trickle ICE: a description is sent once gathering is complete, with
// every candidate inside the SDP.
//
// Data: the offerer opens N unordered, reliable data channels labelled
// `p2p-{i}-{N}` before its offer; the answerer learns N from the first label.
// A connection is ready once all N channels are open. Every message is cut
// into chunks (chunk.js); chunk i goes on channel i mod N.
//
// The driver (driver.mjs) calls `window.sb.run(command)` and receives events
// through `window.sbEmit(json)`; `run` returns the command's result.

import { CHUNK_SIZE, DTYPE_BYTES, DTYPE_TEXT, Reassembler, chunkMessage } from './chunk.js';

/** A channel with more than this buffered waits before the next chunk. */
const HIGH_WATER = 1 << 20;
/** ...until it has drained below this. */
const LOW_WATER = 256 * 1024;
/** Longest wait for ICE gathering, a connection or a drain, in ms. */
const WAIT_MS = 20000;
/** Text longer than this (in bytes) is reported by length and hash only. */
const TEXT_ECHO_LIMIT = 4096;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function emit(event) {
  const line = JSON.stringify(event);
  if (typeof window.sbEmit === 'function') {
    window.sbEmit(line);
  } else {
    console.log(line);
  }
}

function withTimeout(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** byte i = (131 * i + seed) mod 251, like tests/interop/peer.py's --bytes-len. */
export function pattern(len, seed) {
  const bytes = new Uint8Array(len);
  for (let i = 0; i < len; i += 1) {
    bytes[i] = (131 * i + seed) % 251;
  }
  return bytes;
}

/** (index, total) of a `p2p-{i}-{N}` label, or null. */
function parseLabel(label) {
  const match = /^p2p-(\d+)-(\d+)$/.exec(label);
  if (!match) return null;
  const index = Number(match[1]);
  const total = Number(match[2]);
  if (total < 1 || total > 64 || index >= total) return null;
  return { index, total };
}

/** Keeps only IPv4 loopback UDP candidates in an SDP (the tests' network). */
function loopbackOnly(sdp) {
  return sdp
    .split('\r\n')
    .filter((line) => {
      if (!line.startsWith('a=candidate:')) return true;
      const fields = line.split(' ');
      return fields[2].toLowerCase() === 'udp' && fields[4] === '127.0.0.1';
    })
    .join('\r\n');
}

function waitGathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return withTimeout(
    new Promise((resolve) => {
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    }),
    'ICE gathering',
  );
}

/** One peer connection and its channels. */
class Connection {
  constructor(peerUuid, role, relay) {
    this.peer = peerUuid;
    this.role = role;
    this.relay = relay;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.channels = [];
    this.total = 0;
    this.opened = 0;
    this.nextStream = 0;
    this.reassembler = new Reassembler();
    this.delivery = Promise.resolve();
    this.closed = false;
    this.readyAt = null;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // Nobody may be waiting yet; the rejection is still reported by `fail`.
    this.ready.catch(() => {});
    this.pc.addEventListener('datachannel', (event) => this.addChannel(event.channel));
    this.pc.addEventListener('connectionstatechange', () => {
      const state = this.pc.connectionState;
      if (state === 'failed' || state === 'closed') this.fail(`connection ${state}`);
    });
  }

  addChannel(channel) {
    const parsed = parseLabel(channel.label);
    if (parsed === null) return this.fail(`bad channel label ${channel.label}`);
    if (this.total === 0) {
      this.total = parsed.total;
      this.channels = new Array(parsed.total);
    }
    if (parsed.total !== this.total || this.channels[parsed.index] !== undefined) {
      return this.fail(`unexpected channel ${channel.label}`);
    }
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = LOW_WATER;
    this.channels[parsed.index] = channel;
    channel.addEventListener('message', (event) => this.onChunk(event.data));
    channel.addEventListener('close', () => this.fail(`channel ${channel.label} closed`));
    if (channel.readyState === 'open') {
      this.onOpen();
    } else {
      channel.addEventListener('open', () => this.onOpen());
    }
  }

  onOpen() {
    this.opened += 1;
    if (this.opened < this.total) return;
    this.readyAt = performance.now();
    this.resolveReady();
    this.selectedPair().then((pair) => {
      emit({
        event: 'ready',
        peer: this.peer,
        role: this.role,
        channels: this.total,
        ready_epoch_ms: performance.timeOrigin + this.readyAt,
        pair,
      });
    });
  }

  /** The candidate pair ICE selected: address and type of each end. */
  async selectedPair() {
    const stats = await this.pc.getStats();
    let pairId = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    const pair = pairId && stats.get(pairId);
    if (!pair) return null;
    const end = (id) => {
      const c = stats.get(id);
      return c ? { address: c.address, port: c.port, type: c.candidateType } : null;
    };
    return { local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) };
  }

  onChunk(data) {
    const now = performance.now();
    let message;
    try {
      message = this.reassembler.push(new Uint8Array(data), now);
    } catch (error) {
      emit({ event: 'error', peer: this.peer, message: `bad chunk: ${error.message}` });
      return;
    }
    if (message !== null) {
      // Hashing is asynchronous: report messages in the order they completed.
      this.delivery = this.delivery.then(() => this.deliver(message));
    }
  }

  async deliver(message) {
    const hash = await sha256(message.bytes);
    const verifiedAt = performance.now();
    const event = {
      event: 'recv',
      peer: this.peer,
      stream: message.streamId,
      kind: message.dtype === DTYPE_TEXT ? 'text' : 'bytes',
      len: message.bytes.length,
      sha256: hash,
      ready_to_first_chunk_ms: message.firstAt - this.readyAt,
      ready_to_verified_ms: verifiedAt - this.readyAt,
      first_chunk_to_verified_ms: verifiedAt - message.firstAt,
    };
    if (message.dtype === DTYPE_TEXT) {
      try {
        const text = decoder.decode(message.bytes);
        if (message.bytes.length <= TEXT_ECHO_LIMIT) event.text = text;
      } catch (error) {
        emit({ event: 'error', peer: this.peer, message: `text is not UTF-8: ${error.message}` });
        return;
      }
    }
    emit(event);
  }

  /** Sends one message; resolves once every chunk has left the channels' buffers. */
  async send(dtype, bytes) {
    await withTimeout(this.ready, 'connection ready');
    const streamId = this.nextStream;
    this.nextStream = (this.nextStream + 1) >>> 0;
    const chunks = chunkMessage(dtype, bytes, streamId, CHUNK_SIZE);
    for (let i = 0; i < chunks.length; i += 1) {
      const channel = this.channels[i % this.total];
      if (channel.bufferedAmount > HIGH_WATER) await this.drained(channel, LOW_WATER);
      if (this.closed) throw new Error('connection closed while sending');
      channel.send(chunks[i]);
    }
    for (const channel of this.channels) await this.drained(channel, 0);
    return { stream: streamId, chunks: chunks.length };
  }

  drained(channel, below) {
    if (channel.bufferedAmount <= below) return Promise.resolve();
    const wait = new Promise((resolve) => {
      const check = () => {
        if (channel.bufferedAmount <= below || this.closed) {
          channel.removeEventListener('bufferedamountlow', check);
          clearInterval(poll);
          resolve();
        }
      };
      // `bufferedamountlow` fires only when crossing the threshold: poll for 0.
      const poll = setInterval(check, 2);
      channel.addEventListener('bufferedamountlow', check);
    });
    return withTimeout(wait, 'draining a channel');
  }

  fail(why) {
    if (this.closed) return;
    this.closed = true;
    this.rejectReady(new Error(why));
    emit({ event: 'closed', peer: this.peer, reason: why });
    this.relay.forget(this);
    this.pc.close();
  }
}

/** The relay session and the connections it negotiates. */
class Relay {
  constructor() {
    this.ws = null;
    this.uuid = null;
    this.name = null;
    this.connections = new Map();
  }

  register(url, uuid, name) {
    this.uuid = uuid;
    this.name = name;
    return withTimeout(
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        this.ws = ws;
        ws.addEventListener('open', () => {
          ws.send(JSON.stringify({ name, uuid, message_type: 'relay_registration' }));
        });
        ws.addEventListener('message', (event) => {
          let message;
          try {
            message = JSON.parse(event.data);
          } catch (error) {
            emit({ event: 'error', message: `relay sent non-JSON: ${error.message}` });
            return;
          }
          if (message.message_type === 'relay_response') {
            if (message.success !== false && !message.error) {
              emit({ event: 'registered', uuid });
              resolve({ uuid });
            } else {
              reject(new Error(`registration refused: ${message.message}`));
            }
          } else if (message.message_type === 'peer_connection') {
            this.onPeerConnection(message).catch((error) => {
              emit({ event: 'error', peer: message.source_uuid, message: String(error) });
            });
          } else {
            emit({ event: 'error', message: `unknown relay message ${event.data}` });
          }
        });
        ws.addEventListener('close', (event) => {
          emit({ event: 'relay-closed', code: event.code, reason: event.reason });
          reject(new Error(`relay closed ${event.code}`));
        });
      }),
      'relay registration',
    );
  }

  sendDescription(peer, description) {
    this.ws.send(
      JSON.stringify({
        source_uuid: this.uuid,
        source_name: this.name,
        peer_uuid: peer,
        description_type: description.type,
        description: JSON.stringify({ sdp: description.sdp, type: description.type }),
        error: null,
        message_type: 'peer_connection',
      }),
    );
  }

  async onPeerConnection(message) {
    const peer = message.source_uuid;
    if (message.error) {
      // The relay returned our own request: the peer is unknown or not ours.
      const connection = this.connections.get(message.peer_uuid);
      if (connection) connection.fail(`relay: ${message.error}`);
      emit({ event: 'relay-error', peer: message.peer_uuid, message: message.error });
      return;
    }
    const description = JSON.parse(message.description);
    if (message.description_type === 'offer') {
      const old = this.connections.get(peer);
      if (old) old.fail('replaced by a new offer');
      const connection = new Connection(peer, 'answerer', this);
      this.connections.set(peer, connection);
      await connection.pc.setRemoteDescription(description);
      await connection.pc.setLocalDescription();
      await waitGathered(connection.pc);
      const local = connection.pc.localDescription;
      this.sendDescription(peer, { type: 'answer', sdp: loopbackOnly(local.sdp) });
      emit({ event: 'answer-sent', peer });
    } else if (message.description_type === 'answer') {
      const connection = this.connections.get(peer);
      if (!connection || connection.role !== 'offerer') {
        throw new Error('answer without an offer');
      }
      await connection.pc.setRemoteDescription(description);
    } else {
      throw new Error(`unknown description type ${message.description_type}`);
    }
  }

  /** The connection to `peer`, opening one as offerer with `channels` channels. */
  async connect(peer, channels) {
    const existing = this.connections.get(peer);
    if (existing) return existing;
    const connection = new Connection(peer, 'offerer', this);
    this.connections.set(peer, connection);
    for (let i = 0; i < channels; i += 1) {
      connection.addChannel(connection.pc.createDataChannel(`p2p-${i}-${channels}`, { ordered: false }));
    }
    await connection.pc.setLocalDescription();
    await waitGathered(connection.pc);
    this.sendDescription(peer, { type: 'offer', sdp: loopbackOnly(connection.pc.localDescription.sdp) });
    emit({ event: 'offer-sent', peer });
    return connection;
  }

  forget(connection) {
    if (this.connections.get(connection.peer) === connection) {
      this.connections.delete(connection.peer);
    }
  }
}

const relay = new Relay();

/** Media permission: only then does Chromium offer host (here loopback) candidates. */
async function grantMedia() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  // Keep the stream: the permission is what matters, but an open capture is
  // the state Chromium's candidate filter is documented for.
  window.sbMedia = stream;
  return stream.getTracks().length;
}

/** The payload a `send` command describes: text, or a byte pattern. */
function payloadOf(command) {
  if (command.kind === 'text') return [DTYPE_TEXT, encoder.encode(command.text)];
  if (command.kind === 'bytes') return [DTYPE_BYTES, pattern(command.len, command.seed ?? 0)];
  throw new Error(`unknown kind ${command.kind}`);
}

async function run(command) {
  switch (command.cmd) {
    case 'media':
      return { tracks: await grantMedia() };
    case 'register':
      return relay.register(command.relay, command.uuid, command.name ?? 'chromium');
    case 'connect': {
      const connection = await relay.connect(command.peer, command.channels ?? 1);
      await withTimeout(connection.ready, 'connection ready');
      return { role: connection.role, channels: connection.total };
    }
    case 'send': {
      const [dtype, bytes] = payloadOf(command);
      const connection = relay.connections.get(command.peer) ?? (await relay.connect(command.peer, command.channels ?? 1));
      const started = performance.now();
      const sent = await connection.send(dtype, bytes);
      return { ...sent, len: bytes.length, sha256: await sha256(bytes), send_ms: performance.now() - started };
    }
    case 'close': {
      const connection = relay.connections.get(command.peer);
      if (connection) connection.fail('closed on request');
      return { closed: Boolean(connection) };
    }
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

window.sb = { run };
emit({ event: 'page-loaded' });
