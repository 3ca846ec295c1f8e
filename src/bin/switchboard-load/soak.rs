//! `soak`: the relay under load, without loss. N clients register; each then
//! sends F `peer_connection` forwards to K random peers (see
//! [`Plan`](crate::soak_plan::Plan)), every forward carrying its
//! sender→receiver sequence number in the SDP. Receivers record every
//! delivery; the tally must show none lost, duplicated, reordered per pair or
//! malformed. The relay's VmRSS is sampled (start, peak) and must come back
//! within a tolerance of its start once every client has left.
//! `scripts/soak` runs it against a release relay it starts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::checks::Checks;
use crate::client::{connect_registered, open_files_limit, rss_kib, ws_config, Target, Ws};
use crate::soak_plan::{tally, Inbox, Plan, Tally};
use crate::watch::{rss_checks, MemoryArgs, RoundRss, RssWatch};

/// Command-line settings of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakCli {
    /// Clients to register (all stay connected until the end).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Forwards each client sends.
    #[arg(long, default_value_t = 100)]
    forwards: usize,
    /// Peers each client sends to (its forwards are spread evenly over them).
    #[arg(long, default_value_t = 10)]
    peers: usize,
    /// Encoded size of each peer_connection frame, in bytes.
    #[arg(long, default_value_t = 1800)]
    size: usize,
    /// Comma-separated local source addresses (round robin), e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Process id of the relay (its VmRSS is read from /proc/PID/status).
    #[arg(long)]
    server_pid: u32,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seed of the plan (UUIDs, peers, order); random when not given, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest time for all forwards to be sent and then delivered, in seconds.
    #[arg(long, default_value_t = 300)]
    deliver_seconds: u64,
    /// Rounds and memory checks.
    #[command(flatten)]
    memory: MemoryArgs,
}

/// File descriptors this process needs besides the clients' sockets.
const SPARE_FDS: u64 = 64;
/// How often the delivery wait looks at the received count.
const DELIVERY_POLL: Duration = Duration::from_millis(20);
/// Time each client gets for its close handshake at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Clients closed at once at the end.
const CLOSE_CONCURRENCY: usize = 1_000;

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// Timings of one round, in seconds.
#[derive(Debug, Default)]
struct Timings {
    connect: f64,
    send: f64,
    deliver: f64,
    close: f64,
}

/// What one round saw.
struct Round {
    planned: u64,
    tally: Tally,
    malformed: u64,
    echoes: u64,
    first_problem: Option<String>,
    ended: Vec<String>,
    send_errors: Vec<String>,
    timings: Timings,
    rss: RoundRss,
}

/// Runs the soak; prints progress, CHECK lines and one `RESULT soak` line.
pub async fn run(target: &Target, cli: &SoakCli, connect_timeout: Duration) -> anyhow::Result<()> {
    let limit = open_files_limit()?;
    let needed = cli.clients as u64 + SPARE_FDS;
    if limit < needed {
        bail!("{} clients need about {needed} open files but the limit is {limit}; raise it first (ulimit -n {needed})", cli.clients);
    }
    if cli.concurrency == 0
        || cli.memory.rounds == 0
        || !(0.0..=10.0).contains(&cli.memory.rss_tolerance)
    {
        bail!("--concurrency and --rounds must be at least 1 and --rss-tolerance in [0, 10]");
    }
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!(
        "soak: {} clients -> {}, {} forwards each over {} peers, frame {} B, {} rounds, seed {seed}, relay pid {}",
        cli.clients, target.url, cli.forwards, cli.peers, cli.size, cli.memory.rounds, cli.server_pid
    );
    let fresh = rss_kib(cli.server_pid)?.0;
    let mut rounds = Vec::with_capacity(cli.memory.rounds);
    for round in 0..cli.memory.rounds {
        let round_seed = seed.wrapping_add(round as u64);
        let plan = Plan::new(cli.clients, cli.forwards, cli.peers, cli.size, round_seed)?;
        rounds.push(one_round(target, cli, Arc::new(plan), connect_timeout).await?);
        let r = rounds.last().expect("just pushed");
        println!(
            "  round {}: {} delivered of {} ({} lost, {} duplicated, {} reordered, {} malformed)",
            round + 1,
            r.tally.delivered,
            r.planned,
            r.tally.lost,
            r.tally.duplicated,
            r.tally.reordered,
            r.malformed + r.tally.unexpected + r.echoes
        );
    }
    verdict(cli, fresh, &rounds)
}

