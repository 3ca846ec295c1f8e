//! Shared helpers of the tunnel tests: a real tunnel relay on 127.0.0.1:0,
//! real agents, real local services and clients.
#![allow(dead_code)]

pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard::admin::metrics::Metrics;
use switchboard::config::{Secret, TunnelService, TunnelSettings};
use switchboard::protocol::tunnel::{self, Frame, Role};
use switchboard::tunnel::agent::{self, AgentHandle, AgentSettings, LocalService};
use switchboard::tunnel::framing::{write_frame, FrameReader};
use switchboard::tunnel::relay::{self, TunnelRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);
pub const TOKEN: &str = "correct horse battery staple";

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Tunnel settings for tests: loopback, port 0, fast heartbeats.
pub fn settings(services: &[&str]) -> TunnelSettings {
    let mut s = TunnelSettings {
        host: "127.0.0.1".into(),
        port: 0,
        pool_wait_ms: 3_000,
        handshake_timeout_ms: 500,
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 1_000,
        copy_buffer: 64 * 1024,
        ..TunnelSettings::default()
    };
    s.services = services
        .iter()
        .map(|name| TunnelService {
            name: (*name).into(),
            bind: "127.0.0.1:0".into(),
            token: Some(Secret::new(format!("{TOKEN}-{name}"))),
            ..TunnelService::default()
        })
        .collect();
    s
}

pub fn token(service: &str) -> Secret {
    Secret::new(format!("{TOKEN}-{service}"))
}

/// A running tunnel relay with its metrics.
pub struct Relay {
    pub tunnel: TunnelRelay,
    pub metrics: Arc<Metrics>,
}

impl Relay {
    pub fn start(settings: TunnelSettings) -> Relay {
        init_logs();
        let metrics = Arc::new(Metrics::new());
        let listeners = relay::bind(&settings).unwrap();
        let tunnel = relay::start(settings, metrics.clone(), listeners).unwrap();
        Relay { tunnel, metrics }
    }

    pub fn agents(&self) -> String {
        self.tunnel.agents_addr().to_string()
    }

    pub fn service(&self, name: &str) -> SocketAddr {
        self.tunnel.service_addr(name).unwrap()
    }

    pub fn idle(&self, name: &str) -> usize {
        self.status(name)["pool_idle"].as_u64().unwrap() as usize
    }

    pub fn status(&self, name: &str) -> serde_json::Value {
        let status = serde_json::to_value(self.tunnel.state().status()).unwrap();
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    }

    /// Prometheus text of the relay's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }
}

/// Agent settings with fast heartbeats and backoff.
pub fn agent_settings(
    relay: &str,
    service: &str,
    local: LocalService,
    pool: usize,
) -> AgentSettings {
    let mut s = AgentSettings::new(relay, service, token(service), local);
    s.pool = pool;
    s.heartbeat_interval = Duration::from_millis(100);
    s.heartbeat_timeout = Duration::from_millis(1_000);
    s.handshake_timeout = Duration::from_millis(1000);
    s.backoff_min = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.copy_buffer = 64 * 1024;
    s
}

/// Starts an agent and waits until the relay holds `pool` idle connections for it.
pub async fn agent(relay: &Relay, service: &str, local: LocalService, pool: usize) -> AgentHandle {
    let handle = agent::spawn(agent_settings(&relay.agents(), service, local, pool));
    wait_until("the pool to fill", || relay.idle(service) >= pool).await;
    handle
}

