//! Every default, timeout and limit, as a named and documented constant.
//!
//! Settings (`config.rs`) start from these values; a TOML file, environment
//! variables and CLI flags can override each of them.

/// Public WebSocket listener address (all interfaces, like ProxyStore's relay).
pub const HOST: &str = "0.0.0.0";
/// Public WebSocket port: ProxyStore's relay default.
pub const PORT: u16 = 8700;
/// Largest accepted frame, in bytes (1 MiB). Larger frames close the session with 4003.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most WebSocket sessions open at once; further upgrades get HTTP 503.
pub const MAX_CLIENTS: usize = 50_000;
/// HTTP worker threads; 0 means one per CPU core.
pub const WORKERS: usize = 0;
/// Interval between server pings, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// A session that sends nothing (not even a pong) for this long is closed, in milliseconds.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 45_000;
/// Frames queued for one session's socket before it counts as a slow consumer.
pub const OUTBOUND_QUEUE: usize = 256;
/// The shortest queue a session really gets, whatever `outbound_queue` says:
/// actix handles up to 16 items of a stream in one turn of the actor
/// (actix 0.13 `ActorStream`), each of which may answer with a frame, before
/// the connection gets a turn to take them. A shorter queue would call a
/// client that reads at once a slow consumer.
pub const MIN_SESSION_QUEUE: usize = 16;
/// Forward requests queued in the registry's mailbox before senders wait
/// (their sockets stop being read, so TCP pushes back on the clients).
pub const REGISTRY_MAILBOX: usize = 8192;
/// Time a session gets to flush its close frame before its socket is dropped, in milliseconds.
pub const CLOSE_FLUSH_MS: u64 = 1_000;
/// Time the whole server gets to close its sessions on shutdown, in milliseconds.
pub const SHUTDOWN_GRACE_MS: u64 = 3_000;
/// Limit on concurrently pending upgrade handshakes per worker (actix `max_connection_rate`).
pub const MAX_CONNECTION_RATE: usize = 1_024;

/// Admin listener address: loopback only unless the operator says otherwise.
pub const ADMIN_HOST: &str = "127.0.0.1";
/// Admin listener port.
pub const ADMIN_PORT: u16 = 8701;

/// Token introspection HTTP timeout, in milliseconds.
pub const INTROSPECTION_TIMEOUT_MS: u64 = 5_000;
/// How long a positive introspection result is reused for the same token, in seconds.
pub const INTROSPECTION_CACHE_SECS: u64 = 60;
/// Most introspection results kept in the cache.
pub const INTROSPECTION_CACHE_ENTRIES: usize = 10_000;

/// Name of the log file in `log.dir` (ProxyStore's relay writes the same).
pub const LOG_FILE_NAME: &str = "server.log";
/// Rotated log files kept beside the current one (`server.log.1` …): a year
/// of weekly files. ProxyStore keeps every one; a bound is kinder to disks.
pub const LOG_FILES_KEPT: usize = 52;

// ProxyStore's relay configuration (`--proxystore-config`)

/// Globus Auth's token introspection endpoint (`[auth] method = "globus"`).
pub const GLOBUS_INTROSPECT_URL: &str = "https://auth.globus.org/v2/oauth2/token/introspect";
/// The audience ProxyStore's relay requires by default: the resource
/// server of ProxyStore's relay application at Globus.
pub const PROXYSTORE_RELAY_AUDIENCE: &str = "ebd5bbed-95e2-47cf-9c80-39e2064274bd";
/// ProxyStore's `current_client_interval`: seconds between "Connected clients" lines.
pub const PROXYSTORE_CLIENT_INTERVAL_SECS: u64 = 60;
/// ProxyStore's `current_client_limit`: clients are listed when fewer than this.
pub const PROXYSTORE_CLIENT_LIMIT: usize = 32;