/// One round: every client connects and registers, forwards, and leaves;
/// then the relay's memory settles.
async fn one_round(
    target: &Target,
    cli: &SoakCli,
    plan: Arc<Plan>,
    connect_timeout: Duration,
) -> anyhow::Result<Round> {
    let watch = RssWatch::start(cli.server_pid)?;
    let mut timings = Timings::default();
    let started = Instant::now();
    let clients = connect_all(target, &plan, cli, connect_timeout).await?;
    timings.connect = started.elapsed().as_secs_f64();
    println!(
        "  {} clients registered in {:.1} s; relay VmRSS {} -> {} KiB",
        cli.clients,
        timings.connect,
        watch.start_kib(),
        rss_kib(cli.server_pid)?.0
    );
    let (inboxes, send_errors) = exchange(clients, &plan, cli, &mut timings).await?;
    let tally = tally(&plan, &inboxes);
    let rate = tally.delivered as f64 / timings.deliver.max(1e-9);
    println!(
        "  sent {} forwards in {:.2} s; delivered {} in {:.2} s ({rate:.0} msg/s); closed in {:.2} s",
        plan.total(), timings.send, tally.delivered, timings.deliver, timings.close
    );
    let rss = watch
        .finish(
            cli.memory.rss_tolerance,
            Duration::from_secs(cli.memory.settle_seconds),
        )
        .await?;
    Ok(Round {
        planned: plan.total(),
        malformed: inboxes.iter().map(|(_, i)| i.malformed).sum(),
        echoes: inboxes.iter().map(|(_, i)| i.error_echoes).sum(),
        first_problem: inboxes.iter().find_map(|(_, i)| i.first_problem.clone()),
        ended: inboxes
            .iter()
            .filter_map(|(r, i)| i.ended.as_ref().map(|e| format!("client {r}: {e}")))
            .collect(),
        tally,
        send_errors,
        timings,
        rss,
    })
}

/// Connects and registers every client of the plan, `concurrency` at a time;
/// fails (after all attempts) if any client could not register.
async fn connect_all(
    target: &Target,
    plan: &Plan,
    cli: &SoakCli,
    timeout: Duration,
) -> anyhow::Result<Vec<Ws>> {
    let sources: Vec<Option<IpAddr>> = match cli.sources.is_empty() {
        true => vec![None],
        false => cli.sources.iter().copied().map(Some).collect(),
    };
    let mut opened = futures_util::stream::iter(plan.uuids.iter().enumerate())
        .map(|(i, uuid)| {
            let source = sources[i % sources.len()];
            async move {
                let name = Plan::name(i as u32);
                let ws =
                    connect_registered(target, source, ws_config(false), &name, *uuid, timeout)
                        .await;
                (i, ws)
            }
        })
        .buffer_unordered(cli.concurrency);
    let mut clients: Vec<Option<Ws>> = (0..plan.uuids.len()).map(|_| None).collect();
    let (mut failed, mut first_error) = (0usize, None);
    while let Some((i, result)) = opened.next().await {
        match result {
            Ok(ws) => clients[i] = Some(ws),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(format!("client {i}: {error:#}"));
            }
        }
    }
    if let Some(error) = first_error {
        println!(
            "CHECK registered FAIL {failed} of {} clients could not register; first: {error}",
            clients.len()
        );
        bail!("{failed} clients could not register");
    }
    Ok(clients.into_iter().flatten().collect())
}

