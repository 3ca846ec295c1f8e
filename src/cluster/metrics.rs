//! The cluster's counters: plain atomics the admin reads for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::defaults::CLUSTER_RTT_BUCKETS_US;

/// Counters of one node's cluster engine. Every field only grows, except
/// where said.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Forwards published to another node that at least one subscriber received.
    pub forwards_out: AtomicU64,
    /// Forwards that could not be published (Redis away, queue full, no
    /// subscriber on the target's channel).
    pub forwards_out_failed: AtomicU64,
    /// Forwards from other nodes handed to this node's inbox.
    pub forwards_in: AtomicU64,
    /// Deliveries from other nodes (forwards, takeovers) dropped because
    /// the inbox was full.
    pub inbox_dropped: AtomicU64,
    /// Payloads on this node's channel that did not decode (forged,
    /// oversized, another version, another node's): dropped.
    pub decode_failures: AtomicU64,
    /// Times the subscription was rebuilt after its connection was lost or
    /// its self-check failed.
    pub reconnects: AtomicU64,
    /// Self-checks whose echo did not come back in time.
    pub self_check_failures: AtomicU64,
    /// Registrations here that took a UUID over from another live node.
    pub takeovers_out: AtomicU64,
    /// Takeovers of this node's UUIDs by other nodes (delivered to the inbox).
    pub takeovers_in: AtomicU64,
    /// Times the node re-wrote its registrations (after an outage, or when
    /// its liveness key had expired).
    pub reasserts: AtomicU64,
    /// Records of dead nodes this node removed from Redis.
    pub reaped: AtomicU64,
    /// Redis round trips: histogram, sum and count.
    pub rtt: RttHistogram,
    degraded: Mutex<DegradedClock>,
}

#[derive(Debug, Default)]
struct DegradedClock {
    total: Duration,
    since: Option<Instant>,
}

impl ClusterMetrics {
    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Time spent degraded since the engine started, including a period
    /// still going on.
    pub fn degraded_time(&self) -> Duration {
        let clock = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        clock.total + clock.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Marks the start (`true`) or the end (`false`) of a degraded period.
    pub(crate) fn set_degraded(&self, degraded: bool) {
        let mut clock = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        match (degraded, clock.since) {
            (true, None) => clock.since = Some(Instant::now()),
            (false, Some(since)) => {
                clock.total += since.elapsed();
                clock.since = None;
            }
            _ => {}
        }
    }
}

/// Round-trip times of Redis commands, in fixed buckets
/// ([`CLUSTER_RTT_BUCKETS_US`], then one for slower ones).
#[derive(Debug, Default)]
pub struct RttHistogram {
    buckets: [AtomicU64; CLUSTER_RTT_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of [`RttHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RttSnapshot {
    /// (upper bound in µs, commands in this bucket, not cumulative); the
    /// last bound is `u64::MAX`.
    pub buckets: Vec<(u64, u64)>,
    /// Sum of all round trips, in µs.
    pub sum_us: u64,
    /// Round trips counted.
    pub count: u64,
}

impl RttHistogram {
    /// Counts one round trip.
    pub fn record(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let i = CLUSTER_RTT_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(CLUSTER_RTT_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> RttSnapshot {
        let bounds = CLUSTER_RTT_BUCKETS_US.iter().copied().chain([u64::MAX]);
        RttSnapshot {
            buckets: bounds
                .zip(&self.buckets)
                .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fall_in_their_bucket() {
        let h = RttHistogram::default();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_us, 5_000_140);
        assert_eq!(s.buckets[0], (50, 1));
        assert_eq!(s.buckets[1], (100, 1));
        assert_eq!(*s.buckets.last().unwrap(), (u64::MAX, 1));
    }
}
