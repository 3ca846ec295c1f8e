//! `failover`: N real reconnecting clients — the library's `RelayClient`,
//! each knowing every node's URL (`RelayClientConfig::fallback_urls`, default
//! backoff) — register on `--url` (the node to kill); once all are
//! registered there (and, with `--admin-url`, listed by the cluster), the
//! node's process is killed with SIGKILL and the clock runs until every
//! client reported `RelayEvent::Registered` again on another URL. With
//! `--admin-url` (a surviving node's admin listener) `/clients` is then
//! polled until it lists all N on nodes other than `--killed-node`.
//!
//! Runs on an actix system of its own (the relay client is an actor), one
//! thread; clients start in waves of `--concurrency` so that every first
//! registration lands on `--url`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use switchboard::client::relay_client::{RelayClient, RelayClientConfig, RelayEvent, Shutdown};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::latency::percentile;

/// Command-line settings of `failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverCli {
    /// Reconnecting clients to start on --url.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// The other nodes' URLs, comma-separated; client i tries them in turn
    /// starting at i modulo their number, so the clients spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    fallback_urls: Vec<String>,
    /// Process id of the node behind --url, killed with SIGKILL.
    #[arg(long)]
    kill_pid: u32,
    /// A surviving node's admin base URL (http://host:port) whose /clients
    /// is checked before the kill and after the failover.
    #[arg(long)]
    admin_url: Option<String>,
    /// Node id of the killed node (entries on it do not count after the kill).
    #[arg(long, default_value = "")]
    killed_node: String,
    /// Clients started at once (the next wave starts when they registered).
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Longest wait for all clients to register before the kill, in seconds.
    #[arg(long, default_value_t = 60.0)]
    start_seconds: f64,
    /// Longest wait for all clients to register again after the kill, in seconds.
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
}

/// What one client reported, when.
struct Seen {
    at: Instant,
    client: usize,
    event: RelayEvent,
}

/// The subscriber of one client: passes its events on, tagged with its index.
struct Collector {
    client: usize,
    tx: mpsc::UnboundedSender<Seen>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<RelayEvent> for Collector {
    type Result = ();
    fn handle(&mut self, event: RelayEvent, _: &mut Context<Self>) {
        let _ = self.tx.send(Seen {
            at: Instant::now(),
            client: self.client,
            event,
        });
    }
}

/// Per-client bookkeeping of the run.
#[derive(Default)]
struct Tally {
    /// Registered (on any URL) since the phase started, by client.
    registered: HashMap<usize, (Instant, String)>,
    disconnects: usize,
    /// When the first and the last `Disconnected` arrived.
    disconnected: Option<(Instant, Instant)>,
    failed: usize,
}

impl Tally {
    fn take(&mut self, seen: Seen) {
        match seen.event {
            RelayEvent::Registered { relay, .. } => {
                self.registered
                    .entry(seen.client)
                    .or_insert((seen.at, relay));
            }
            RelayEvent::Disconnected { .. } => {
                self.disconnects += 1;
                let (first, _) = self.disconnected.unwrap_or((seen.at, seen.at));
                self.disconnected = Some((first, seen.at));
            }
            RelayEvent::Failed(error) => {
                self.failed += 1;
                if self.failed <= 5 {
                    println!("  client {}: failed for good: {error}", seen.client);
                }
            }
            RelayEvent::Peer(_) => {}
        }
    }
}

/// Receives events into `tally` until `done(tally)` or `deadline`; true if done.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    tally: &mut Tally,
    deadline: Instant,
    done: impl Fn(&Tally) -> bool,
) -> bool {
    while !done(tally) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(seen)) => tally.take(seen),
            Ok(None) | Err(_) => return done(tally),
        }
    }
    true
}

/// Our clients listed by `/clients` of `admin`, on nodes other than `killed`.
async fn listed(admin: &str, ours: &HashSet<Uuid>, killed: &str) -> anyhow::Result<usize> {
    let url = format!("{}/clients", admin.trim_end_matches('/'));
    let mut response = awc::Client::default()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| anyhow!("GET {url}: {e}"))?;
    let body = response
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| anyhow!("GET {url}: {e}"))?;
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&body).with_context(|| format!("{url} is not a JSON list"))?;
    Ok(list
        .iter()
        .filter(|c| c.get("node").and_then(|n| n.as_str()) != Some(killed))
        .filter_map(|c| c.get("uuid")?.as_str()?.parse::<Uuid>().ok())
        .filter(|u| ours.contains(u))
        .count())
}