/// Polls `cond` every 10 ms; panics with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A real TCP echo server on 127.0.0.1:0 (half-close aware).
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Connects, sends `payload`, half-closes, reads everything back.
pub async fn exchange(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let run = async {
        let mut stream = TcpStream::connect(addr).await?;
        let (mut r, mut w) = stream.split();
        let write = async {
            w.write_all(payload).await?;
            w.shutdown().await
        };
        let mut out = Vec::new();
        let read = r.read_to_end(&mut out);
        tokio::try_join!(write, read)?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(WAIT, run)
        .await
        .expect("exchange timed out")
        .expect("exchange failed")
}

/// Reads until EOF or error; returns bytes read, or None when the read timed out.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// A counter value from Prometheus text, summed over label sets (0 if absent).
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A hand-made agent connection speaking raw frames: connects to the
/// relay's agents listener and authenticates for `service` as `role`;
/// returns the stream, its reader and the session the relay accepted.
pub async fn raw_agent(
    relay: &Relay,
    service: &str,
    role: Role,
    session: u64,
) -> (TcpStream, FrameReader, u64) {
    raw_agent_as(relay, service, role, session, tunnel::Transport::Tcp).await
}

/// [`raw_agent`] announcing `transport` in its `Hello`.
pub async fn raw_agent_as(
    relay: &Relay,
    service: &str,
    role: Role,
    session: u64,
    transport: tunnel::Transport,
) -> (TcpStream, FrameReader, u64) {
    let mut stream = TcpStream::connect(relay.tunnel.agents_addr())
        .await
        .unwrap();
    let mut reader = FrameReader::new();
    let hello = Frame::Hello {
        role,
        service: service.into(),
        session,
        transport,
    };
    write_frame(&mut stream, &hello).await.unwrap();
    let Frame::Challenge { nonce } = reader
        .next_within(&mut stream, WAIT, "challenge")
        .await
        .unwrap()
    else {
        panic!("no challenge");
    };
    let token = token(service);
    let mac = tunnel::proof(token.expose().as_bytes(), role, service, session, &nonce);
    write_frame(&mut stream, &Frame::Proof { mac })
        .await
        .unwrap();
    let Frame::Accepted { session } = reader
        .next_within(&mut stream, WAIT, "accepted")
        .await
        .unwrap()
    else {
        panic!("not accepted");
    };
    (stream, reader, session)
}

/// The next frame that is not a heartbeat, answering pings on the way.
pub async fn next_event(stream: &mut TcpStream, reader: &mut FrameReader) -> Frame {
    loop {
        match reader.next_within(stream, WAIT, "frame").await.unwrap() {
            Frame::Ping { seq } => write_frame(stream, &Frame::Pong { seq }).await.unwrap(),
            Frame::Pong { .. } => {}
            other => return other,
        }
    }
}

/// A relay process's TOML: public and admin listeners on 127.0.0.1:0, log
/// level info, and a tunnel (agents' listener on 127.0.0.1:0) with one
/// service `echo` on 127.0.0.1:0 whose token is `token`.
pub fn echo_relay_config(token: &str) -> String {
    format!(
        r#"
[server]
host = "127.0.0.1"
port = 0
[admin]
host = "127.0.0.1"
port = 0
[log]
level = "info"
[tunnel]
host = "127.0.0.1"
port = 0
[[tunnel.services]]
name = "echo"
bind = "127.0.0.1:0"
token = "{token}"
"#
    )
}

/// A relay process's TOML like [`echo_relay_config`]'s, with one service per
/// name in `names` (public port 127.0.0.1:0, token `<name>-token`).
pub fn services_relay_config(names: &[&str]) -> String {
    let mut config = String::from(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nhost = \"127.0.0.1\"\nport = 0\n\
         [log]\nlevel = \"info\"\n[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n",
    );
    for name in names {
        config.push_str(&format!(
            "[[tunnel.services]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\ntoken = \"{name}-token\"\n"
        ));
    }
    config
}

/// One round trip on an open client connection; `false` if it is closed.
pub async fn round_trip(client: &mut TcpStream, message: &[u8]) -> bool {
    if client.write_all(message).await.is_err() {
        return false;
    }
    let mut echoed = vec![0u8; message.len()];
    match tokio::time::timeout(WAIT, client.read_exact(&mut echoed)).await {
        Ok(Ok(_)) => echoed == message,
        _ => false,
    }
}

/// A client connected through the tunnel to `service` that has sent
/// `first`, and the connection the local service accepted for it.
pub async fn through(
    relay: &Relay,
    service: &str,
    listener: &TcpListener,
    first: &[u8],
) -> (TcpStream, TcpStream) {
    let mut client = TcpStream::connect(relay.service(service)).await.unwrap();
    client.write_all(first).await.unwrap();
    let (server_side, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    (client, server_side)
}

/// `held` (what a frame reader already read past its last frame) followed by
/// what `stream` sends, until at least `n` bytes are there (each read within
/// `WAIT`); panics if `stream` closes first.
pub async fn read_at_least(stream: &mut TcpStream, held: Vec<u8>, n: usize) -> Vec<u8> {
    let mut got = held;
    while got.len() < n {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("bytes within the wait")
            .expect("a readable stream");
        assert!(read > 0, "closed after {} of {n} bytes", got.len());
        got.extend_from_slice(&buf[..read]);
    }
    got
}
