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

mod common;
mod throughput;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand};
use switchboard::client::connection::{
    Close as CloseConnectionActor, Connection, ConnectionConfig, ConnectionEvent,
    ConnectionEventKind, Role, SetAnswer,
};
use switchboard::client::peer_manager::Connect;
use tokio::sync::mpsc;
use uuid::Uuid;

use common::{
    close_manager, connection_config, manager, ms, start_relay, stats, wait_no_peers, STEP_TIMEOUT,
};

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
        } => throughput::throughput(bytes, message, channels, runs, run_timeout, flush_each).await,
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