/// Default log filter when neither `--log-level` nor `RUST_LOG` is given.
pub const LOG_LEVEL: &str = "info";
/// Most `.`-separated parts in a top-level key of a settings layer (a quoted
/// TOML key, or an environment variable's `__` parts): the deepest setting is
/// `auth.tokens.<user>`. Deeper keys are refused before layering, since the
/// `config` crate's cost grows with the square of a key's depth.
pub const SETTINGS_KEY_MAX_PARTS: usize = 3;

// Peer connections (WebRTC)

/// Send and receive buffer asked for on every WebRTC UDP socket, in bytes
/// (the kernel default of ~208 KiB drops datagrams on fast loopback transfers).
pub const PEER_UDP_SOCKET_BUFFER: usize = 4 << 20;
/// Data channels a new outgoing connection opens (ProxyStore's default is 1).
pub const PEER_CHANNELS: usize = 1;
/// Most data channels one connection may use; an offer with more is refused.
pub const PEER_MAX_CHANNELS: usize = 64;
/// Time from starting a connection until all its channels are open, in milliseconds.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 30_000;
/// Longest wait for ICE gathering before a connection sends its offer or
/// answer with the candidates gathered so far, in milliseconds
/// (`ConnectionConfig::gather_timeout`). A STUN server answers in one round
/// trip and a TURN allocation in two; one that has not answered by then is
/// taken as down: without this limit a dead STUN server held set-up for
/// ~21 s (webrtc's own STUN retransmissions) before the offer left.
pub const PEER_GATHER_TIMEOUT_MS: u64 = 3_000;
/// Tick of the ICE agent while it is checking (before the connection is up), in
/// milliseconds: each tick sends a binding request on every pair still being
/// checked. webrtc's default is 200 ms; the DTLS client's ClientHello is only
/// sent on the tick after ICE connects, so set-up on loopback is about 5 ms
/// plus one tick (measured, offer → open median: 2 ms → 7.1, 5 ms → 9.3,
/// 10 ms → 14.4, 20 ms → 24.4 ms). 5 ms is RFC 8445 §14.2's floor for the
/// pacing of checks. A shorter tick with pairs checkable for seconds costs
/// too much: webrtc scans its pending requests (kept 4 s) on every request,
/// and at 2 ms a symmetric-NAT TURN connection in the lab never came up.
/// Once connected the agent ticks at the keepalive interval instead.
pub const PEER_ICE_CHECK_INTERVAL_MS: u64 = 5;
/// Datagrams a peer connection's driver reads before it flushes its output,
/// SACKs included (`ConnectionConfig::recv_burst`): 2 makes the receiving
/// SCTP stack acknowledge every second packet (RFC 4960 §6.2).
pub const PEER_RECV_BURST: usize = 2;
/// How long each ICE candidate pair keeps being checked, in milliseconds
/// (`ConnectionConfig::ice_check_window`): longer than an offer/answer round
/// trip through the relay at intercontinental round-trip times plus the
/// other side's gathering, shorter than ICE's checking limit
/// (disconnected + failed timeouts, 15 s).
pub const PEER_ICE_CHECK_WINDOW_MS: u64 = 6000;
/// Largest `sctp_mtu` a connection accepts, in bytes: an SCTP packet is one
/// DTLS record, whose plaintext may not exceed 16 KiB.
pub const PEER_MAX_SCTP_MTU: u32 = 16_000;
/// SCTP packet budget when every bind address is loopback, in bytes: the
/// largest DTLS record ProxyStore's aiortc peers read (`ssl.recv(1500)`).
/// Against webrtc's 1 191: median ~271 vs ~240 MB/s side by side.
pub const PEER_LOOPBACK_SCTP_MTU: u32 = 1_500;
/// Bytes one data channel may have handed to SCTP but not yet acknowledged;
/// senders wait above it (flow control, never unbounded buffering).
pub const PEER_SEND_BUFFER_LIMIT: usize = 4 << 20;
/// Messages queued for sending on one connection before `send` waits.
pub const PEER_SEND_QUEUE: usize = 64;
/// Received messages buffered for `recv()` before the oldest is dropped (logged).
pub const PEER_RECV_QUEUE: usize = 1024;
/// Largest chunk payload a connection sends: the 64 KiB SCTP max-message-size
/// that aiortc advertises, less the chunk header.
pub const PEER_MAX_CHUNK_SIZE: usize = 65_536 - 18;
/// While an offer is connecting, how often the driver is woken so packets that
/// events queued are sent at once instead of at its next timer, in microseconds.
pub const PEER_SETUP_NUDGE_US: u64 = 500;
/// A flush (or the flush of a closing connection) gives up when the peer has
/// acknowledged nothing new for this long, in milliseconds, and so does a
/// send waiting for send-buffer room (the connection then ends). A limit on
/// progress rather than on the whole wait: a slow path still drains a full
/// send buffer, a peer that stopped answering fails after this.
pub const PEER_FLUSH_STALL_MS: u64 = 5_000;
/// How often a flush reads the channels' unacknowledged byte counts, in
/// milliseconds (a channel whose buffer drains wakes it at once).
pub const PEER_FLUSH_POLL_MS: u64 = 10;
/// A closing connection that received a message this recently waits until
/// this long after it, in milliseconds: SCTP acknowledges every second packet
/// at once and a lone one after its 200 ms delayed-ack timer, and when that
/// acknowledgement is lost the sender retransmits after its retransmission
/// timeout (at least 1 s in rtc-sctp), which only a live receiver answers.
/// Closing sooner left senders in the two-NAT lab (TURN, loaded machine)
/// without the acknowledgement of their last chunk: 250 ms was not enough.
pub const PEER_CLOSE_ACK_LINGER_MS: u64 = 1_500;
/// Chunks per channel a connection's acknowledgement ledger holds before the
/// sender refreshes it (reads the channels' unacknowledged byte counts).
pub const PEER_ACK_LEDGER_CHUNKS: usize = 256;
/// While its queue is empty and the peer has not acknowledged everything, a
/// connection's sender reads the channels' unacknowledged byte counts this
/// often, in milliseconds, so that a connection ending before its buffers
/// drain (a browser that closes within its 200 ms delayed-SACK window)
/// reports how much the peer did acknowledge.
pub const PEER_ACK_WATCH_MS: u64 = 20;
/// Peer silence after which a connection counts as disconnected, in milliseconds.
pub const PEER_ICE_DISCONNECTED_MS: u64 = 5_000;
/// Further silence after which it has failed and is closed, in milliseconds
/// (webrtc's default is 25 s; a vanished peer is noticed after 5 + 10 s).
pub const PEER_ICE_FAILED_MS: u64 = 10_000;
/// ICE keepalive interval while idle, in milliseconds.
pub const PEER_ICE_KEEPALIVE_MS: u64 = 2_000;
/// SCTP receive window of a connection, in bytes (webrtc's default, 1 MiB).
/// Interleaved A/B runs on loopback showed no difference between 1 and 4 MiB
/// (both 200–260 MB/s); 8 MiB, more than the UDP buffers, was slower.
pub const PEER_SCTP_RECEIVE_BUFFER: u32 = 1 << 20;
/// Threads driving WebRTC connections (webrtc's reactor pool, shared by every
/// connection of the process and separate from the application's actix threads).
pub const PEER_REACTOR_THREADS: usize = 2;

