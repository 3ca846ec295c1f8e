//! What every session, the status readers and the shutdown path share:
//! [`ServerState`], and in it the [`RegistrySlot`] holding the process's
//! one registry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;

use super::auth::Authenticator;
use super::cluster::{ClusterLink, ClusterSlot};
use super::registry::Registry;
use crate::admin::metrics::Metrics;
use crate::config::Settings;

/// State shared by every session, the status readers and the shutdown path.
pub struct ServerState {
    /// The loaded settings.
    pub settings: Settings,
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// The one registry of this process (started by the first HTTP worker).
    pub registry: RegistrySlot,
    /// Checks credentials at registration.
    pub authenticator: Authenticator,
    /// Sessions open now (incremented at upgrade, decremented when a session stops).
    pub connected: AtomicUsize,
    /// Source of session ids.
    pub next_session_id: AtomicU64,
    /// Set once shutdown begins: new upgrades are refused.
    pub shutting_down: AtomicBool,
    /// How long a closing session may flush its close frame.
    pub close_flush: Duration,
    /// The cluster engine, once attached (`[cluster] enabled`); shared with the registry.
    pub cluster: ClusterSlot,
}

impl ServerState {
    /// The cluster link, once an engine is attached.
    pub fn cluster(&self) -> Option<&ClusterLink> {
        self.cluster.get()
    }
}

/// The process's one [`Registry`], started on the thread of the first HTTP
/// worker that builds its app. Sessions on that worker then reach the
/// registry without waking another thread, which is most of a forward's
/// latency; sessions on other workers pay one cross-thread hop instead of two.
/// If that worker's thread ever dies with the registry, the next worker that
/// builds its app starts a new one; sessions that held the old one close with
/// 1013 and their clients register again.
pub struct RegistrySlot {
    addr: RwLock<Option<Addr<Registry>>>,
    metrics: Arc<Metrics>,
    cluster: ClusterSlot,
}

impl RegistrySlot {
    pub(super) fn new(metrics: Arc<Metrics>, cluster: ClusterSlot) -> Self {
        RegistrySlot {
            addr: RwLock::new(None),
            metrics,
            cluster,
        }
    }

    /// Starts the Registry on the current arbiter unless one is running.
    pub(super) fn start_here(&self) {
        let mut addr = self.addr.write().unwrap_or_else(|e| e.into_inner());
        if !addr.as_ref().is_some_and(Addr::connected) {
            log::debug!(
                "starting the registry on thread {}",
                std::thread::current().name().unwrap_or("(unnamed)")
            );
            *addr = Some(Registry::new(self.metrics.clone(), self.cluster.clone()).start());
        }
    }

    /// The Registry, once a worker has started it. The workers build their
    /// apps when the server future is first polled, before either listener
    /// serves a request, so only a shutdown racing startup sees `None`.
    pub fn get(&self) -> Option<Addr<Registry>> {
        self.addr.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
