//! One service's pool: idle pooled data connections and clients waiting
//! for one, both served oldest first.
//!
//! A pooled connection is represented by the sending end of a oneshot
//! channel owned by the task that holds its socket; handing a client to it
//! means sending the client's socket down that channel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A client handed to a pooled connection.
#[derive(Debug)]
pub struct Assignment {
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
    pub tx: oneshot::Sender<Assignment>,
}

#[derive(Debug, Default)]
struct Inner {
    idle: VecDeque<Idle>,
    waiters: VecDeque<oneshot::Sender<Idle>>,
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

    /// Removes every idle connection of a control session.
    pub fn remove_session(&self, session: u64) {
        self.lock().idle.retain(|c| c.session != session);
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

    /// The oldest live idle connection, if there is one now.
    pub fn try_take(&self) -> Option<Idle> {
        let mut inner = self.lock();
        while let Some(idle) = inner.idle.pop_front() {
            if !idle.tx.is_closed() {
                return Some(idle);
            }
        }
        None
    }

    /// The oldest idle connection, waiting up to `wait` when there is none.
    /// The bool says whether the caller had to wait.
    pub async fn take(
        &self,
        wait: Duration,
        max_waiting: usize,
    ) -> Result<(Idle, bool), TakeError> {
        let rx = {
            let mut inner = self.lock();
            while let Some(idle) = inner.idle.pop_front() {
                if !idle.tx.is_closed() {
                    return Ok((idle, false));
                }
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
