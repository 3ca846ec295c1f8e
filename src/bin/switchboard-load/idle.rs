//! `idle`: N registered clients that send nothing; reports the server's
//! resident memory growth per client.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::StreamExt as _;
use uuid::Uuid;

use crate::client::{
    connect, connect_registered, open_files_limit, rss_kib, ws_config, Target, Ws,
};

/// How far each idle client goes before it stops (a diagnostic breakdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// A TCP connection only, no HTTP request.
    Tcp,
    /// A WebSocket handshake, no registration.
    Websocket,
    /// A WebSocket handshake and a successful `relay_registration` (the real idle client).
    Registered,
}

/// One open idle client, whatever its stage.
enum Held {
    Tcp(#[allow(dead_code)] tokio::net::TcpStream),
    Ws(Box<Ws>),
}

/// Opens one client up to `stage`, within `timeout`.
async fn open(
    target: &Target,
    source: Option<IpAddr>,
    stage: Stage,
    name: String,
    timeout: Duration,
) -> anyhow::Result<Held> {
    match stage {
        Stage::Registered => {
            let ws = connect_registered(
                target,
                source,
                ws_config(false),
                &name,
                Uuid::new_v4(),
                timeout,
            )
            .await?;
            Ok(Held::Ws(Box::new(ws)))
        }
        Stage::Websocket => {
            let ws = tokio::time::timeout(timeout, connect(target, source, ws_config(false)))
                .await
                .map_err(|_| anyhow!("connect took longer than {timeout:?}"))??;
            Ok(Held::Ws(Box::new(ws)))
        }
        Stage::Tcp => {
            let socket = match target.addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }?;
            if let Some(ip) = source {
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
            }
            let stream = tokio::time::timeout(timeout, socket.connect(target.addr))
                .await
                .map_err(|_| anyhow!("TCP connect took longer than {timeout:?}"))??;
            Ok(Held::Tcp(stream))
        }
    }
}

/// Closes a WebSocket politely (close frame, wait for the relay's reply), bounded.
async fn close(held: Held) {
    if let Held::Ws(mut ws) = held {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            ws.close(None).await?;
            while let Some(message) = ws.next().await {
                message?;
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
    }
}

/// Settings of one idle run.
#[derive(Debug, Clone)]
pub struct IdleArgs {
    /// Clients to open and register.
    pub clients: usize,
    /// Local addresses the connections are spread over (round robin).
    pub sources: Vec<IpAddr>,
    /// The relay's process id, whose VmRSS is read.
    pub server_pid: u32,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Time allowed to connect and register one client.
    pub connect_timeout: Duration,
    /// Wait between the last registration and the second RSS reading.
    pub settle: Duration,
    /// How far each client goes (`registered` is the real measurement).
    pub stage: Stage,
    /// Keep the clients open this long after the RESULT line (or until
    /// SIGTERM/SIGINT), so another load can run beside them.
    pub hold: Option<Duration>,
}

/// Progress is printed every this many clients.
const REPORT_EVERY: usize = 5000;
/// File descriptors this process needs besides the clients' sockets.
const SPARE_FDS: u64 = 64;

/// Opens `args.clients` clients, `args.concurrency` at a time, round robin
/// over `sources`, printing progress; returns the open ones, the number
/// that failed and the first failure.
async fn open_all(
    target: &Target,
    args: &IdleArgs,
    sources: &[Option<IpAddr>],
    started: Instant,
) -> (Vec<Held>, usize, Option<String>) {
    let mut opened = futures_util::stream::iter(0..args.clients)
        .map(|i| {
            let source = sources[i % sources.len()];
            let name = format!("idle-{i}");
            open(target, source, args.stage, name, args.connect_timeout)
        })
        .buffer_unordered(args.concurrency);
    let mut clients = Vec::with_capacity(args.clients);
    let mut failures = 0usize;
    let mut first_error = None;
    let mut next_report = REPORT_EVERY;
    while let Some(result) = opened.next().await {
        match result {
            Ok(ws) => clients.push(ws),
            Err(error) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
        let done = clients.len() + failures;
        if done >= next_report {
            next_report += REPORT_EVERY;
            println!(
                "  {done} done ({} registered, {failures} failed) after {:.1} s",
                clients.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    (clients, failures, first_error)
}

/// Runs the idle test; prints a human summary and one `RESULT idle` line.
pub async fn run(target: &Target, args: &IdleArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.concurrency == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    let limit = open_files_limit()?;
    let needed = args.clients as u64 + SPARE_FDS;
    if limit < needed {
        bail!(
            "{} clients need about {needed} open files but the limit is {limit}; raise it first (ulimit -n {needed})",
            args.clients
        );
    }
    let sources: Vec<Option<IpAddr>> = if args.sources.is_empty() {
        vec![None]
    } else {
        args.sources.iter().copied().map(Some).collect()
    };
    println!(
        "idle: {} clients ({:?}) -> {} from {} source address(es), {} at a time; server pid {}",
        args.clients,
        args.stage,
        target.url,
        sources.len(),
        args.concurrency,
        args.server_pid
    );
    let (before, before_anon) = rss_kib(args.server_pid)?;
    let started = Instant::now();
    let (clients, failures, first_error) = open_all(target, args, &sources, started).await;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.settle).await;
    let (after, after_anon) = rss_kib(args.server_pid)?;
    let ok = clients.len();
    let per_client = (after as f64 - before as f64) / ok.max(1) as f64;
    let per_client_anon = (after_anon as f64 - before_anon as f64) / ok.max(1) as f64;
    println!(
        "  {ok} registered ({failures} failed) in {connect_secs:.1} s; server VmRSS {before} -> {after} KiB (RssAnon {before_anon} -> {after_anon} KiB)"
    );
    println!(
        "  {per_client:.2} KiB per idle registered client ({per_client_anon:.2} KiB anonymous)"
    );
    if let Some(error) = &first_error {
        println!("  ERROR first failure: {error}");
    }
    println!(
        "RESULT idle kib_per_client={per_client:.2} anon_kib_per_client={per_client_anon:.2} stage={} clients={ok} failed={failures} rss_before_kib={before} rss_after_kib={after} open_seconds={connect_secs:.3} opened_per_sec={:.0}",
        format!("{:?}", args.stage).to_lowercase(),
        ok as f64 / connect_secs.max(1e-9)
    );
    if let Some(hold) = args.hold {
        println!("  holding the clients for up to {hold:?} (SIGTERM ends it)");
        hold_for(hold).await?;
    }
    let closing = Instant::now();
    futures_util::stream::iter(clients)
        .for_each_concurrent(args.concurrency * 4, close)
        .await;
    println!(
        "  closed all clients in {:.1} s",
        closing.elapsed().as_secs_f64()
    );
    if ok == 0 || failures > 0 {
        bail!("{failures} of {} clients failed", args.clients);
    }
    Ok(())
}

/// Waits `hold`, or less if SIGTERM or SIGINT arrives.
async fn hold_for(hold: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
