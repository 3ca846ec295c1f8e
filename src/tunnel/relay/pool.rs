//! One service's pool: idle pooled data connections and clients waiting
//! for one. Waiting clients are served oldest first; a client takes the
//! idle connection most likely to be alive: one with no heartbeat left
//! unanswered, heard from most recently (so a frozen agent's connections,
//! silent since it froze, come last).
//!
//! A pooled connection is represented by the sending end of a oneshot
//! channel owned by the task that holds its socket; handing a client to it
//! means sending the client's socket (or a UDP session's queue) down that
//! channel, as a [`Handed`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

/// What a pooled connection is handed: a TCP client or a UDP session.
#[derive(Debug)]
pub enum Handed {
    /// A TCP client of a TCP service.
    Tcp(Assignment),
    /// A UDP session (one client address) of a UDP service.
    Udp(UdpAssignment),
}

impl Handed {
    /// The client's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Handed::Tcp(a) => a.addr,
            Handed::Udp(u) => u.addr,
        }
    }

    /// Hand-offs that failed so far.
    pub fn attempts(&mut self) -> &mut u32 {
        match self {
            Handed::Tcp(a) => &mut a.attempts,
            Handed::Udp(u) => &mut u.attempts,
        }
    }
}

/// A UDP session handed to a pooled connection: the client's queued
/// datagrams and the service's socket to answer from.
#[derive(Debug)]
pub struct UdpAssignment {
    /// Datagrams from the client, oldest first (bounded by `udp_queue`).
    pub datagrams: mpsc::Receiver<Vec<u8>>,
    /// The service's public socket: answers go to `addr` from it.
    pub socket: Arc<UdpSocket>,
    /// The client's address.
    pub addr: SocketAddr,
    /// The service's public address.
    pub server: SocketAddr,
    /// The relay's id for this session.
    pub conn: u64,
    /// Hand-offs of this session that failed so far.
    pub attempts: u32,
    /// Counts the session as open until it is dropped.
    pub open: OpenSession,
}

/// Counts one open UDP session (a counter and a gauge) while it lives.
#[derive(Debug)]
pub struct OpenSession {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl OpenSession {
    /// Counts a session as open in `count` and `gauge`.
    pub fn new(count: &Arc<AtomicUsize>, gauge: &Gauge) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        OpenSession {
            count: count.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// A client handed to a pooled connection.
#[derive(Debug)]
pub struct Assignment {
    /// What the client sent before it was served (kept until the agent
    /// answers `Started`, so a failed hand-off can be replayed elsewhere).
    pub early: Vec<u8>,
    /// Whether the client had ended its sending side (FIN) by then.
    pub early_eof: bool,
    /// Hand-offs of this client that failed so far.
    pub attempts: u32,
    /// The client's socket.
    pub client: TcpStream,
    /// The client's address.
    pub addr: SocketAddr,
    /// The address the client connected to (the service's public port).
    pub server: SocketAddr,
    /// The relay's id for this client connection.
    pub conn: u64,
    /// When the client connected (for setup-time logging).
    pub accepted: Instant,
}

/// An idle pooled data connection, as the pool sees it.
#[derive(Debug)]
pub struct Idle {
    /// Pool entry id (unique per relay).
    pub id: u64,
    /// The control session of the agent that owns it.
    pub session: u64,
    /// Hands a client to the task that owns the socket.
    pub tx: oneshot::Sender<Handed>,
    /// When it was last heard from (updated by the task that owns it).
    pub liveness: Arc<Liveness>,
}

/// When an idle pooled connection was last heard from, and whether a
/// heartbeat sent to it is still unanswered.
#[derive(Debug)]
pub struct Liveness(Mutex<(Instant, bool)>);

impl Default for Liveness {
    fn default() -> Self {
        Liveness(Mutex::new((Instant::now(), false)))
    }
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, bool)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection answered (a `Pong`): heard now, nothing unanswered.
    pub fn heard(&self) {
        *self.lock() = (Instant::now(), false);
    }

    /// A heartbeat was sent to it and awaits an answer.
    pub fn pinged(&self) {
        self.lock().1 = true;
    }

    /// Sort key: larger is likelier alive (nothing unanswered, heard later).
    fn rank(&self) -> (bool, Instant) {
        let (heard, unanswered) = *self.lock();
        (!unanswered, heard)
    }
}

#[derive(Debug, Default)]
struct Inner {
    idle: VecDeque<Idle>,
    waiters: VecDeque<oneshot::Sender<Idle>>,
}

impl Inner {
    /// Takes the live idle connection likeliest to answer (see the module
    /// docs), dropping entries whose task is gone.
    fn take_best(&mut self) -> Option<Idle> {
        self.idle.retain(|c| !c.tx.is_closed());
        let best = (0..self.idle.len()).max_by_key(|&i| self.idle[i].liveness.rank())?;
        self.idle.remove(best)
    }
}

/// Why no pooled connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeError {
    /// Too many clients are already waiting.
    #[error("too many clients waiting")]
    TooManyWaiting,
    /// No pooled connection came within the wait limit.
    #[error("no pooled connection within the wait limit")]
    Timeout,
}

/// Idle pooled connections and waiting clients of one service.
#[derive(Debug, Default)]
pub struct Pool {
    inner: Mutex<Inner>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queues half-updated
        // in a harmful way, so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an idle connection: the oldest waiting client gets it, or it
    /// joins the back of the idle queue. Returns false if it went to a waiter.
    pub fn add(&self, mut idle: Idle) -> bool {
        let mut inner = self.lock();
        while let Some(waiter) = inner.waiters.pop_front() {
            match waiter.send(idle) {
                Ok(()) => return false,
                Err(back) => idle = back,
            }
        }
        inner.idle.push_back(idle);
        true
    }

