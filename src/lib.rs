//! Switchboard: a ProxyStore-compatible WebRTC relay (signaling) server, a
//! peer library and command line that talk over WebRTC data channels, and a
//! TCP tunnel for services behind NAT, on actix.
//!
//! Peers open a WebSocket to the relay, register a UUID, and forward WebRTC
//! session descriptions to each other. Switchboard speaks ProxyStore's relay
//! protocol byte for byte, so ProxyStore's Python clients use it unchanged.
//! The peer library ([`client`]) is the other end: an actix application adds
//! one actor, the [`PeerManager`](client::peer_manager::PeerManager), and sends
//! bytes or text to any peer UUID registered on a relay; `switchboard peer
//! listen` / `switchboard peer send` do the same from a shell.
//!
//! # Layout
//!
//! - [`protocol`]: wire types and codecs only (no actix, no I/O): the relay
//!   messages, close codes, Python-compatible UUID parsing and JSON escaping.
//! - [`config`]: the settings tree, layered defaults → TOML → env → CLI, validation
//!   (the `[tunnel]` section in `config/tunnel.rs`, `[log]` in `config/logs.rs`;
//!   secrets and their masking in `config/secret.rs`), and
//!   `config/proxystore.rs`, which reads ProxyStore's relay TOML as is
//!   (`--proxystore-config`) into that tree, with warnings for keys ignored.
//! - [`defaults`]: every default, timeout and limit as a named constant.
//! - [`addr`]: the canonical form every reported peer address takes
//!   (IPv4-mapped IPv6 addresses as IPv4).
//! - [`node`]: the running process, a relay node: [`node::bind`] binds the
//!   public and admin listeners the settings name, [`node::start`] (a function
//!   of settings and bound listeners) binds the tunnel's, makes the one
//!   `Metrics`, starts the relay server, the tunnel and the admin listener,
//!   hands each what it needs (the admin listener a view of the others) and
//!   returns a [`node::Node`] handle owning the one shutdown path (and, with
//!   `log.clients_interval_secs`, the periodic "Connected clients" line of
//!   `node/clients_line.rs`); [`node::Reloader`] applies a reloaded settings
//!   file's `[[tunnel.services]]` to it. `main.rs` and the tests'
//!   `tests/common` start the process through it; [`node::check`] loads what a
//!   start loads without binding (`switchboard check-config`).
//! - [`server`]: the WebSocket relay only: `registry` (the one actor owning
//!   registrations, started on the first HTTP worker's thread so forwards
//!   cross at most one thread), `session` (one actor per WebSocket),
//!   `inbound` (its frame reader), `outbound` (its bounded write queue),
//!   `auth`, `messages`, `state`, and [`server::start`], a function of
//!   (settings, metrics, the bound public listener) returning a handle.
//! - [`admin`]: `/health`, `/clients`, `/metrics`, `/tunnels` on the admin
//!   listener, reading an [`admin::View`] the node gives it (it imports
//!   neither the relay nor the tunnel), `admin::metrics`, the one struct
//!   holding every metric, and `admin::dashboard`, the page at `/` (its
//!   HTML, script, style and vendored chart library built into the binary)
//!   that reads those endpoints.
//! - [`tls`]: rustls server configuration from PEM files, for the relay's
//!   and the tunnel's listeners.
//! - [`proxy`]: outbound TCP through an HTTP proxy (`CONNECT`), chosen from
//!   `--http-proxy` or `HTTPS_PROXY`/`NO_PROXY`, for the host agent and the
//!   relay client; it imports nothing of the crate.
//! - [`client`]: the peer library, actix actors embedded in the application's
//!   System: `relay_client` (one relay session, reconnecting with `backoff`;
//!   `wss://` options in `tls`), `connection` (one WebRTC peer connection, N
//!   data channels, chunked messages, and the ledger of what the peer
//!   acknowledged behind flushes), `runtime` (tokio for `webrtc` with larger
//!   UDP buffers) and `peer_manager` (the one actor an application adds).
//! - [`tunnel`]: the TCP (and UDP) tunnel, one folder per side: `tunnel::relay` (the
//!   agents' and services' listeners on their own runtime; `agents`:
//!   handshakes and control channels, `pool`, `carry`: pooled connections
//!   carrying clients, `clients`: the public listeners, `udp`: UDP
//!   services' sockets and sessions, `state`) and
//!   `tunnel::agent`, the host agent behind `switchboard host` (`pool`,
//!   `udp`, `connect`, `settings`, `host_config`: its settings file,
//!   `metrics`: its `/metrics` and `/health` listener); beside them
//!   what both share: `framing`, `pump` (copy, then `splice` on Linux),
//!   `tls`, `net` (runtime, socket options), `error`. The wire format is
//!   [`protocol::tunnel`], the PROXY header [`protocol::proxy_v2`].
//! - [`cluster`]: scale-out over Redis, an engine on tokio (no actix) that a
//!   node drives: liveness, registrations shared by every node (Lua scripts),
//!   forwards to other nodes over per-node channels in a versioned
//!   `envelope`, a self-checked subscription, re-assertion after an outage,
//!   and `ClusterMetrics`; its settings are `[cluster]` (`config/cluster.rs`).
//! - `fuzzing` (hidden from the docs): the body of every fuzz target, one
//!   function per decoder of network or disk bytes, shared by the fuzzers in
//!   `fuzz/` (`scripts/fuzz`) and `tests/fuzz_regressions.rs`.
//! - [`logging`]: env_logger set-up from `--log-level` / `RUST_LOG` / `log.level`,
//!   and the rotating `server.log` in `log.dir` beside stderr.
//! - `src/cli/`: the binary's subcommands besides the relay itself: `peer`
//!   (`listen`, `send`), `host` (the tunnel's host agent), `check-config`
//!   (the settings as a start loads them, secrets masked), `completions`
//!   and `man` (generated from the clap definition).
//! - `src/bin/switchboard-load/`: a load generator speaking the relay protocol
//!   (flood, latency, idle memory) against any relay URL, plus `connrate` and
//!   `echo-server` for the tunnel, `udp-rr` and `udp-echo-server` for its
//!   UDP services, and the checked soaks `soak` (relay: no
//!   forward lost, duplicated or reordered) and `tunnel-soak` (SHA-256 of
//!   every echo) that `scripts/soak` runs; `src/bin/switchboard-peer-bench/`:
//!   peer connection setup and throughput; `scripts/bench` drives both.
//! - `examples/`: `two_peers` (a relay and two peers in one process) and
//!   `peer_http` (an actix-web application embedding a PeerManager);
//!   `browser_bench` (message times between a Switchboard peer and headless
//!   Chromium, run by `scripts/bench browser`).
//!
//! Imports run one way: [`node`] → [`server`], [`tunnel`], [`admin`]; the
//! relay server and the tunnel → `admin::metrics`, [`tls`], [`config`],
//! [`protocol`]; nothing imports `node`. No top-level module, and no file
//! of the tunnel, imports one that imports it back
//! (`python3 ../shared/tools/modcycles.py src` lists circles).
#![deny(missing_docs)]

pub mod addr;
pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod defaults;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod node;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod tunnel;
