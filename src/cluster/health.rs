//! Whether the node's link to the cluster works: the state the node shows
//! in `/health`, made of three parts.
//!
//! - the command link: the last command reached Redis (or the last failure
//!   was not a connection failure); while it is down, commands other than
//!   the heartbeat fail at once instead of waiting for a timeout;
//! - the subscription: connected, and its last self-check came back;
//! - the registrations: re-written since the last outage.
//!
//! The node is [`ClusterState::Up`] when all three are, else degraded with
//! the first reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::metrics::ClusterMetrics;

/// The node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterState {
    /// Redis answers, the subscription delivers, the registrations are written.
    Up,
    /// Something of that is not so: cross-node traffic may fail.
    Degraded {
        /// When the node became degraded.
        since: Instant,
        /// Why it is degraded now.
        reason: String,
    },
}

impl ClusterState {
    /// Whether the state is [`ClusterState::Up`].
    pub fn is_up(&self) -> bool {
        matches!(self, ClusterState::Up)
    }
}

struct Parts {
    link: Option<String>,
    subscription: Option<String>,
    /// Re-assertions asked for and done, counted: one asked for while
    /// another runs is not satisfied by that one.
    reassert_wanted: u64,
    reassert_done: u64,
}

impl Parts {
    fn reassert_pending(&self) -> bool {
        self.reassert_wanted > self.reassert_done
    }
}

pub(crate) struct Health {
    parts: Mutex<Parts>,
    link_up: AtomicBool,
    /// Link failures so far: a change means the connection (and perhaps
    /// Redis, with its script cache) may be new.
    link_failures: AtomicU64,
    tx: watch::Sender<ClusterState>,
    metrics: Arc<ClusterMetrics>,
    node: String,
}

/// The reason of the state a node starts in, until its first heartbeat.
const CONNECTING: &str = "connecting to Redis";
/// The subscription's part of that reason until the first subscription.
const NOT_SUBSCRIBED: &str = "not subscribed yet";

impl Health {
    pub fn new(node: &str, metrics: Arc<ClusterMetrics>) -> Self {
        let reason = CONNECTING.to_owned();
        metrics.set_degraded(true);
        Health {
            parts: Mutex::new(Parts {
                link: Some(reason.clone()),
                subscription: Some(NOT_SUBSCRIBED.into()),
                reassert_wanted: 1,
                reassert_done: 0,
            }),
            link_up: AtomicBool::new(false),
            link_failures: AtomicU64::new(0),
            tx: watch::Sender::new(ClusterState::Degraded {
                since: Instant::now(),
                reason,
            }),
            metrics,
            node: node.to_owned(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.tx.subscribe()
    }

    pub fn state(&self) -> ClusterState {
        self.tx.borrow().clone()
    }

    /// Whether commands should be tried at all.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    pub fn reassert_pending(&self) -> bool {
        self.lock().reassert_pending()
    }

    /// The re-assertions asked for so far; a re-assertion that started
    /// after this many were asked for answers them all.
    pub fn reassert_wanted(&self) -> u64 {
        self.lock().reassert_wanted
    }

    /// How many times the link failed so far.
    pub fn link_failures(&self) -> u64 {
        self.link_failures.load(Ordering::Acquire)
    }

    pub fn link_ok(&self) {
        self.link_up.store(true, Ordering::Release);
        self.update(|p| p.link = None);
    }

    /// A command failed for want of a connection: registrations written
    /// meanwhile may be missing, so they are re-asserted once it is back.
    pub fn link_failed(&self, reason: String) {
        self.link_failures.fetch_add(1, Ordering::AcqRel);
        self.link_up.store(false, Ordering::Release);
        self.update(|p| {
            if p.link.is_none() {
                p.reassert_wanted += 1;
            }
            p.link = Some(reason);
        });
    }

    pub fn subscription_ok(&self) {
        self.update(|p| p.subscription = None);
    }

    /// A rebuilt subscription works again. Takeovers published while it
    /// was down were lost, so the registrations are re-asserted (which
    /// finds the UUIDs other nodes took meanwhile).
    pub fn subscription_restored(&self) {
        self.update(|p| {
            p.subscription = None;
            p.reassert_wanted += 1;
        });
    }

    pub fn subscription_failed(&self, reason: String) {
        self.update(|p| p.subscription = Some(reason));
    }

    /// Asks for a re-assertion.
    pub fn want_reassert(&self) {
        self.update(|p| p.reassert_wanted += 1);
    }

    /// A re-assertion that started when `wanted` were asked for succeeded.
    pub fn reasserted(&self, wanted: u64) {
        self.update(|p| p.reassert_done = p.reassert_done.max(wanted));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Parts)) {
        let mut parts = self.lock();
        change(&mut parts);
        let reason = parts
            .link
            .clone()
            .or_else(|| parts.subscription.clone())
            .or_else(|| {
                parts
                    .reassert_pending()
                    .then(|| "re-asserting registrations".to_owned())
            });
        // Sent under the lock, so states are published in the order of changes.
        self.tx.send_if_modified(|state| match (&*state, reason) {
            (ClusterState::Up, None) => false,
            (ClusterState::Degraded { .. }, None) => {
                log::info!("cluster node {}: up", self.node);
                self.metrics.set_degraded(false);
                *state = ClusterState::Up;
                true
            }
            (ClusterState::Up, Some(reason)) => {
                log::warn!("cluster node {}: degraded: {reason}", self.node);
                self.metrics.set_degraded(true);
                *state = ClusterState::Degraded {
                    since: Instant::now(),
                    reason,
                };
                true
            }
            (ClusterState::Degraded { since, reason: old }, Some(reason)) => {
                if *old == reason {
                    return false;
                }
                if old == CONNECTING && reason == NOT_SUBSCRIBED {
                    // Redis answered; the subscription comes next: start-up, not a fault.
                    log::debug!("cluster node {}: connected; subscribing", self.node);
                } else if old == CONNECTING {
                    // The first attempt failed: say why at once (a wrong
                    // address, password or CA shows here).
                    log::warn!("cluster node {}: cannot reach Redis: {reason}", self.node);
                } else {
                    log::info!("cluster node {}: still degraded: {reason}", self.node);
                }
                *state = ClusterState::Degraded {
                    since: *since,
                    reason,
                };
                true
            }
        });
    }
}
