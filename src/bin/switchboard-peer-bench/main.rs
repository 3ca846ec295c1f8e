//! `switchboard-peer-bench`: connection set-up time and throughput of the peer
//! library, measured in one process on loopback.
//!
//! Every subcommand starts a Switchboard relay in-process on 127.0.0.1:0 and
//! binds every WebRTC socket to 127.0.0.1. It prints human text on stderr and
//! machine-readable `RESULT <test> key=value ...` lines on stdout, which
//! `scripts/bench peer` parses.
//!
//! - `setup`: for each of `--count` connections (after `--warmup` unmeasured
//!   ones), (a) a fresh PeerManager A sends `Connect(B)` to a PeerManager B
//!   through the relay; the round trip (offer created, gathered, relayed,
//!   answered, every channel open) is `level=manager`; (b) two `Connection`
//!   actors are connected directly, without a relay; the time from the
//!   offerer's `LocalDescription(offer)` event to its `Ready` event (every
//!   channel open) is `level=connection` `offer_to_open`, the issue's
//!   definition; `create_to_open` also counts building the offer.
//! - `throughput`: A sends `--bytes` as `--message`-sized messages to B over
//!   an open connection (each `Send` awaited, as an application does); the time
//!   runs from the first send until B's subscriber has counted every byte.
//!   MB/s uses 10^6 bytes. Repeated `--runs` times over the same connection.
//!   After the last send, A also waits (`Flush`) until B acknowledged every
//!   byte and prints when. `--flush-each` flushes after every message
//!   instead (`level=manager-flush-each`): what a `Send` that resolved only
//!   once the peer acknowledged the message would cost.

/// jemalloc instead of glibc's malloc: the relay, the WebRTC stack and the
/// tunnel allocate on one thread and free on another all the time, which glibc
/// serves slowly; jemalloc keeps the same memory per idle client (BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use switchboard::client::connection::{
    Close as CloseConnectionActor, Connection, ConnectionConfig, ConnectionEvent,
    ConnectionEventKind, Role, SetAnswer,
};
use switchboard::client::peer_manager::{
    Close, Connect, Flush, PeerManager, PeerManagerConfig, PeerMessage, Send, Status, Subscribe,
};
use switchboard::client::relay_client::BackoffConfig;
use switchboard::config::Settings;
use switchboard::node;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Longest wait for any single step (registration, connect, close, one send).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often registration and peer-list polls look again.
const POLL: Duration = Duration::from_millis(5);

/// Peer-library benchmark (loopback only): connection set-up and throughput.
#[derive(Parser, Debug)]
#[command(name = "switchboard-peer-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Median time to open a connection (manager round trip and raw Connection).
    Setup {
        /// Measured connections per level.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Unmeasured connections made first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Data channels per connection.
        #[arg(long, default_value_t = 1)]
        channels: usize,
    },
    /// MB/s of a bulk transfer from one peer to another.
    Throughput {
        /// Bytes per run (suffixes KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        bytes: u64,
        /// Bytes per message.
        #[arg(long, default_value = "1MiB", value_parser = parse_size)]
        message: u64,
        /// Data channels per connection.
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Measured runs, over the same connection.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Longest single run, in seconds.
        #[arg(long, default_value_t = 120.0)]
        run_timeout: f64,
        /// Wait for the peer's acknowledgement (Flush) after every message.
        #[arg(long)]
        flush_each: bool,
    },
}

/// `64MiB`, `1MiB`, `16MB`, `4096`: a byte count.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 64MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    number
        .checked_mul(scale)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is zero or too large"))
}