    /// Removes an idle connection by id (its socket died or was evicted).
    pub fn remove(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let before = inner.idle.len();
        inner.idle.retain(|c| c.id != id);
        inner.idle.len() != before
    }

    /// Removes every idle connection of a control session (their tasks
    /// see the entry dropped and close them); returns how many there were.
    pub fn remove_session(&self, session: u64) -> usize {
        let mut inner = self.lock();
        let before = inner.idle.len();
        inner.idle.retain(|c| c.session != session);
        before - inner.idle.len()
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// Idle connections per control session now.
    pub fn idle_of(&self, session: u64) -> usize {
        self.lock()
            .idle
            .iter()
            .filter(|c| c.session == session)
            .count()
    }

    /// Clients waiting now (including ones that gave up but were not yet skipped).
    pub fn waiting(&self) -> usize {
        self.lock()
            .waiters
            .iter()
            .filter(|w| !w.is_closed())
            .count()
    }

    /// The best live idle connection, if there is one now.
    pub fn try_take(&self) -> Option<Idle> {
        self.lock().take_best()
    }

    /// The best idle connection, waiting up to `wait` when there is none.
    /// The bool says whether the caller had to wait.
    pub async fn take(
        &self,
        wait: Duration,
        max_waiting: usize,
    ) -> Result<(Idle, bool), TakeError> {
        let rx = {
            let mut inner = self.lock();
            if let Some(idle) = inner.take_best() {
                return Ok((idle, false));
            }
            inner.waiters.retain(|w| !w.is_closed());
            if inner.waiters.len() >= max_waiting {
                return Err(TakeError::TooManyWaiting);
            }
            let (tx, rx) = oneshot::channel();
            inner.waiters.push_back(tx);
            rx
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(idle)) => Ok((idle, true)),
            _ => Err(TakeError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(pool: &Pool, id: u64, session: u64) -> (Arc<Liveness>, oneshot::Receiver<Handed>) {
        let (tx, rx) = oneshot::channel();
        let liveness = Arc::new(Liveness::default());
        pool.add(Idle {
            id,
            session,
            tx,
            liveness: liveness.clone(),
        });
        (liveness, rx)
    }

    #[test]
    fn the_connection_heard_from_last_is_taken_first() {
        let pool = Pool::default();
        let (old, _rx1) = idle(&pool, 1, 10);
        std::thread::sleep(Duration::from_millis(2));
        let (_new, _rx2) = idle(&pool, 2, 20);
        assert_eq!(pool.try_take().map(|i| i.id), Some(2), "newer first");
        let (_, _rx3) = idle(&pool, 3, 20);
        std::thread::sleep(Duration::from_millis(2));
        old.heard();
        assert_eq!(pool.try_take().map(|i| i.id), Some(1), "heard just now");
        assert_eq!(pool.try_take().map(|i| i.id), Some(3));
        assert!(pool.try_take().is_none());
    }

    #[test]
    fn an_unanswered_heartbeat_puts_a_connection_last() {
        let pool = Pool::default();
        let (_a, _rx1) = idle(&pool, 1, 10);
        std::thread::sleep(Duration::from_millis(2));
        let (b, _rx2) = idle(&pool, 2, 10);
        b.pinged();
        assert_eq!(pool.try_take().map(|i| i.id), Some(1));
        b.heard();
        let (_c, _rx3) = idle(&pool, 3, 10);
        std::thread::sleep(Duration::from_millis(2));
        b.heard();
        assert_eq!(pool.try_take().map(|i| i.id), Some(2), "answered again");
    }

    #[test]
    fn dead_entries_are_skipped_and_sessions_removed_at_once() {
        let pool = Pool::default();
        let (_a, rx1) = idle(&pool, 1, 10);
        let (_b, _rx2) = idle(&pool, 2, 10);
        let (_c, _rx3) = idle(&pool, 3, 20);
        drop(rx1);
        assert_eq!(pool.remove_session(10), 2);
        assert_eq!(pool.idle_of(10), 0);
        assert_eq!(pool.try_take().map(|i| i.id), Some(3));
    }
}
