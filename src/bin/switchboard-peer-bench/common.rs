//! What both measurements use: an in-process relay, registered managers on
//! loopback with the benchmark's connection settings, and the statistics
//! printed on `RESULT` lines.

use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{bail, Context as _};
use switchboard::client::connection::ConnectionConfig;
use switchboard::client::peer_manager::{Close, PeerManager, PeerManagerConfig, Status};
use switchboard::client::relay_client::BackoffConfig;
use switchboard::config::Settings;
use switchboard::node;
use uuid::Uuid;

/// Longest wait for any single step (registration, connect, close, one send).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often registration and peer-list polls look again.
pub const POLL: Duration = Duration::from_millis(5);

/// A relay in this process on 127.0.0.1:0; returns its URL.
pub fn start_relay() -> anyhow::Result<(node::Node, String)> {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.workers = 1;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
    let relay = node::start(settings, listener, None).context("starting the relay")?;
    let url = format!("ws://127.0.0.1:{}", relay.public_addr().port());
    Ok((relay, url))
}

/// The library's defaults, on loopback. For A/B runs of one setting, these
/// variables override it (in bytes): `BENCH_PEER_SCTP_WINDOW`,
/// `BENCH_PEER_CHUNK`, `BENCH_PEER_SEND_BUFFER`, `BENCH_PEER_SCTP_MTU` (opt-in
/// `sctp_mtu`; the default stays webrtc's 1 191), `BENCH_PEER_RECV_BURST`
/// (datagrams per flush; a huge value keeps webrtc's own batching), and
/// `BENCH_PEER_ICE_TICK_US` (the ICE check interval, in microseconds).
pub fn connection_config(channels: usize) -> ConnectionConfig {
    let defaults = ConnectionConfig::default();
    let knob = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    ConnectionConfig {
        channels,
        bind_addrs: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        connect_timeout: STEP_TIMEOUT,
        sctp_receive_buffer: knob("BENCH_PEER_SCTP_WINDOW")
            .map_or(defaults.sctp_receive_buffer, |v| v as u32),
        chunk_size: knob("BENCH_PEER_CHUNK").unwrap_or(defaults.chunk_size),
        send_buffer_limit: knob("BENCH_PEER_SEND_BUFFER").unwrap_or(defaults.send_buffer_limit),
        sctp_mtu: knob("BENCH_PEER_SCTP_MTU").map(|v| v as u32),
        recv_burst: knob("BENCH_PEER_RECV_BURST").unwrap_or(defaults.recv_burst),
        ice_check_interval: knob("BENCH_PEER_ICE_TICK_US")
            .map_or(defaults.ice_check_interval, |v| {
                std::time::Duration::from_micros(v as u64)
            }),
        ..defaults
    }
}

/// A started, registered manager for `url` and its UUID.
pub async fn manager(url: &str, channels: usize) -> anyhow::Result<(Addr<PeerManager>, Uuid)> {
    let mut config = PeerManagerConfig::new(url);
    config.connection = connection_config(channels);
    config.relay.name = Some("peer-bench".into());
    config.relay.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        stable_after: Duration::from_secs(5),
    };
    let addr = PeerManager::new(config)?.start();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while Instant::now() < deadline {
        let status = addr.send(Status).await?;
        if status.registered {
            return Ok((addr, status.uuid));
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("peer manager did not register within {STEP_TIMEOUT:?}")
}

/// Closes a manager (it first flushes its connections), bounded.
pub async fn close_manager(addr: &Addr<PeerManager>) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, addr.send(Close)).await;
}

/// Waits (bounded) until `addr` holds no connection.
pub async fn wait_no_peers(addr: &Addr<PeerManager>) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while Instant::now() < deadline {
        if addr.send(Status).await?.peers.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("the answering manager still holds a connection after {STEP_TIMEOUT:?}")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn stats(name: &str, values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let all: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    format!(
        "{name}_median={:.2} {name}_min={min:.2} {name}_max={max:.2} {name}_all={}",
        median(values),
        all.join(",")
    )
}
