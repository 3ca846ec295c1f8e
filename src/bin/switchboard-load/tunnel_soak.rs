//! `tunnel-soak`: the TCP tunnel under load, without corruption. N clients
//! connect at once to a tunnelled echo service; each sends B pseudo-random
//! bytes (its own seed), shuts down its write side and reads the echo to the
//! end. The SHA-256 of what came back must equal that of what was sent, for
//! every client. Reports time, throughput and the relay's VmRSS (start, peak,
//! end once the clients left, which must come back within a tolerance).
//! `scripts/soak` runs it against a release relay, a `switchboard host` agent
//! and `switchboard-load echo-server`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::checks::Checks;
use crate::client::{open_files_limit, rss_kib};
use crate::watch::{rss_checks, MemoryArgs, RoundRss, RssWatch};

/// Command-line settings of `tunnel-soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct TunnelSoakCli {
    /// The tunnelled echo service's public address (127.0.0.1:PORT).
    #[arg(long)]
    addr: SocketAddr,
    /// Clients, all started at once.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// Bytes each client sends (and gets back), e.g. 1048576 for 1 MiB.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: u64,
    /// Bytes per write and per read.
    #[arg(long, default_value_t = 64 * 1024)]
    chunk: usize,
    /// Process id of the relay (its VmRSS is read from /proc/PID/status).
    #[arg(long)]
    server_pid: u32,
    /// Process id of the host agent, whose VmRSS is reported too.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// Seed of the clients' data; random when not given, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest time one client may take (connect, send, read back), in seconds.
    #[arg(long, default_value_t = 300)]
    client_seconds: u64,
    /// Rounds and memory checks.
    #[command(flatten)]
    memory: MemoryArgs,
}

/// File descriptors this process needs besides the clients' sockets.
const SPARE_FDS: u64 = 64;

/// How one client's transfer ended.
#[derive(Debug)]
enum Outcome {
    /// The echo matched what was sent.
    Matched,
    /// The echo differed: its length, and whether the digests differed.
    Mismatch { received: u64 },
    /// Connecting, writing or reading failed, or time ran out.
    Failed(String),
}

/// Clients connected and not yet done: now, and the most at once.
#[derive(Default)]
struct Active {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Counts one connected client in [`Active`] until dropped.
struct ActiveGuard<'a>(&'a Active);

impl<'a> ActiveGuard<'a> {
    fn new(active: &'a Active) -> Self {
        let now = active.now.fetch_add(1, Ordering::Relaxed) + 1;
        active.most.fetch_max(now, Ordering::Relaxed);
        ActiveGuard(active)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one round saw.
struct Round {
    matched: usize,
    mismatched: Vec<String>,
    failed: Vec<String>,
    seconds: f64,
    most: usize,
    rss: RoundRss,
}

/// Runs the tunnel soak; prints figures, CHECK lines and one `RESULT tunnel-soak` line.
pub async fn run(cli: &TunnelSoakCli) -> anyhow::Result<()> {
    let needed = cli.clients as u64 + SPARE_FDS;
    let limit = open_files_limit()?;
    if limit < needed {
        bail!("{} clients need about {needed} open files but the limit is {limit}; raise it first (ulimit -n {needed})", cli.clients);
    }
    let tolerance_ok = (0.0..=10.0).contains(&cli.memory.rss_tolerance);
    if cli.clients == 0 || cli.chunk == 0 || cli.memory.rounds == 0 || !tolerance_ok {
        bail!("--clients, --chunk and --rounds must be at least 1 and --rss-tolerance in [0, 10]");
    }
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!(
        "tunnel-soak: {} clients at once -> {}, {} bytes each way per client, {} rounds, seed {seed}, relay pid {}",
        cli.clients, cli.addr, cli.bytes, cli.memory.rounds, cli.server_pid
    );
    let fresh = rss_kib(cli.server_pid)?.0;
    let agent_start = cli.agent_pid.map(rss_kib).transpose()?.map(|r| r.0);
    let mut rounds = Vec::with_capacity(cli.memory.rounds);
    for round in 0..cli.memory.rounds {
        let round_seed = seed.wrapping_add((round * cli.clients) as u64);
        let r = one_round(cli, round_seed).await?;
        let moved = r.matched as f64 * cli.bytes as f64 / (1024.0 * 1024.0);
        println!(
            "  round {}: {} of {} clients matched in {:.2} s (at most {} at once): {moved:.0} MiB each way, {:.1} MiB/s each way",
            round + 1,
            r.matched,
            cli.clients,
            r.seconds,
            r.most,
            moved / r.seconds.max(1e-9)
        );
        rounds.push(r);
    }
    let agent_end = cli.agent_pid.map(rss_kib).transpose()?.map(|r| r.0);
    if let (Some(a), Some(b)) = (agent_start, agent_end) {
        println!("  agent VmRSS before the first round {a} KiB, after the last {b} KiB");
    }
    verdict(cli, fresh, &rounds, (agent_start, agent_end))
}

/// One round: every client at once, then the relay's memory settles.
async fn one_round(cli: &TunnelSoakCli, seed: u64) -> anyhow::Result<Round> {
    let watch = RssWatch::start(cli.server_pid)?;
    let active = Arc::new(Active::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..cli.clients)
        .map(|i| {
            let (cli, active) = (cli.clone(), active.clone());
            tokio::spawn(async move { client(&cli, seed.wrapping_add(i as u64), &active).await })
        })
        .collect();
    let mut round = Round {
        matched: 0,
        mismatched: Vec::new(),
        failed: Vec::new(),
        seconds: 0.0,
        most: 0,
        rss: RoundRss {
            start: 0,
            peak: 0,
            end: 0,
            settle_s: 0.0,
        },
    };
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Outcome::Matched) => round.matched += 1,
            Ok(Outcome::Mismatch { received }) => round
                .mismatched
                .push(format!("client {i}: {received} bytes back, digest differs")),
            Ok(Outcome::Failed(error)) => round.failed.push(format!("client {i}: {error}")),
            Err(error) => round.failed.push(format!("client {i}: task: {error}")),
        }
    }
    round.seconds = started.elapsed().as_secs_f64();
    round.most = active.most.load(Ordering::Relaxed);
    round.rss = watch
        .finish(
            cli.memory.rss_tolerance,
            Duration::from_secs(cli.memory.settle_seconds),
        )
        .await?;
    Ok(round)
}