/// Starts every receiver, then every sender; waits (bounded) until every
/// forward was delivered; stops the receivers and closes every client.
/// Returns each receiver's inbox and the senders' errors.
async fn exchange(
    clients: Vec<Ws>,
    plan: &Arc<Plan>,
    cli: &SoakCli,
    timings: &mut Timings,
) -> anyhow::Result<(Vec<(u32, Inbox)>, Vec<String>)> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut receivers = Vec::with_capacity(clients.len());
    let mut sinks = Vec::with_capacity(clients.len());
    for (i, ws) in clients.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        let me = i as u32;
        let task = receive(stream, me, plan.clone(), received.clone(), stop.clone());
        receivers.push(tokio::spawn(task));
        sinks.push(sink);
    }
    let deadline = Instant::now() + Duration::from_secs(cli.deliver_seconds);
    let started = Instant::now();
    let senders: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(i, sink)| tokio::spawn(send_all(sink, i as u32, plan.clone())))
        .collect();
    let (sinks, send_errors) = join_senders(senders, deadline).await;
    timings.send = started.elapsed().as_secs_f64();
    let total = plan.total();
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(DELIVERY_POLL).await;
    }
    timings.deliver = started.elapsed().as_secs_f64();
    stop.cancel();
    let closing = Instant::now();
    let inboxes = close_all(receivers, sinks).await?;
    timings.close = closing.elapsed().as_secs_f64();
    Ok((inboxes, send_errors))
}

/// One client's sending side: its planned forwards, numbered per receiver.
async fn send_all(mut sink: Sink, me: u32, plan: Arc<Plan>) -> (Sink, Option<String>) {
    let mut next: HashMap<u32, u64> = HashMap::new();
    for &to in &plan.routes[me as usize] {
        let seq = next.entry(to).or_insert(0);
        let frame = match plan.frame(me, to, *seq) {
            Ok(frame) => frame,
            Err(error) => return (sink, Some(format!("{error:#}"))),
        };
        *seq += 1;
        if let Err(error) = sink.feed(Message::text(frame)).await {
            return (sink, Some(format!("client {me}: send failed: {error}")));
        }
    }
    let flushed = sink.flush().await;
    (
        sink,
        flushed
            .err()
            .map(|e| format!("client {me}: flush failed: {e}")),
    )
}

/// Waits for every sender until `deadline`; returns the sinks (in client
/// order, `None` for a sender that did not finish) and the errors.
async fn join_senders(
    senders: Vec<JoinHandle<(Sink, Option<String>)>>,
    deadline: Instant,
) -> (Vec<Option<Sink>>, Vec<String>) {
    let mut sinks = Vec::with_capacity(senders.len());
    let mut errors = Vec::new();
    for (i, mut handle) in senders.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, &mut handle).await {
            Ok(Ok((sink, error))) => {
                errors.extend(error);
                sinks.push(Some(sink));
            }
            Ok(Err(join_error)) => {
                errors.push(format!("client {i}: sender task failed: {join_error}"));
                sinks.push(None);
            }
            Err(_) => {
                handle.abort();
                errors.push(format!("client {i}: still sending at the deadline"));
                sinks.push(None);
            }
        }
    }
    (sinks, errors)
}

/// One client's receiving side: records every text frame until stopped.
async fn receive(
    mut stream: Stream,
    me: u32,
    plan: Arc<Plan>,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) -> (Stream, Inbox) {
    let mut inbox = Inbox::default();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                inbox.record(text.as_str(), me, &plan);
                received.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Message::Binary(_))) => inbox.malformed += 1,
            Some(Ok(Message::Close(frame))) => {
                inbox.ended = Some(format!("relay closed the connection: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                inbox.ended = Some(format!("connection failed: {error}"));
                break;
            }
            None => {
                inbox.ended = Some("connection ended".to_owned());
                break;
            }
        }
    }
    (stream, inbox)
}

/// Collects every receiver's inbox and closes every client politely
/// (close frame, then the relay's answer, bounded).
async fn close_all(
    receivers: Vec<JoinHandle<(Stream, Inbox)>>,
    sinks: Vec<Option<Sink>>,
) -> anyhow::Result<Vec<(u32, Inbox)>> {
    let mut inboxes = Vec::with_capacity(receivers.len());
    let mut sockets = Vec::with_capacity(receivers.len());
    for (i, (handle, sink)) in receivers.into_iter().zip(sinks).enumerate() {
        let (stream, inbox) = handle.await?;
        inboxes.push((i as u32, inbox));
        if let Some(ws) = sink.and_then(|sink| stream.reunite(sink).ok()) {
            sockets.push(ws);
        }
    }
    futures_util::stream::iter(sockets)
        .for_each_concurrent(CLOSE_CONCURRENCY, |mut ws| async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                ws.close(None).await?;
                while let Some(message) = ws.next().await {
                    message?;
                }
                Ok::<_, tokio_tungstenite::tungstenite::Error>(())
            })
            .await;
        })
        .await;
    Ok(inboxes)
}