/// A relay in this process on 127.0.0.1:0; returns its URL.
fn start_relay() -> anyhow::Result<(node::Node, String)> {
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
fn connection_config(channels: usize) -> ConnectionConfig {
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
async fn manager(url: &str, channels: usize) -> anyhow::Result<(Addr<PeerManager>, Uuid)> {
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
async fn close_manager(addr: &Addr<PeerManager>) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, addr.send(Close)).await;
}

/// Waits (bounded) until `addr` holds no connection.
async fn wait_no_peers(addr: &Addr<PeerManager>) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while Instant::now() < deadline {
        if addr.send(Status).await?.peers.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("the answering manager still holds a connection after {STEP_TIMEOUT:?}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn stats(name: &str, values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let all: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    format!(
        "{name}_median={:.2} {name}_min={min:.2} {name}_max={max:.2} {name}_all={}",
        median(values),
        all.join(",")
    )
}

/// `Connect` round trips through the relay, each from a fresh manager A to B.
async fn manager_setup(url: &str, channels: usize, total: usize) -> anyhow::Result<Vec<f64>> {
    let (b, b_uuid) = manager(url, channels).await?;
    let mut times = Vec::with_capacity(total);
    for i in 0..total {
        let (a, _) = manager(url, channels).await?;
        let began = Instant::now();
        let result = tokio::time::timeout(STEP_TIMEOUT, a.send(Connect(b_uuid))).await;
        let took = began.elapsed();
        close_manager(&a).await;
        match result {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("connection {i}: {e}"),
            Ok(Err(e)) => bail!("connection {i}: mailbox: {e}"),
            Err(_) => bail!("connection {i}: not open within {STEP_TIMEOUT:?}"),
        }
        wait_no_peers(&b).await?;
        times.push(ms(took));
    }
    close_manager(&b).await;
    Ok(times)
}

/// Forwards a connection's events to a channel.
struct Collector(mpsc::UnboundedSender<ConnectionEvent>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent> for Collector {
    type Result = ();
    fn handle(&mut self, msg: ConnectionEvent, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

struct Side {
    addr: Addr<Connection>,
    events: mpsc::UnboundedReceiver<ConnectionEvent>,
}

impl Side {
    fn start(role: Role, config: Arc<ConnectionConfig>) -> Side {
        let (tx, events) = mpsc::unbounded_channel();
        let collector = Collector(tx).start();
        let addr = Connection::new(Uuid::new_v4(), 1, role, config, collector.recipient()).start();
        Side { addr, events }
    }

    async fn next(&mut self) -> anyhow::Result<ConnectionEventKind> {
        match tokio::time::timeout(STEP_TIMEOUT, self.events.recv()).await {
            Ok(Some(event)) => Ok(event.kind),
            Ok(None) => bail!("connection event channel closed"),
            Err(_) => bail!("no connection event within {STEP_TIMEOUT:?}"),
        }
    }

    async fn description(&mut self) -> anyhow::Result<String> {
        match self.next().await? {
            ConnectionEventKind::LocalDescription { description, .. } => Ok(description),
            other => bail!("expected a local description, got {other:?}"),
        }
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        match self.next().await? {
            ConnectionEventKind::Ready(_) => Ok(()),
            other => bail!("expected Ready, got {other:?}"),
        }
    }

    /// Closes and waits (bounded) for the `Closed` event.
    async fn close(mut self) {
        self.addr.do_send(CloseConnectionActor);
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if matches!(event.kind, ConnectionEventKind::Closed(_)) {
                return;
            }
        }
    }
}

/// One direct Connection pair: (create → offer, offer → offerer ready) in ms.
async fn connection_pair(channels: usize) -> anyhow::Result<(f64, f64)> {
    let began = Instant::now();
    let mut offerer = Side::start(Role::Offerer, Arc::new(connection_config(channels)));
    let offer = offerer.description().await?;
    let offered = Instant::now();
    let mut answerer = Side::start(Role::Answerer { offer }, Arc::new(connection_config(1)));
    let answer = answerer.description().await?;
    offerer
        .addr
        .send(SetAnswer(answer))
        .await?
        .map_err(|e| anyhow!("answer: {e}"))?;
    offerer.ready().await?;
    let open = Instant::now();
    answerer.ready().await?;
    offerer.close().await;
    answerer.close().await;
    Ok((ms(offered - began), ms(open - offered)))
}

async fn setup(count: usize, warmup: usize, channels: usize) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let (relay, url) = start_relay()?;
    eprintln!("setup: {channels} channel(s), {warmup} warm-up + {count} measured, relay {url}");
    let all = manager_setup(&url, channels, warmup + count).await?;
    let manager_ms = &all[warmup..];
    eprintln!("  manager Connect round trip (ms): {manager_ms:.2?}");
    println!(
        "RESULT setup level=manager channels={channels} count={count} {}",
        stats("connect_ms", manager_ms)
    );
    let (mut gather, mut open) = (Vec::new(), Vec::new());
    for i in 0..warmup + count {
        let (g, o) = connection_pair(channels)
            .await
            .with_context(|| format!("direct connection {i}"))?;
        if i >= warmup {
            gather.push(g);
            open.push(o);
        }
    }
    let create: Vec<f64> = gather.iter().zip(&open).map(|(g, o)| g + o).collect();
    eprintln!("  Connection offer -> all channels open (ms): {open:.2?}");
    println!(
        "RESULT setup level=connection channels={channels} count={count} {} {} {}",
        stats("offer_to_open_ms", &open),
        stats("create_to_offer_ms", &gather),
        stats("create_to_open_ms", &create)
    );
    relay.shutdown().await;
    Ok(())
}

/// Counts the bytes B receives; tells the waiter when a target is reached.
#[derive(Default)]
struct Counter {
    bytes: u64,
    messages: u64,
    target: u64,
    done: Option<oneshot::Sender<(Instant, u64)>>,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<PeerMessage> for Counter {
    type Result = ();
    fn handle(&mut self, msg: PeerMessage, _: &mut Context<Self>) {
        self.bytes += msg.payload.len() as u64;
        self.messages += 1;
        if self.bytes >= self.target {
            if let Some(done) = self.done.take() {
                let _ = done.send((Instant::now(), self.messages));
            }
        }
    }
}

/// Starts counting from zero towards `target` bytes.
#[derive(Message)]
#[rtype(result = "()")]
struct Expect(u64, oneshot::Sender<(Instant, u64)>);

impl Handler<Expect> for Counter {
    type Result = ();
    fn handle(&mut self, msg: Expect, _: &mut Context<Self>) {
        *self = Counter {
            target: msg.0,
            done: Some(msg.1),
            ..Counter::default()
        };
    }
}

/// Sends `count` messages of `message` from A to B and waits for B to count
/// them all; returns (seconds, messages counted).
async fn transfer(
    a: &Addr<PeerManager>,
    b_uuid: Uuid,
    counter: &Addr<Counter>,
    message: &Bytes,
    count: u64,
    flush_each: bool,
    limit: Duration,
) -> anyhow::Result<(f64, u64)> {
    let (tx, rx) = oneshot::channel();
    counter
        .send(Expect(count * message.len() as u64, tx))
        .await?;
    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    for i in 0..count {
        let send = a.send(Send::bytes(b_uuid, message.clone()));
        match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("message {i}: {e}"),
            Ok(Err(e)) => bail!("message {i}: mailbox: {e}"),
            Err(_) => bail!("message {i} not handed over within {limit:?}"),
        }
        if flush_each {
            flush(a, b_uuid, deadline).await?;
        }
    }
    let sent = began.elapsed();
    flush(a, b_uuid, deadline).await?;
    let acknowledged = began.elapsed();
    let (finished, messages) = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(done)) => done,
        Ok(Err(_)) => bail!("the byte counter went away"),
        Err(_) => bail!("the receiver did not get every byte within {limit:?}"),
    };
    let took = finished - began;
    eprintln!(
        "  last send returned after {:.3} s, all acknowledged after {:.3} s, receiver complete after {:.3} s",
        sent.as_secs_f64(),
        acknowledged.as_secs_f64(),
        took.as_secs_f64()
    );
    Ok((took.as_secs_f64(), messages))
}