/// Prints every CHECK line (over all rounds) and the `RESULT tunnel-soak` line.
fn verdict(
    cli: &TunnelSoakCli,
    fresh: u64,
    rounds: &[Round],
    agent: (Option<u64>, Option<u64>),
) -> anyhow::Result<()> {
    let total = cli.clients * rounds.len();
    let matched: usize = rounds.iter().map(|r| r.matched).sum();
    let failed: Vec<&String> = rounds.iter().flat_map(|r| &r.failed).collect();
    let mismatched: Vec<&String> = rounds.iter().flat_map(|r| &r.mismatched).collect();
    let first = |v: &[&String]| v.first().map_or(String::new(), |e| format!("; first: {e}"));
    let mut checks = Checks::default();
    checks.check(
        "completed",
        failed.is_empty(),
        format!(
            "{} of {total} clients failed{}",
            failed.len(),
            first(&failed)
        ),
    );
    checks.check(
        "sha256",
        mismatched.is_empty() && matched > 0,
        format!(
            "{matched} of {total} digests match, {} differ{}",
            mismatched.len(),
            first(&mismatched)
        ),
    );
    let rss: Vec<RoundRss> = rounds.iter().map(|r| r.rss).collect();
    rss_checks(&mut checks, "relay", fresh, &rss, cli.memory.rss_tolerance);
    let last = rounds.last().expect("at least one round");
    let mib = last.matched as f64 * cli.bytes as f64 / (1024.0 * 1024.0);
    println!(
        "RESULT tunnel-soak clients={} bytes={} rounds={} matched={matched} mismatched={} failed={} seconds={:.2} mib_per_sec={:.1} most_at_once={} rss_fresh_kib={fresh} rss_start_kib={} rss_peak_kib={} rss_end_kib={} rss_settle_s={:.1} agent_rss_start_kib={} agent_rss_end_kib={} pass={}",
        cli.clients, cli.bytes, rounds.len(), mismatched.len(), failed.len(), last.seconds,
        mib / last.seconds.max(1e-9), last.most, last.rss.start,
        rss.iter().map(|r| r.peak).max().unwrap_or(0), last.rss.end, last.rss.settle_s,
        agent.0.unwrap_or(0), agent.1.unwrap_or(0), checks.all_passed()
    );
    checks.finish()
}

/// One client: connect, send bytes from `seed` while reading the echo, compare digests.
async fn client(cli: &TunnelSoakCli, seed: u64, active: &Active) -> Outcome {
    let limit = Duration::from_secs(cli.client_seconds);
    let result = tokio::time::timeout(limit, async {
        let stream = TcpStream::connect(cli.addr).await?;
        stream.set_nodelay(true)?;
        let _counted = ActiveGuard::new(active);
        let (reader, writer) = stream.into_split();
        let sent = send(writer, SmallRng::seed_from_u64(seed), cli.bytes, cli.chunk);
        tokio::try_join!(sent, read_back(reader, cli.chunk))
    })
    .await;
    match result {
        Err(_) => Outcome::Failed(format!("not done after {limit:?}")),
        Ok(Err(error)) => Outcome::Failed(error.to_string()),
        Ok(Ok((sent, (received, back)))) if received == cli.bytes && sent == back => {
            Outcome::Matched
        }
        Ok(Ok((_, (received, _)))) => Outcome::Mismatch { received },
    }
}

/// Writes `bytes` bytes from `rng`, then shuts the write side down; returns their digest.
async fn send(
    mut writer: OwnedWriteHalf,
    mut rng: SmallRng,
    bytes: u64,
    chunk: usize,
) -> std::io::Result<[u8; 32]> {
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; chunk];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        rng.fill_bytes(&mut buffer[..n]);
        digest.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).await?;
        left -= n as u64;
    }
    writer.shutdown().await?;
    Ok(digest.finalize().into())
}

/// Reads to the end; returns the byte count and digest.
async fn read_back(mut reader: OwnedReadHalf, chunk: usize) -> std::io::Result<(u64, [u8; 32])> {
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            return Ok((total, digest.finalize().into()));
        }
        digest.update(&buffer[..n]);
        total += n as u64;
    }
}