/// Every round's counts, added up.
#[derive(Default)]
struct Totals {
    planned: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    malformed: u64,
    echoes: u64,
    pairs: u64,
    send_errors: Vec<String>,
    ended: Vec<String>,
}

impl Totals {
    fn of(rounds: &[Round]) -> Totals {
        let mut t = Totals::default();
        for r in rounds {
            t.planned += r.planned;
            t.delivered += r.tally.delivered;
            t.lost += r.tally.lost;
            t.duplicated += r.tally.duplicated;
            t.reordered += r.tally.reordered;
            t.malformed += r.malformed + r.tally.unexpected;
            t.echoes += r.echoes;
            t.pairs += r.tally.pairs;
            t.send_errors.extend(r.send_errors.iter().cloned());
            t.ended.extend(r.ended.iter().cloned());
        }
        t
    }

    /// Adds the delivery checks.
    fn check(&self, checks: &mut Checks) {
        let first = |v: &[String]| v.first().map_or(String::new(), |e| format!("; first: {e}"));
        let (planned, n_errors) = (self.planned, self.send_errors.len());
        let detail = format!(
            "{planned} forwards, {n_errors} senders failed{}",
            first(&self.send_errors)
        );
        checks.check("sent", n_errors == 0, detail);
        let detail = format!(
            "{} clients disconnected early{}",
            self.ended.len(),
            first(&self.ended)
        );
        checks.check("connections-kept", self.ended.is_empty(), detail);
        checks.check(
            "lost",
            self.lost == 0,
            format!("{} of {planned}", self.lost),
        );
        let detail = format!("{} of {planned}", self.duplicated);
        checks.check("duplicated", self.duplicated == 0, detail);
        let detail = format!(
            "{} out of order over {} sender->receiver pairs",
            self.reordered, self.pairs
        );
        checks.check("order", self.reordered == 0, detail);
        let detail = format!(
            "{} malformed or unexpected, {} error echoes",
            self.malformed, self.echoes
        );
        checks.check("well-formed", self.malformed + self.echoes == 0, detail);
    }
}

/// Prints every CHECK line (over all rounds) and the `RESULT soak` line.
fn verdict(cli: &SoakCli, fresh: u64, rounds: &[Round]) -> anyhow::Result<()> {
    for example in rounds.iter().flat_map(|r| &r.tally.examples).take(5) {
        println!("  pair with a problem: {example}");
    }
    if let Some(problem) = rounds.iter().find_map(|r| r.first_problem.as_ref()) {
        println!("  first bad frame: {problem}");
    }
    let mut checks = Checks::default();
    let detail = format!("{} clients x {} rounds", cli.clients, rounds.len());
    checks.check("registered", true, detail);
    let t = Totals::of(rounds);
    t.check(&mut checks);
    let rss: Vec<RoundRss> = rounds.iter().map(|r| r.rss).collect();
    rss_checks(&mut checks, "relay", fresh, &rss, cli.memory.rss_tolerance);
    let last = rounds.last().expect("at least one round");
    let lt = &last.timings;
    let rate = last.tally.delivered as f64 / lt.deliver.max(1e-9);
    let peak = rss.iter().map(|r| r.peak).max().unwrap_or(0);
    println!(
        "RESULT soak clients={} forwards={} peers={} rounds={} sent={} delivered={} lost={} duplicated={} reordered={} malformed={} error_echoes={} disconnected={} connect_s={:.2} send_s={:.2} deliver_s={:.2} msgs_per_sec={rate:.0} rss_fresh_kib={fresh} rss_start_kib={} rss_peak_kib={peak} rss_end_kib={} rss_settle_s={:.1} pass={}",
        cli.clients, cli.forwards, cli.peers, rounds.len(), t.planned, t.delivered, t.lost,
        t.duplicated, t.reordered, t.malformed, t.echoes, t.ended.len(), lt.connect, lt.send,
        lt.deliver, last.rss.start, last.rss.end, last.rss.settle_s, checks.all_passed()
    );
    checks.finish()
}
