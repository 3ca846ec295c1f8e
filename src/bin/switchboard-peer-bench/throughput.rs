//! `throughput`: A sends `--bytes` as `--message`-sized messages to B over
//! one open connection, `--runs` times; B's subscriber counts the bytes.

use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::bail;
use bytes::Bytes;
use switchboard::client::peer_manager::{
    Connect, Flush, PeerManager, PeerMessage, Send, Subscribe,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::common::{close_manager, manager, ms, start_relay, stats, STEP_TIMEOUT};

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

/// Runs the `throughput` subcommand.
pub async fn throughput(
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
