//! `takeover`: a client registers a fresh UUID on `--url` (A), a second one
//! registers the same UUID on `--peer-url` (B); the time measured runs from
//! sending B's `relay_registration` to A's old socket receiving its close
//! frame, which must carry 4004 (replaced), while B must get its success
//! response. With B on another node of a cluster the takeover crosses nodes
//! (Redis script + publish to A's node); with B on A it is the same-node
//! reference. B's WebSocket is open before the clock starts, so only the
//! registration is timed.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::protocol::close::REPLACED;
use switchboard::protocol::relay::encode_registration;
use switchboard::protocol::{decode, RelayMessage, RelayRegistration};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::client::{connect, connect_registered, ws_config, Target, Ws};
use crate::latency::percentile;

/// Settings of one takeover run.
#[derive(Debug, Clone)]
pub struct TakeoverArgs {
    /// Takeovers measured, each with a fresh UUID.
    pub count: usize,
    /// Takeovers done first and not measured.
    pub warmup: usize,
    /// Longest wait for one takeover (B's response and A's close frame).
    pub takeover_timeout: Duration,
    /// Longest whole run.
    pub max_duration: Duration,
    /// Time allowed to connect and register one client.
    pub connect_timeout: Duration,
}

/// Reads A's socket until its close frame; returns when it arrived and its code.
async fn close_of(ws: &mut Ws) -> anyhow::Result<(Instant, u16)> {
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("A's connection ended without a close frame"))?
            .context("A's connection failed before a close frame")?;
        match message {
            Message::Close(Some(frame)) => return Ok((Instant::now(), u16::from(frame.code))),
            Message::Close(None) => bail!("A's close frame carries no code"),
            Message::Text(text) => bail!("unexpected frame at A: {text}"),
            Message::Binary(_) => bail!("unexpected binary frame at A"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// Reads B's socket until the reply to its registration; returns when it arrived.
async fn response_of(ws: &mut Ws) -> anyhow::Result<Instant> {
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("B's connection ended before relay_response"))?
            .context("B's connection failed before relay_response")?;
        match message {
            Message::Text(text) => match decode(text.as_str()) {
                Ok(RelayMessage::Response(r)) if r.success && !r.error => return Ok(Instant::now()),
                Ok(RelayMessage::Response(r)) => bail!("B's registration refused: {:?}", r.message),
                Ok(other) => bail!("expected relay_response at B, got {other:?}"),
                Err(error) => bail!("undecodable reply at B: {error}"),
            },
            Message::Close(frame) => bail!("relay closed B's connection: {frame:?}"),
            Message::Binary(_) => bail!("unexpected binary frame at B"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// One takeover of a fresh UUID; returns (register → A's 4004, register → B's response).
async fn one_takeover(
    target: &Target,
    peer: &Target,
    args: &TakeoverArgs,
) -> anyhow::Result<(Duration, Duration)> {
    let uuid = Uuid::new_v4();
    let config = ws_config(false);
    let (mut ws_a, mut ws_b) = tokio::try_join!(
        connect_registered(
            target,
            None,
            config,
            "takeover-a",
            uuid,
            args.connect_timeout
        ),
        async {
            tokio::time::timeout(args.connect_timeout, connect(peer, None, config))
                .await
                .map_err(|_| anyhow!("connecting B took longer than {:?}", args.connect_timeout))?
        },
    )?;
    let frame = encode_registration(&RelayRegistration {
        name: "takeover-b".to_owned(),
        uuid,
    });
    let sent_at = Instant::now();
    ws_b.send(Message::text(frame))
        .await
        .context("cannot send B's relay_registration")?;
    let both = async { tokio::join!(close_of(&mut ws_a), response_of(&mut ws_b)) };
    let (closed, answered) = tokio::time::timeout(args.takeover_timeout, both)
        .await
        .map_err(|_| anyhow!("takeover not done within {:?}", args.takeover_timeout))?;
    let answered = answered?;
    let (closed_at, code) = closed?;
    if code != REPLACED {
        bail!("A's socket closed with {code}, expected {REPLACED}");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws_b.close(None)).await;
    Ok((
        closed_at.duration_since(sent_at),
        answered.duration_since(sent_at),
    ))
}

fn us(d: u64) -> f64 {
    d as f64 / 1000.0
}

/// Runs the takeovers; prints a human summary and one `RESULT takeover` line.
pub async fn run(target: &Target, peer: &Target, args: &TakeoverArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    println!(
        "takeover: register on {} then the same UUID on {}, {} warm-up + {} measured, fresh UUID each",
        target.url, peer.url, args.warmup, args.count
    );
    let started = Instant::now();
    let total = args.warmup + args.count;
    let (mut closes, mut responses) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let mut errors = 0usize;
    let mut done = 0usize;
    for i in 0..total {
        if started.elapsed() > args.max_duration {
            println!(
                "  stopped after {:?} with {i} of {total} takeovers done",
                args.max_duration
            );
            break;
        }
        done += 1;
        match one_takeover(target, peer, args).await {
            Ok((close, response)) if i >= args.warmup => {
                closes.push(u64::try_from(close.as_nanos()).unwrap_or(u64::MAX));
                responses.push(u64::try_from(response.as_nanos()).unwrap_or(u64::MAX));
            }
            Ok(_) => {}
            Err(error) => {
                errors += 1;
                if errors <= 5 {
                    println!("  takeover {i}: {error:#}");
                }
            }
        }
    }
    closes.sort_unstable();
    responses.sort_unstable();
    let (p50, p90, p99, max) = (
        percentile(&closes, 50.0),
        percentile(&closes, 90.0),
        percentile(&closes, 99.0),
        closes.last().copied().unwrap_or(0),
    );
    let (r50, r99) = (percentile(&responses, 50.0), percentile(&responses, 99.0));
    println!(
        "  register at B -> 4004 at A (µs): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}; B's response p50 {:.1} p99 {:.1}; {errors} errors in {done}",
        us(p50), us(p90), us(p99), us(max), us(r50), us(r99)
    );
    println!(
        "RESULT takeover p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1} response_p50_us={:.1} response_p99_us={:.1} count={} errors={errors}",
        us(p50), us(p90), us(p99), us(max), us(r50), us(r99), closes.len()
    );
    if closes.is_empty() {
        bail!("no takeover succeeded");
    }
    Ok(())
}
