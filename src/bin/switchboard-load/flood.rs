//! `flood`: P pairs, A sends to B as fast as a per-pair window allows;
//! reports forwarded messages per second received at B. The receivers may
//! be on another relay (`--peer-url`: another node of a cluster).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::client::{check_forwarded, connect_registered, peer_frame, ws_config, Target, Ws};

/// Settings of one flood run.
#[derive(Debug, Clone)]
pub struct FloodArgs {
    /// Number of sender/receiver pairs.
    pub pairs: usize,
    /// Length of the measured period.
    pub seconds: f64,
    /// Length of the warm-up before measuring.
    pub warmup: f64,
    /// Encoded size of each `peer_connection` frame, in bytes.
    pub size: usize,
    /// Most unacknowledged messages in flight per pair.
    pub window: u64,
    /// Time allowed to connect and register one client.
    pub connect_timeout: Duration,
}

/// B fully decodes and checks the first received frame and every 4096th after it.
const VERIFY_MASK: u64 = 4096 - 1;
/// How long idle loops sleep before looking at the stop flags again.
const POLL: Duration = Duration::from_millis(50);

/// Per-pair shared state: B's receipts are A's acknowledgements.
struct PairState {
    a: Uuid,
    b: Uuid,
    sent: AtomicU64,
    received: AtomicU64,
    room: Notify,
}

/// Flags the controller raises: `stop` ends sending, `done` ends reading.
#[derive(Default)]
struct Flags {
    stop: AtomicBool,
    done: AtomicBool,
}

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// A: keeps at most `window` messages unacknowledged; refills when half are acknowledged.
async fn sender(
    mut sink: Sink,
    frame: Message,
    pair: Arc<PairState>,
    window: u64,
    flags: Arc<Flags>,
) -> anyhow::Result<Sink> {
    let low = window / 2;
    let mut sent = 0u64;
    while !flags.stop.load(Ordering::Relaxed) {
        let in_flight = sent.saturating_sub(pair.received.load(Ordering::Acquire));
        if in_flight > low {
            let _ = tokio::time::timeout(POLL, pair.room.notified()).await;
            continue;
        }
        for _ in in_flight..window {
            sink.feed(frame.clone()).await?;
            sent += 1;
        }
        pair.sent.store(sent, Ordering::Release);
        sink.flush().await?;
    }
    Ok(sink)
}

