//! The state the engine's tasks and handles share, and running one
//! command: fail at once while Redis is known to be away, else within the
//! command timeout, timing the round trip and noting connection failures.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::health::Health;
use super::metrics::ClusterMetrics;
use super::scripts::{Keys, Scripts};
use super::{ClusterError, Delivery, RegistrationSource};

/// The timings from `[cluster]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub heartbeat: Duration,
    pub node_ttl: Duration,
    pub command: Duration,
    pub connect: Duration,
    pub self_check: Duration,
}

/// What the engine's tasks and its handles share.
pub(crate) struct Shared {
    pub keys: Keys,
    pub client: redis::Client,
    pub conn: ConnectionManager,
    pub scripts: Scripts,
    pub timing: Timing,
    /// Largest envelope written or read.
    pub limit: usize,
    pub metrics: Arc<ClusterMetrics>,
    pub health: Health,
    pub inbox: mpsc::Sender<Delivery>,
    pub source: RegistrationSource,
    pub cancel: CancellationToken,
    /// While a re-assertion runs: what registered and unregistered meanwhile.
    pub window: Mutex<Option<ReassertWindow>>,
    /// One re-assertion at a time.
    pub reassert_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Registrations that changed while a re-assertion was running: the
/// re-assertion leaves them alone and replays the unregistrations after.
#[derive(Debug, Default)]
pub(crate) struct ReassertWindow {
    pub registered: HashSet<Uuid>,
    pub unregistered: Vec<(Uuid, u64)>,
}

impl Shared {
    /// Runs `command` unless the link to Redis is known to be down (then
    /// fails at once), within the command timeout, timing it.
    pub async fn command<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        if !self.health.link_up() {
            return Err(ClusterError::Unavailable);
        }
        self.probe(op, command).await
    }

    /// Like [`Shared::command`], tried even while the link is down (the heartbeat).
    pub async fn probe<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let started = Instant::now();
        match tokio::time::timeout(self.timing.command, command).await {
            Ok(Ok(value)) => {
                self.metrics.rtt.record(started.elapsed());
                Ok(value)
            }
            Ok(Err(source)) => {
                if is_link_error(&source) {
                    self.health.link_failed(format!("{op}: {source}"));
                }
                Err(ClusterError::Redis { op, source })
            }
            Err(_) => {
                let ms = millis(self.timing.command);
                self.health
                    .link_failed(format!("{op}: no answer within {ms} ms"));
                Err(ClusterError::Timeout { op, ms })
            }
        }
    }

    /// Puts `delivery` in the node's inbox without waiting (neither the
    /// subscription nor the heartbeat may stall on a node that does not
    /// read it); a full inbox drops it, logged and counted. Returns whether
    /// it went in.
    pub fn hand_over(&self, delivery: Delivery) -> bool {
        match self.inbox.try_send(delivery) {
            Ok(()) => true,
            Err(e) => {
                ClusterMetrics::inc(&self.metrics.inbox_dropped);
                let (uuid, what) = match e.into_inner() {
                    Delivery::Forward { to, .. } => (to, "a forward"),
                    Delivery::Takeover { uuid, .. } => (uuid, "a takeover"),
                };
                log::warn!("[cluster {uuid}] inbox full or closed: dropped {what}");
                false
            }
        }
    }

    /// Notes a registration for a re-assertion that may be running.
    pub fn note_registered(&self, uuid: Uuid) {
        if let Some(window) = self.lock_window().as_mut() {
            window.registered.insert(uuid);
        }
    }

    /// Notes an unregistration for a re-assertion that may be running.
    pub fn note_unregistered(&self, uuid: Uuid, session: u64) {
        if let Some(window) = self.lock_window().as_mut() {
            window.unregistered.push((uuid, session));
        }
    }

    pub fn lock_window(&self) -> std::sync::MutexGuard<'_, Option<ReassertWindow>> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `error` means the connection failed, rather than a command.
fn is_link_error(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    )
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
