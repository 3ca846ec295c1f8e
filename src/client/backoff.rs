//! Capped, jittered exponential backoff for reconnecting to the relay.
//!
//! The n-th consecutive retry waits `min(initial · 2ⁿ, max)` minus a random
//! share of at most [`RELAY_BACKOFF_JITTER`] of it, so many clients cut off
//! together do not come back together. A connection that stayed up for
//! `stable_after` starts the sequence over ([`Backoff::reset`]).
//!
//! Hand-written rather than taken from a crate: the policy is a dozen lines,
//! and the "reset after a stable period" rule the relay client needs is not
//! part of the common crates' iterators.

use std::time::Duration;

use rand::Rng;

use crate::defaults::{
    RELAY_BACKOFF_INITIAL_MS, RELAY_BACKOFF_JITTER, RELAY_BACKOFF_MAX_MS, RELAY_BACKOFF_STABLE_MS,
};

/// Reconnect timing of a relay client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay between retries (before jitter).
    pub max: Duration,
    /// A connection registered for at least this long resets the delay to `initial`.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(RELAY_BACKOFF_INITIAL_MS),
            max: Duration::from_millis(RELAY_BACKOFF_MAX_MS),
            stable_after: Duration::from_millis(RELAY_BACKOFF_STABLE_MS),
        }
    }
}

/// The state of one retry sequence.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    retries: u32,
}

impl Backoff {
    /// A fresh sequence: the next delay is about `config.initial`.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff { config, retries: 0 }
    }

    /// The configuration this sequence follows.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Retries taken since the last reset.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next retry without jitter: `min(initial · 2ⁿ, max)`.
    pub fn base_delay(&self) -> Duration {
        let factor = 1u32.checked_shl(self.retries.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .checked_mul(factor)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// The jittered delay before the next retry; advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base_delay();
        self.retries = self.retries.saturating_add(1);
        let cut = rand::rng().random_range(0.0..=RELAY_BACKOFF_JITTER);
        base.mul_f64(1.0 - cut)
    }

    /// Starts the sequence over (after a stable connection).
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial_ms: u64, max_ms: u64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            stable_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn defaults_are_one_second_to_a_minute() {
        let config = BackoffConfig::default();
        assert_eq!(config.initial, Duration::from_secs(1));
        assert_eq!(config.max, Duration::from_secs(60));
        assert_eq!(config.stable_after, Duration::from_secs(30));
    }

    #[test]
    fn base_doubles_then_caps() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let mut seen = Vec::new();
        for _ in 0..9 {
            seen.push(backoff.base_delay().as_secs());
            backoff.next_delay();
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn many_retries_never_overflow() {
        let mut backoff = Backoff::new(config(1_000, 60_000));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(60));
        }
        assert_eq!(backoff.retries(), 200);
        assert_eq!(backoff.base_delay(), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut backoff = Backoff::new(config(1_000, 60_000));
            let delay = backoff.next_delay();
            let low = Duration::from_secs(1).mul_f64(1.0 - RELAY_BACKOFF_JITTER);
            assert!(delay >= low && delay <= Duration::from_secs(1), "{delay:?}");
            distinct.insert(delay.as_micros());
        }
        assert!(distinct.len() > 1, "jitter never varied the delay");
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(config(100, 10_000));
        for _ in 0..5 {
            backoff.next_delay();
        }
        assert_eq!(backoff.base_delay(), Duration::from_millis(3_200));
        backoff.reset();
        assert_eq!(backoff.retries(), 0);
        assert_eq!(backoff.base_delay(), Duration::from_millis(100));
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