// Peer data channels (chunk format)

/// Payload bytes per data-channel chunk (32 KiB, ProxyStore's chunk size).
pub const CHUNK_SIZE: usize = 32 * 1024;
/// Largest message a peer connection reassembles, in payload bytes (256 MiB);
/// larger messages are dropped with an error.
pub const PEER_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Most bytes one peer connection holds for incomplete messages (512 MiB: two
/// messages of the largest size in flight at once).
pub const PEER_MAX_PENDING_BYTES: usize = 2 * PEER_MAX_MESSAGE_BYTES;
/// Most incomplete messages one peer connection reassembles at once.
pub const PEER_MAX_PENDING_STREAMS: usize = 1_024;
/// How many dropped message (stream) ids a peer connection remembers, so the
/// rest of a dropped message is discarded instead of starting a new one.
pub const PEER_DROPPED_STREAMS_REMEMBERED: usize = 1_024;

// Relay client

/// Relay client: time allowed for TCP connect + TLS + WebSocket handshake, and
/// again for the relay's answer to the registration, in milliseconds.
pub const RELAY_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Relay client: delay before the first reconnect attempt, in milliseconds.
pub const RELAY_BACKOFF_INITIAL_MS: u64 = 1_000;
/// Relay client: largest delay between reconnect attempts, in milliseconds.
pub const RELAY_BACKOFF_MAX_MS: u64 = 60_000;
/// Relay client: a registration that lasted this long resets the backoff, in milliseconds.
pub const RELAY_BACKOFF_STABLE_MS: u64 = 30_000;
/// Relay client: largest share of a backoff delay removed at random (0.5 = up to half).
pub const RELAY_BACKOFF_JITTER: f64 = 0.5;
/// Relay client: frames queued for the relay socket before sends fail with `QueueFull`.
pub const RELAY_CLIENT_QUEUE: usize = 64;
/// Relay client: largest frame or message accepted from the relay, in bytes (4 MiB).
pub const RELAY_CLIENT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Relay client: a session with no frame at all (the relay pings every 15 s)
/// for this long counts as lost, in milliseconds.
pub const RELAY_CLIENT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Relay client: time the close handshake (or a failed write's read side) gets
/// before the socket is dropped, in milliseconds.
pub const RELAY_CLIENT_CLOSE_WAIT_MS: u64 = 1_000;
/// Relay client: the name registered when none is given and the host name is unknown.
pub const RELAY_CLIENT_DEFAULT_NAME: &str = "switchboard-peer";

// Peer manager

/// Delay before a peer manager starts a new relay session after one stopped
/// for a reason other than a rejection, in milliseconds.
pub const PEER_RELAY_RESTART_MS: u64 = 1_000;

// ---------------------------------------------------------------------------
// TCP tunnel (`[tunnel]` on the relay, `switchboard host` on the agent side).
// ---------------------------------------------------------------------------

/// Address of the listener where host agents connect (control and data connections).
pub const TUNNEL_HOST: &str = "0.0.0.0";
/// Port of the host agents' listener.
pub const TUNNEL_PORT: u16 = 8702;
/// How long a client waits for a pooled connection when the pool is empty, in milliseconds.
pub const TUNNEL_POOL_WAIT_MS: u64 = 5_000;
/// Clients of one service waiting for a pooled connection at once; more are closed at once.
pub const TUNNEL_MAX_WAITING: usize = 4_096;
/// Pooled data connections one service holds at most; more are refused with `Busy`.
pub const TUNNEL_MAX_POOL: usize = 1_024;
/// Time an agent connection gets to complete its handshake, in milliseconds.
pub const TUNNEL_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Interval between heartbeats on control and idle pooled connections, in milliseconds.
pub const TUNNEL_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// Silence after which a control or idle pooled connection is dropped, in milliseconds.
pub const TUNNEL_HEARTBEAT_TIMEOUT_MS: u64 = 15_000;
/// Tunnelled client connections open at once across all services; more are closed at once.
pub const TUNNEL_MAX_CLIENTS: usize = 10_000;
/// Buffer size of each direction of a tunnelled connection's copy loop, in bytes.
pub const TUNNEL_COPY_BUFFER: usize = 256 * 1024;
/// Pooled data connections a host agent keeps open.
pub const AGENT_POOL: usize = 10;
/// First reconnect delay of a host agent after the relay went away, in milliseconds.
pub const AGENT_BACKOFF_MIN_MS: u64 = 100;
/// Largest reconnect delay of a host agent, in milliseconds.
pub const AGENT_BACKOFF_MAX_MS: u64 = 30_000;
/// A control session that lasted this long resets the agent's backoff, in milliseconds.
pub const AGENT_BACKOFF_RESET_MS: u64 = 10_000;
/// How long a host agent waits for its local service to accept, in milliseconds.
pub const AGENT_LOCAL_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Announcements queued for one agent's control channel; more are dropped (and logged).
pub const TUNNEL_CONTROL_QUEUE: usize = 1_024;
/// Forward tunnelled bytes with zero-copy `splice(2)` on Linux (relay and agent).
pub const TUNNEL_SPLICE: bool = true;
/// Runtime threads of the tunnel relay: 1 is a single-threaded runtime, 0
/// one worker per core.
pub const TUNNEL_WORKERS: usize = 0;
/// Runtime threads of a host agent (same meaning). One thread: its work is
/// mostly in the kernel (splice), and a second worker only raced the client's
/// path, stealing the pool refill onto the other core (BENCHMARKS.md: setup
/// 0.28-0.31 ms against 0.34-0.37 ms with one worker per core, same Gbit/s).
pub const AGENT_WORKERS: usize = 1;
/// Longest a host agent holds `Started` back waiting for its service's first
/// bytes to send with it, in milliseconds.
pub const AGENT_STARTED_WAIT_MS: u64 = 20;
/// A host agent handed a client with a heartbeat in the same read answers
/// both with `Started`; it sends the heartbeat's `Pong` alone only when
/// dialling its service takes longer than this, in milliseconds (so the
/// relay hears from it within this + [`AGENT_STARTED_WAIT_MS`], far below
/// `tunnel.handoff_timeout_ms`).
pub const AGENT_PONG_GRACE_MS: u64 = 50;
/// Control-channel announcements (`ConnectionOpen`/`ConnectionDrop`) are
/// gathered for this long and written together, in milliseconds.
pub const TUNNEL_ANNOUNCE_BATCH_MS: u64 = 10;
/// Time a pooled connection gets to answer when it is handed a client, in
/// milliseconds: the relay sends a heartbeat with `Start`, and a live agent
/// answers it at once (before dialling its service). No answer: the agent is
/// taken for dead and the client is handed to another pooled connection.
pub const TUNNEL_HANDOFF_TIMEOUT_MS: u64 = 1_000;
/// Most bytes of a client the relay forwards (and keeps, for a retry) before
/// the agent answers `Started`; more wait in the client's socket.
pub const TUNNEL_HANDOFF_BUFFER: usize = 16 * 1024;
/// A UDP session (one client address of a UDP service) with no datagram
/// either way for this long is closed, in milliseconds.
pub const TUNNEL_UDP_IDLE_TIMEOUT_MS: u64 = 60_000;
/// UDP sessions one UDP service holds at once; datagrams from further client
/// addresses are dropped (and counted).
pub const TUNNEL_UDP_MAX_SESSIONS: usize = 1_024;
/// Datagrams queued per UDP session while its pooled connection is being
/// handed over or is slow; more are dropped (and counted).
pub const TUNNEL_UDP_QUEUE: usize = 512;
/// Largest batch of datagram records a UDP session writes at once to its
/// pooled connection (relay and agent), in bytes.
pub const TUNNEL_UDP_BATCH: usize = 64 * 1024;
/// Send and receive buffer asked for on UDP service sockets (the relay's
/// public one, the agent's local ones), in bytes: the kernel default of
/// ~208 KiB drops bursts at Gbit/s rates.
pub const TUNNEL_UDP_SOCKET_BUFFER: usize = 4 << 20;
/// Most hand-offs of one client; after that many failures it is closed.
pub const TUNNEL_HANDOFF_ATTEMPTS: u32 = 4;
/// Idle time before TCP keepalive probes start on agent connections (both
/// ends), in milliseconds. A vanished host is noticed on an idle carried
/// connection after idle + interval × probes (30 s).
pub const TUNNEL_TCP_KEEPALIVE_IDLE_MS: u64 = 15_000;
/// Interval between TCP keepalive probes on agent connections, in milliseconds.
pub const TUNNEL_TCP_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
/// Unanswered TCP keepalive probes after which an agent connection is dropped.
pub const TUNNEL_TCP_KEEPALIVE_PROBES: u32 = 3;
/// `TCP_USER_TIMEOUT` on agent connections (Linux), in milliseconds: sent
/// bytes unacknowledged this long drop the connection, so a host that
/// vanishes mid-transfer is noticed (the kernel would retry ~15 minutes).
pub const TUNNEL_TCP_USER_TIMEOUT_MS: u64 = 30_000;

// ---------------------------------------------------------------------------
// Cluster (`[cluster]`: several relay nodes sharing one Redis, src/cluster).
// ---------------------------------------------------------------------------

/// The cluster is off unless `cluster.enabled` says otherwise: one node works alone, without Redis.
pub const CLUSTER_ENABLED: bool = false;
/// The Redis every node of a cluster shares (`redis://` or `rediss://`).
pub const CLUSTER_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Prefix of every key and channel the cluster writes in Redis.
pub const CLUSTER_KEY_PREFIX: &str = "switchboard:";
/// Longest key prefix, in characters.
pub const CLUSTER_KEY_PREFIX_MAX: usize = 64;
/// Longest configured node id, in characters.
pub const CLUSTER_NODE_ID_MAX: usize = 64;
/// Interval at which a node refreshes its liveness key, in milliseconds.
pub const CLUSTER_HEARTBEAT_MS: u64 = 2_000;
/// Lifetime of a node's liveness key, in milliseconds: a node silent this
/// long is dead to the others, and its registrations with it.
pub const CLUSTER_NODE_TTL_MS: u64 = 6_000;
/// Time one Redis command (or pipeline) gets to answer, in milliseconds.
pub const CLUSTER_COMMAND_TIMEOUT_MS: u64 = 1_000;
/// Time one connection attempt to Redis gets, in milliseconds.
pub const CLUSTER_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Interval at which a node publishes to its own channel to prove its
/// subscription delivers, in milliseconds. Nothing arriving for twice the
/// command timeout while the echo is awaited rebuilds the subscription.
pub const CLUSTER_SELF_CHECK_MS: u64 = 5_000;
/// Interval of the heartbeat while Redis cannot be reached, in
/// milliseconds: how soon a node notices that Redis is back.
pub const CLUSTER_RETRY_MS: u64 = 250;
/// Longest wait between two attempts to subscribe again, in milliseconds
/// (the first waits [`CLUSTER_RETRY_MS`], each next one twice as long).
pub const CLUSTER_RESUBSCRIBE_MAX_MS: u64 = 2_000;
/// Deliveries (forwards and takeovers from other nodes) queued for the node
/// before forwards are dropped and counted.
pub const CLUSTER_INBOX: usize = 8_192;
/// Forwards queued for publishing to Redis before `forward` answers busy.
pub const CLUSTER_PUBLISH_QUEUE: usize = 8_192;
/// Most forwards sent to Redis in one pipeline.
pub const CLUSTER_PUBLISH_BATCH: usize = 256;
/// Most bytes of forwards sent to Redis in one pipeline (a batch stops
/// growing past this; a single larger envelope still goes alone).
pub const CLUSTER_PUBLISH_BATCH_BYTES: usize = 1024 * 1024;
/// Largest envelope header in bytes (the JSON line before a forward's text):
/// an envelope may be this much larger than `server.max_message_bytes`.
pub const CLUSTER_ENVELOPE_HEADER_MAX: usize = 512;
/// Registrations written per script call when a node re-asserts them.
pub const CLUSTER_REASSERT_CHUNK: usize = 500;
/// Most registrations of dead nodes one heartbeat removes from Redis.
pub const CLUSTER_REAP_BATCH: usize = 1_000;
/// Upper bounds, in microseconds, of the buckets of the Redis round-trip
/// histogram (`ClusterMetrics`); a last bucket holds everything slower.
pub const CLUSTER_RTT_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];