/// Polls `/clients` until it lists all of `ours` (≤ 10 s); (count, seconds from `since`).
async fn poll_listed(
    admin: &str,
    ours: &HashSet<Uuid>,
    killed: &str,
    since: Instant,
) -> (usize, f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut count = 0;
    while Instant::now() < deadline {
        match listed(admin, ours, killed).await {
            Ok(n) => count = n,
            Err(error) => println!("  {error:#}"),
        }
        if count == ours.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (count, since.elapsed().as_secs_f64())
}

fn config(i: usize, url: &str, fallbacks: &[String], uuid: Uuid) -> RelayClientConfig {
    let mut config = RelayClientConfig::new(url);
    let n = fallbacks.len();
    config.fallback_urls = (0..n).map(|k| fallbacks[(i + k) % n].clone()).collect();
    config.name = Some(format!("failover-{i}"));
    config.uuid = Some(uuid);
    config
}

/// Runs one failover on its own actix system; prints one `RESULT failover` line.
pub fn run(url: &str, args: &FailoverCli) -> anyhow::Result<()> {
    if args.clients == 0 || args.concurrency == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    let start_limit = crate::seconds("--start-seconds", args.start_seconds)?;
    let max = crate::seconds("--max-seconds", args.max_seconds)?;
    actix::System::new().block_on(run_on_system(url, args, start_limit, max))
}

async fn run_on_system(
    url: &str,
    args: &FailoverCli,
    start_limit: Duration,
    max: Duration,
) -> anyhow::Result<()> {
    let n = args.clients;
    println!(
        "failover: {n} RelayClients on {url} (fallbacks {}, default backoff), then SIGKILL pid {}",
        args.fallback_urls.join(","),
        args.kill_pid
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let uuids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let ours: HashSet<Uuid> = uuids.iter().copied().collect();
    let mut clients = Vec::with_capacity(n);
    let mut tally = Tally::default();
    let started = Instant::now();
    let deadline = started + start_limit;
    for wave in (0..n).step_by(args.concurrency) {
        let end = (wave + args.concurrency).min(n);
        for (i, uuid) in uuids.iter().enumerate().take(end).skip(wave) {
            let subscriber = Collector {
                client: i,
                tx: tx.clone(),
            }
            .start();
            let client = RelayClient::new(
                config(i, url, &args.fallback_urls, *uuid),
                subscriber.recipient(),
            )?;
            clients.push(client.start());
        }
        if !collect(&mut rx, &mut tally, deadline, |t| t.registered.len() >= end).await {
            bail!(
                "only {} of {n} clients registered within {start_limit:?}",
                tally.registered.len()
            );
        }
    }
    let elsewhere = tally.registered.values().filter(|(_, r)| r != url).count();
    if elsewhere > 0 {
        bail!("{elsewhere} clients registered first on another node than {url}");
    }
    println!(
        "  {n} registered on {url} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let (listed_before, _) = match &args.admin_url {
        Some(admin) => poll_listed(admin, &ours, "", Instant::now()).await,
        None => (0, 0.0),
    };
    let result = kill_and_measure(url, args, max, &mut rx, &ours).await;
    shutdown(clients).await;
    let (report, listed_after, listed_after_s) = result?;
    println!("RESULT failover {report} listed_before={listed_before} listed_after={listed_after} listed_after_s={listed_after_s:.3}");
    Ok(())
}

/// Kills the node, waits for every client to register elsewhere; returns the
/// RESULT fields, then the `/clients` cross-check (count, seconds after the kill).
async fn kill_and_measure(
    url: &str,
    args: &FailoverCli,
    max: Duration,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    ours: &HashSet<Uuid>,
) -> anyhow::Result<(String, usize, f64)> {
    let n = args.clients;
    // Events from before the kill do not count.
    while rx.try_recv().is_ok() {}
    let killed_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &args.kill_pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -KILL {} failed: {status}", args.kill_pid);
    }
    let kill_s = killed_at.elapsed().as_secs_f64();
    let mut tally = Tally::default();
    let moved = |t: &Tally| t.registered.values().filter(|(_, r)| r != url).count();
    collect(rx, &mut tally, killed_at + max, |t| moved(t) >= n).await;
    let mut times: Vec<u64> = tally
        .registered
        .values()
        .filter(|(_, r)| r != url)
        .map(|(at, _)| u64::try_from(at.duration_since(killed_at).as_micros()).unwrap_or(u64::MAX))
        .collect();
    times.sort_unstable();
    let mut per_url: HashMap<&str, usize> = HashMap::new();
    for (_, relay) in tally.registered.values() {
        *per_url.entry(relay.as_str()).or_default() += 1;
    }
    let moved_count = moved(&tally);
    let secs = |us: u64| us as f64 / 1e6;
    let last = times.last().copied().unwrap_or(0);
    let (lost_first, lost_last) = tally.disconnected.map_or((0.0, 0.0), |(a, b)| {
        let s = |t: Instant| t.duration_since(killed_at).as_secs_f64();
        (s(a), s(b))
    });
    println!(
        "  after SIGKILL (the kill command took {kill_s:.3} s): {} disconnect events from {lost_first:.3} s to {lost_last:.3} s; {moved_count} of {n} registered elsewhere: first {:.3} s, p50 {:.3} s, p99 {:.3} s, last {:.3} s; {} failed; by URL {per_url:?}",
        tally.disconnects,
        secs(times.first().copied().unwrap_or(0)),
        secs(percentile(&times, 50.0)),
        secs(percentile(&times, 99.0)),
        secs(last),
        tally.failed
    );
    let (listed_after, listed_after_s) = match &args.admin_url {
        Some(admin) => poll_listed(admin, ours, &args.killed_node, killed_at).await,
        None => (0, 0.0),
    };
    let report = format!(
        "clients={n} reregistered={moved_count} seconds={:.3} first_s={:.3} p50_s={:.3} p99_s={:.3} lost_first_s={lost_first:.3} lost_last_s={lost_last:.3} kill_s={kill_s:.3} disconnects={} failed={} errors={}",
        if moved_count == n { secs(last) } else { max.as_secs_f64() },
        secs(times.first().copied().unwrap_or(0)),
        secs(percentile(&times, 50.0)),
        secs(percentile(&times, 99.0)),
        tally.disconnects,
        tally.failed,
        n - moved_count
    );
    Ok((report, listed_after, listed_after_s))
}

/// Closes every client (1000, so the nodes unregister them), at most 10 s in all.
async fn shutdown(clients: Vec<Addr<RelayClient>>) {
    let all = futures_util::future::join_all(clients.iter().map(|c| c.send(Shutdown)));
    let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
}
