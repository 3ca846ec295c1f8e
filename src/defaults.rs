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

/// Default log filter when neither `--log-level` nor `RUST_LOG` is given.
pub const LOG_LEVEL: &str = "info";

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
/// Runtime threads of the tunnel relay and of a host agent: 1 is a
/// single-threaded runtime, 0 one worker per core.
pub const TUNNEL_WORKERS: usize = 0;
/// Control-channel announcements (`ConnectionOpen`/`ConnectionDrop`) are
/// gathered for this long and written together, in milliseconds.
pub const TUNNEL_ANNOUNCE_BATCH_MS: u64 = 10;
