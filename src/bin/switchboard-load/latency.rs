//! `latency`: one pair, exactly one message in flight; the one-way latency
//! is B's receive instant minus A's send instant (one process, monotonic clock).
//! B may be on another relay (`--peer-url`: another node of a cluster).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::client::{
    check_forwarded, connect_registered, frame_seq, peer_frame, ws_config, Target, Ws,
};

/// Settings of one latency run.
#[derive(Debug, Clone)]
pub struct LatencyArgs {
    /// Messages measured.
    pub count: usize,
    /// Messages sent first and not measured.
    pub warmup: usize,
    /// Encoded size of each `peer_connection` frame, in bytes.
    pub size: usize,
    /// Longest wait for one message.
    pub message_timeout: Duration,
    /// Longest whole run.
    pub max_duration: Duration,
    /// Stop measuring after this long (fewer than `count` samples is then
    /// not an error): a probe beside another load, for as long as it runs.
    pub measure_for: Option<Duration>,
    /// Time allowed to connect and register one client.
    pub connect_timeout: Duration,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

/// Sends message `seq` from A and waits for it at B; returns the one-way time.
async fn one_message(
    ws_a: &mut Ws,
    ws_b: &mut Ws,
    (a, b): (Uuid, Uuid),
    seq: u64,
    args: &LatencyArgs,
) -> anyhow::Result<Duration> {
    let frame = Message::text(peer_frame(a, "latency-a", b, seq, args.size)?);
    let sent_at = Instant::now();
    ws_a.send(frame)
        .await
        .with_context(|| format!("sending message {seq}"))?;
    let deadline = sent_at + args.message_timeout;
    let (received_at, text) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, ws_b.next()).await {
            Err(_) => {
                // Say why if the relay echoed an error to A.
                let echo = tokio::time::timeout(Duration::from_millis(200), ws_a.next()).await;
                bail!(
                    "message {seq} not received within {:?} (A got: {echo:?})",
                    args.message_timeout
                );
            }
            Ok(None) => bail!("B's connection ended"),
            Ok(Some(message)) => message?,
        };
        match message {
            Message::Text(text) => break (Instant::now(), text),
            Message::Close(frame) => bail!("relay closed B's connection: {frame:?}"),
            Message::Binary(_) => bail!("unexpected binary frame at B"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    };
    let forwarded = check_forwarded(text.as_str(), a, b)?;
    let got = frame_seq(&forwarded)
        .ok_or_else(|| anyhow!("forwarded frame {seq} carries no sequence number"))?;
    if got != seq {
        bail!("expected message {seq}, received message {got}");
    }
    Ok(received_at.duration_since(sent_at))
}

/// Runs the latency test; prints a human summary and one `RESULT latency` line.
pub async fn run(target: &Target, peer: &Target, args: &LatencyArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    println!(
        "latency: 1 pair, A on {} -> B on {}, frame {} B, {} warm-up + {} measured messages, one in flight",
        target.url, peer.url, args.size, args.warmup, args.count
    );
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut config = ws_config(true);
    config.write_buffer_size = 0;
    let (mut ws_a, mut ws_b) = tokio::try_join!(
        connect_registered(target, None, config, "latency-a", a, args.connect_timeout),
        connect_registered(peer, None, config, "latency-b", b, args.connect_timeout),
    )?;
    let started = Instant::now();
    let total = args.warmup + args.count;
    let mut samples: Vec<u64> = Vec::with_capacity(args.count.min(1 << 20));
    let mut measuring_since: Option<Instant> = None;
    for seq in 0..total as u64 {
        if let (Some(limit), Some(since)) = (args.measure_for, measuring_since) {
            if since.elapsed() >= limit {
                break;
            }
        }
        if started.elapsed() > args.max_duration {
            bail!(
                "stopped after {:?} with {} of {total} messages done",
                args.max_duration,
                seq
            );
        }
        let one_way = one_message(&mut ws_a, &mut ws_b, (a, b), seq, args).await?;
        if seq >= args.warmup as u64 {
            measuring_since.get_or_insert_with(Instant::now);
            samples.push(u64::try_from(one_way.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws_a.close(None)).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), ws_b.close(None)).await;

    samples.sort_unstable();
    let mean = samples.iter().map(|&n| n as f64).sum::<f64>() / samples.len() as f64;
    let (p50, p90, p99, p999) = (
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
        percentile(&samples, 99.9),
    );
    let (min, max) = (samples[0], samples[samples.len() - 1]);
    println!(
        "  one-way latency (µs): min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
        us(min),
        us(p50),
        us(p90),
        us(p99),
        us(p999),
        us(max),
        mean / 1000.0
    );
    println!(
        "RESULT latency p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1} min_us={:.1} count={} size={}",
        us(p50),
        us(p90),
        us(p99),
        us(p999),
        us(max),
        mean / 1000.0,
        us(min),
        samples.len(),
        args.size
    );
    Ok(())
}