/// Waits until B acknowledged everything A sent it.
async fn flush(
    a: &Addr<PeerManager>,
    b_uuid: Uuid,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    match tokio::time::timeout_at(deadline, a.send(Flush(b_uuid))).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => bail!("flush: {e}"),
        Ok(Err(e)) => bail!("flush: mailbox: {e}"),
        Err(_) => bail!("flush: not acknowledged in time"),
    }
}

async fn throughput(
    bytes: u64,
    message: u64,
    channels: usize,
    runs: usize,
    run_timeout: f64,
    flush_each: bool,
) -> anyhow::Result<()> {
    if message > bytes || runs == 0 {
        bail!("--message must not exceed --bytes, and --runs must be at least 1");
    }
    if !(run_timeout.is_finite() && run_timeout > 0.0 && run_timeout <= 86_400.0) {
        bail!("--run-timeout must be a number of seconds in (0, 86400]");
    }
    let limit = Duration::from_secs_f64(run_timeout);
    let count = bytes / message;
    let total = count * message;
    let (relay, url) = start_relay()?;
    eprintln!(
        "throughput: {count} x {message} B = {total} B, {channels} channel(s), {runs} run(s)"
    );
    let (a, _) = manager(&url, channels).await?;
    let (b, b_uuid) = manager(&url, channels).await?;
    let counter = Counter::default().start();
    b.send(Subscribe(counter.clone().recipient())).await?;
    let opened = Instant::now();
    match tokio::time::timeout(STEP_TIMEOUT, a.send(Connect(b_uuid))).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("connect: {e}"),
        _ => bail!("connect: not open within {STEP_TIMEOUT:?}"),
    }
    eprintln!("  connected in {:.1} ms", ms(opened.elapsed()));
    let pattern: Vec<u8> = (0..message).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(pattern);
    // One unmeasured message: first-use costs stay out of the runs.
    transfer(&a, b_uuid, &counter, &payload, 1, flush_each, limit).await?;
    let mut rates = Vec::new();
    let mut seconds = Vec::new();
    for run in 1..=runs {
        let (secs, messages) =
            transfer(&a, b_uuid, &counter, &payload, count, flush_each, limit).await?;
        if messages != count {
            bail!("run {run}: the receiver counted {messages} messages, not {count}");
        }
        let rate = total as f64 / secs / 1e6;
        eprintln!("  run {run}/{runs}: {secs:.3} s, {rate:.1} MB/s");
        rates.push(rate);
        seconds.push(secs);
    }
    println!(
        "RESULT throughput level={} channels={channels} bytes={total} message={message} runs={runs} {} {}",
        if flush_each {
            "manager-flush-each"
        } else {
            "manager"
        },
        stats("mbps", &rates),
        stats("seconds", &seconds)
    );
    close_manager(&a).await;
    close_manager(&b).await;
    relay.shutdown().await;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup {
            count,
            warmup,
            channels,
        } => setup(count, warmup, channels).await,
        Command::Throughput {
            bytes,
            message,
            channels,
            runs,
            run_timeout,
            flush_each,
        } => throughput(bytes, message, channels, runs, run_timeout, flush_each).await,
    }
}

fn main() -> std::process::ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "error,switchboard=warn".into());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_micros()
        .try_init();
    let cli = Cli::parse();
    match actix_rt::System::new().block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-peer-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
