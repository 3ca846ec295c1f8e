//! A server's memory during a soak: its VmRSS at the start, sampled in the
//! background for the peak, and a bounded wait for it to come back near the
//! start once the load is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checks::Checks;
use crate::client::rss_kib;

/// How often the background sampler reads VmRSS.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often [`RssWatch::finish`] reads VmRSS while waiting.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// Shortest wait in [`RssWatch::finish`]: jemalloc's dirty-page decay (10 s)
/// plus a margin, so the end value is settled rather than the first one
/// under the limit.
const MIN_SETTLE: Duration = Duration::from_secs(12);
/// Memory a fresh server keeps once it has served a load at all, whatever
/// the load's size, in KiB: thread caches, allocator metadata, table
/// capacity. Measured: 2.5 MB for the tunnel relay after 1 000 clients (its
/// load took 34 MB), so `rss-released` allows this on top of its share.
const FIRST_USE_KIB: u64 = 8 * 1024;

/// VmRSS of one process over one round: start, running peak.
pub struct RssWatch {
    pid: u32,
    start: u64,
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// VmRSS over one round of a soak, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct RoundRss {
    /// When the round started.
    pub start: u64,
    /// Largest value sampled during the round.
    pub peak: u64,
    /// After the round's clients left and the value settled (or time ran out).
    pub end: u64,
    /// How long the settling wait took, in seconds.
    pub settle_s: f64,
}

impl RssWatch {
    /// Reads the start value now and samples the peak until dropped or stopped.
    pub fn start(pid: u32) -> anyhow::Result<RssWatch> {
        let start = rss_kib(pid)?.0;
        let peak = Arc::new(AtomicU64::new(start));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample(pid, peak.clone(), stop.clone()));
        Ok(RssWatch {
            pid,
            start,
            peak,
            stop,
            task,
        })
    }

    /// VmRSS when the watch started, in KiB.
    pub fn start_kib(&self) -> u64 {
        self.start
    }

    /// Largest VmRSS sampled so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Waits at least [`MIN_SETTLE`] and up to `max` for VmRSS to be at most
    /// `start × (1 + tolerance)`, reading it every 0.5 s (an allocator returns
    /// freed pages to the system lazily), then stops.
    pub async fn finish(self, tolerance: f64, max: Duration) -> anyhow::Result<RoundRss> {
        let limit = self.start as f64 * (1.0 + tolerance);
        let began = Instant::now();
        loop {
            let now = rss_kib(self.pid)?.0;
            self.peak.fetch_max(now, Ordering::Relaxed);
            let waited = began.elapsed();
            if (now as f64 <= limit && waited >= MIN_SETTLE) || waited >= max {
                return Ok(RoundRss {
                    start: self.start,
                    peak: self.peak_kib(),
                    end: now,
                    settle_s: began.elapsed().as_secs_f64(),
                });
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

/// Prints each round's figures and adds the two memory checks:
/// `rss-returns` (the last round ends within `tolerance` of where it
/// started: nothing accumulates from round to round; with one round, the
/// start is the fresh process's) and `rss-released` (what stays above the
/// fresh process's `fresh` KiB after the last round is at most `tolerance`
/// of the largest growth, plus [`FIRST_USE_KIB`]: freed memory goes back to
/// the system).
pub fn rss_checks(
    checks: &mut Checks,
    what: &str,
    fresh: u64,
    rounds: &[RoundRss],
    tolerance: f64,
) {
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  {what} VmRSS round {}: start {} KiB, peak {} KiB, end {} KiB ({:+.1} % of start, read after {:.1} s)",
            i + 1,
            r.start,
            r.peak,
            r.end,
            (r.end as f64 / r.start.max(1) as f64 - 1.0) * 100.0,
            r.settle_s
        );
    }
    let Some(last) = rounds.last() else { return };
    let peak = rounds.iter().map(|r| r.peak).max().unwrap_or(fresh);
    let limit = last.start as f64 * (1.0 + tolerance);
    checks.check(
        "rss-returns",
        last.end as f64 <= limit,
        format!(
            "round {} of {what}: end {} KiB vs start {} KiB (limit +{:.0} %; fresh process {fresh} KiB)",
            rounds.len(),
            last.end,
            last.start,
            tolerance * 100.0
        ),
    );
    let kept = last.end.saturating_sub(fresh) as f64;
    let grown = peak.saturating_sub(fresh).max(1) as f64;
    checks.check(
        "rss-released",
        kept <= grown * tolerance + FIRST_USE_KIB as f64,
        format!(
            "{what} keeps {:.0} KiB above its fresh {fresh} KiB after the last round: {:.1} % of the {:.0} KiB the load took (limit {:.0} % + {FIRST_USE_KIB} KiB)",
            kept,
            kept / grown * 100.0,
            grown,
            tolerance * 100.0
        ),
    );
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn sample(pid: u32, peak: Arc<AtomicU64>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
        match rss_kib(pid) {
            Ok((rss, _)) => {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            // The process is gone: the soak's own reads will say so.
            Err(_) => return,
        }
    }
}

/// Rounds and memory checks, shared by the soak modes.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Longest wait for the relay's VmRSS to come back after the clients left, in seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_seconds: u64,
    /// Rounds against the same relay (load, leave, settle); the memory checks
    /// compare the last round's end with its start, and with the fresh
    /// process (see `watch::rss_checks`).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Memory tolerance, as a fraction (0.10 = 10 %): see `watch::rss_checks`.
    #[arg(long, default_value_t = 0.10)]
    pub rss_tolerance: f64,
}