/// B: counts every text frame (only forwards arrive at B) and checks a sample.
async fn receiver(
    mut stream: Stream,
    pair: Arc<PairState>,
    flags: Arc<Flags>,
) -> anyhow::Result<Stream> {
    let mut count = 0u64;
    while !flags.done.load(Ordering::Relaxed) {
        let message = match tokio::time::timeout(POLL, stream.next()).await {
            Err(_) => continue,
            Ok(None) => bail!("B's connection ended"),
            Ok(Some(message)) => message?,
        };
        match message {
            Message::Text(text) => {
                count += 1;
                pair.received.store(count, Ordering::Release);
                pair.room.notify_one();
                if count == 1 || count & VERIFY_MASK == 0 {
                    check_forwarded(text.as_str(), pair.a, pair.b)?;
                }
            }
            Message::Close(frame) => bail!("relay closed B's connection: {frame:?}"),
            Message::Binary(_) => bail!("unexpected binary frame at B"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    Ok(stream)
}

/// A's incoming side: anything but control frames is an error echo.
async fn sender_inbox(mut stream: Stream, flags: Arc<Flags>) -> anyhow::Result<Stream> {
    while !flags.done.load(Ordering::Relaxed) {
        let message = match tokio::time::timeout(POLL, stream.next()).await {
            Err(_) => continue,
            Ok(None) => bail!("A's connection ended"),
            Ok(Some(message)) => message?,
        };
        match message {
            Message::Text(text) => {
                let head: String = text.as_str().chars().take(300).collect();
                bail!("A received an unexpected frame (error echo?): {head}")
            }
            Message::Close(frame) => bail!("relay closed A's connection: {frame:?}"),
            Message::Binary(_) => bail!("unexpected binary frame at A"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    Ok(stream)
}

fn total(pairs: &[Arc<PairState>]) -> u64 {
    pairs
        .iter()
        .map(|p| p.received.load(Ordering::Acquire))
        .sum()
}

/// Waits for a task until `deadline`, aborting it if it is still running then.
async fn join<T>(
    mut handle: JoinHandle<anyhow::Result<T>>,
    deadline: Instant,
) -> anyhow::Result<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, &mut handle).await {
        Err(_) => {
            handle.abort();
            Err(anyhow!("task did not finish in time"))
        }
        Ok(Err(join_error)) => Err(anyhow!("task failed: {join_error}")),
        Ok(Ok(result)) => result,
    }
}

/// The tasks of a running flood.
struct Running {
    flags: Arc<Flags>,
    pairs: Vec<Arc<PairState>>,
    senders: Vec<JoinHandle<anyhow::Result<Sink>>>,
    readers: Vec<(JoinHandle<anyhow::Result<Stream>>, Sink)>,
    inboxes: Vec<JoinHandle<anyhow::Result<Stream>>>,
}

/// What the measured period saw.
struct Measured {
    forwarded: u64,
    elapsed: f64,
    series: Vec<f64>,
}

/// Runs the flood; prints a human summary and one `RESULT flood` line.
pub async fn run(target: &Target, peer: &Target, args: &FloodArgs) -> anyhow::Result<()> {
    if args.pairs == 0 || args.window == 0 {
        bail!("--pairs and --window must be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds <= 3600.0 && (0.0..=600.0).contains(&args.warmup)) {
        bail!("--seconds must be in (0, 3600] and --warmup in [0, 600]");
    }
    println!(
        "flood: {} pairs, A on {} -> B on {}, frame {} B, window {}, warm-up {:.1} s, measured {:.1} s",
        args.pairs, target.url, peer.url, args.size, args.window, args.warmup, args.seconds
    );
    let running = start(target, peer, args).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let measured = measure(&running, Duration::from_secs_f64(args.seconds)).await;
    let pairs = running.pairs.clone();
    let errors = stop(running).await;
    report(&measured, &pairs, args, &errors);
    if !errors.is_empty() {
        bail!("flood finished with {} errors", errors.len());
    }
    Ok(())
}

/// Connects every pair and starts its tasks. All senders connect first,
/// then all receivers, one at a time: a relay that deals connections to
/// worker threads round robin spreads the senders (where decoding happens)
/// evenly.
async fn start(target: &Target, peer: &Target, args: &FloodArgs) -> anyhow::Result<Running> {
    let ids: Vec<(Uuid, Uuid)> = (0..args.pairs)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    let timeout = args.connect_timeout;
    let mut socks_a = Vec::with_capacity(args.pairs);
    for (i, (a, _)) in ids.iter().enumerate() {
        let name = format!("flood-{i}-a");
        socks_a.push(connect_registered(target, None, ws_config(true), &name, *a, timeout).await?);
    }
    let mut socks_b = Vec::with_capacity(args.pairs);
    for (i, (_, b)) in ids.iter().enumerate() {
        let name = format!("flood-{i}-b");
        socks_b.push(connect_registered(peer, None, ws_config(true), &name, *b, timeout).await?);
    }
    let mut running = Running {
        flags: Arc::new(Flags::default()),
        pairs: Vec::with_capacity(args.pairs),
        senders: Vec::new(),
        readers: Vec::new(),
        inboxes: Vec::new(),
    };
    let sockets = socks_a.into_iter().zip(socks_b).zip(ids);
    for (i, ((ws_a, ws_b), (a, b))) in sockets.enumerate() {
        let frame = Message::text(peer_frame(
            a,
            &format!("flood-{i}-a"),
            b,
            i as u64,
            args.size,
        )?);
        let pair = Arc::new(PairState {
            a,
            b,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            room: Notify::new(),
        });
        let flags = &running.flags;
        let (sink_a, stream_a) = ws_a.split();
        let (sink_b, stream_b) = ws_b.split();
        let reader = tokio::spawn(receiver(stream_b, pair.clone(), flags.clone()));
        running.readers.push((reader, sink_b));
        let inbox = tokio::spawn(sender_inbox(stream_a, flags.clone()));
        running.inboxes.push(inbox);
        let sender = sender(sink_a, frame, pair.clone(), args.window, flags.clone());
        running.senders.push(tokio::spawn(sender));
        running.pairs.push(pair);
    }
    Ok(running)
}

/// Counts what B receives over `measure`, with a rate for every second;
/// stops early if a task ended (its error is reported by [`stop`]).
async fn measure(running: &Running, measure: Duration) -> Measured {
    let start_count = total(&running.pairs);
    let start = Instant::now();
    let mut last = (start, start_count);
    let mut series = Vec::new();
    while start.elapsed() < measure {
        let step = (measure - start.elapsed()).min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
        let now = (Instant::now(), total(&running.pairs));
        let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64().max(1e-9);
        series.push(rate);
        last = now;
        let ended = running.senders.iter().any(|h| h.is_finished())
            || running.readers.iter().any(|(h, _)| h.is_finished());
        if ended {
            break;
        }
    }
    Measured {
        forwarded: total(&running.pairs) - start_count,
        elapsed: start.elapsed().as_secs_f64(),
        series,
    }
}

/// Stops sending, lets in-flight messages arrive (bounded), stops reading
/// and closes every socket; returns the errors seen (lost messages included).
async fn stop(running: Running) -> Vec<String> {
    let Running {
        flags,
        pairs,
        senders,
        readers,
        inboxes,
    } = running;
    flags.stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sinks = Vec::new();
    for handle in senders {
        match join(handle, deadline).await {
            Ok(sink) => sinks.push(sink),
            Err(error) => errors.push(format!("sender: {error:#}")),
        }
    }
    let unanswered = |p: &Arc<PairState>| {
        p.sent
            .load(Ordering::Acquire)
            .saturating_sub(p.received.load(Ordering::Acquire))
    };
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_deadline && pairs.iter().any(|p| unanswered(p) > 0) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lost: u64 = pairs.iter().map(unanswered).sum();
    if lost > 0 {
        errors.push(format!(
            "{lost} messages sent but not received within 3 s of stopping"
        ));
    }
    flags.done.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(3);
    for (handle, sink_b) in readers {
        if let Err(error) = join(handle, deadline).await {
            errors.push(format!("receiver: {error:#}"));
        }
        sinks.push(sink_b);
    }
    for handle in inboxes {
        if let Err(error) = join(handle, deadline).await {
            errors.push(format!("sender inbox: {error:#}"));
        }
    }
    for mut sink in sinks {
        let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
    }
    errors
}

/// Prints the summary, every error, and the `RESULT flood` line.
fn report(m: &Measured, pairs: &[Arc<PairState>], args: &FloodArgs, errors: &[String]) {
    let rate = m.forwarded as f64 / m.elapsed.max(1e-9);
    let per_pair: Vec<u64> = pairs
        .iter()
        .map(|p| p.received.load(Ordering::Acquire))
        .collect();
    let series: Vec<String> = m.series.iter().map(|r| format!("{r:.0}")).collect();
    println!("  per-second msg/s: {}", series.join(" "));
    println!(
        "  received per pair (whole run): min {} max {}",
        per_pair.iter().min().copied().unwrap_or(0),
        per_pair.iter().max().copied().unwrap_or(0)
    );
    println!(
        "  forwarded {} messages in {:.3} s = {rate:.0} msg/s",
        m.forwarded, m.elapsed
    );
    for error in errors.iter() {
        println!("  ERROR {error}");
    }
    println!(
        "RESULT flood msgs_per_sec={rate:.0} forwarded={} seconds={:.3} pairs={} window={} size={} errors={}",
        m.forwarded,
        m.elapsed,
        args.pairs,
        args.window,
        args.size,
        errors.len()
    );
}
