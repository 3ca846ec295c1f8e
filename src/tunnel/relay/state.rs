//! What the relay side of the tunnel shares between its tasks: the
//! configured services (each with its pool), the connected agents, the
//! metrics, and the `/tunnels` view built from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pool::Pool;
use crate::admin::metrics::{HandoffFailure, HandoffLabels, Metrics, RejectLabels, ServiceLabels};
use crate::config::{Secret, TunnelService, TunnelSettings, UdpLimits};
use crate::protocol::tunnel::{Frame, Transport};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// One configured service at run time.
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its public address.
    pub addr: SocketAddr,
    pub(super) token: Secret,
    /// Idle pooled connections and waiting clients.
    pub pool: Pool,
    /// Tunnelled connections (TCP clients, UDP sessions carried) open now.
    pub active: AtomicUsize,
    pub(super) labels: ServiceLabels,
    /// TCP or UDP.
    pub transport: Transport,
    /// A UDP service's limits and counters (`None` for TCP).
    pub(super) udp: Option<UdpParts>,
    /// Its `[[tunnel.services]]` entry as loaded (a reload compares it).
    pub(super) config: TunnelService,
    /// Stops this service only (its listener, agents, clients, sessions):
    /// a child of the tunnel's, cancelled when a reload removes or replaces it.
    pub(super) cancel: CancellationToken,
}

/// What a UDP service adds: its limits, and its metrics ready to update.
pub(super) struct UdpParts {
    pub limits: UdpLimits,
    /// Sessions open now (waiting for a pooled connection included).
    pub sessions: Arc<AtomicUsize>,
    pub sessions_gauge: Gauge,
    pub datagrams_in: Counter,
    pub datagrams_out: Counter,
}

impl UdpParts {
    pub fn new(limits: UdpLimits, metrics: &Metrics, labels: &ServiceLabels) -> Self {
        UdpParts {
            limits,
            sessions: Arc::new(AtomicUsize::new(0)),
            sessions_gauge: metrics.tunnel_udp_sessions.get_or_create(labels).clone(),
            datagrams_in: metrics
                .tunnel_udp_datagrams_in
                .get_or_create(labels)
                .clone(),
            datagrams_out: metrics
                .tunnel_udp_datagrams_out
                .get_or_create(labels)
                .clone(),
        }
    }
}

/// A connected host agent (its control channel).
pub(super) struct AgentEntry {
    pub service: String,
    pub addr: SocketAddr,
    pub since: Instant,
    pub tx: mpsc::Sender<Frame>,
    pub cancel: CancellationToken,
}

/// State shared by the tunnel's tasks and the admin endpoints.
pub struct TunnelState {
    pub(super) settings: TunnelSettings,
    /// The services by name; a reload swaps entries.
    pub(super) services: RwLock<HashMap<String, Arc<Service>>>,
    /// Reloads applied and refused (`/tunnels` `reload`).
    pub(super) reload: Mutex<ReloadStatus>,
    pub(super) agents: Mutex<HashMap<u64, AgentEntry>>,
    pub(super) next_id: AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) active: AtomicUsize,
    pub(super) cancel: CancellationToken,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) agents_addr: SocketAddr,
}

impl TunnelState {
    /// A fresh id for sessions, pool entries and client connections.
    pub(super) fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The running service called `name`.
    pub(super) fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services().get(name).cloned()
    }

    pub(super) fn services(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Service>>> {
        self.services.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the pool-size gauge of `service` (unless a reload replaced
    /// it: the gauge is its successor's then).
    pub(super) fn pool_changed(&self, service: &Service) {
        if service.cancel.is_cancelled()
            && self
                .service(&service.name)
                .is_some_and(|now| !std::ptr::eq(Arc::as_ptr(&now), service))
        {
            return;
        }
        self.metrics
            .tunnel_pool_size
            .get_or_create(&service.labels)
            .set(service.pool.idle() as i64);
    }

    pub(super) fn reject(&self, service: &Service, reason: &str) {
        self.metrics
            .tunnel_rejections
            .get_or_create(&RejectLabels {
                service: service.name.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a datagram of UDP service `service` dropped for `reason`.
    pub(super) fn udp_drop(&self, service: &Service, reason: &str) {
        self.metrics
            .tunnel_udp_drops
            .get_or_create(&RejectLabels {
                service: service.name.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a failed hand-off of a client of `service`.
    pub(super) fn handoff_failed(&self, service: &Service, reason: HandoffFailure) {
        self.metrics
            .tunnel_handoff_failures
            .get_or_create(&HandoffLabels {
                service: service.name.clone(),
                reason,
            })
            .inc();
    }

    /// The `/tunnels` view: services, connected agents, pool state.
    pub fn status(&self) -> TunnelStatus {
        let agents = self.agents();
        let mut services: Vec<ServiceStatus> = self
            .services()
            .values()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                transport: s.transport.as_str(),
                udp_sessions: s.udp.as_ref().map(|u| u.sessions.load(Ordering::Relaxed)),
                bind: s.addr.to_string(),
                pool_idle: s.pool.idle(),
                waiting: s.pool.waiting(),
                active: s.active.load(Ordering::Relaxed),
                agents: agents
                    .iter()
                    .filter(|(_, a)| a.service == s.name)
                    .map(|(session, a)| AgentStatus {
                        session: *session,
                        addr: a.addr.to_string(),
                        connected_seconds: a.since.elapsed().as_secs_f64(),
                        pool_idle: s.pool.idle_of(*session),
                    })
                    .collect(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        TunnelStatus {
            agents_listener: self.agents_addr.to_string(),
            active: self.active.load(Ordering::Relaxed),
            services,
            reload: self
                .reload
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// `GET /tunnels` body.
#[derive(Debug, Serialize)]
pub struct TunnelStatus {
    /// Address of the agents' listener.
    pub agents_listener: String,
    /// Tunnelled connections open now, all services.
    pub active: usize,
    /// One entry per configured service.
    pub services: Vec<ServiceStatus>,
    /// Reloads of `[[tunnel.services]]` since start.
    pub reload: ReloadStatus,
}

/// `/tunnels` `reload`: the live reloads of `[[tunnel.services]]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Reloads applied (including those that changed nothing).
    pub count: u64,
    /// Reloads refused (the running services stayed).
    pub failed: u64,
    /// Why the most recent refused reload was refused (kept after later
    /// successes; compare `last_error_at`).
    pub last_error: Option<String>,
    /// When it was refused, in seconds since the Unix epoch.
    pub last_error_at: Option<u64>,
}

/// One service in `/tunnels`.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// `"tcp"` or `"udp"`.
    #[serde(rename = "type")]
    pub transport: &'static str,
    /// UDP services: sessions (client addresses) open now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_sessions: Option<usize>,
    /// Public address.
    pub bind: String,
    /// Idle pooled connections.
    pub pool_idle: usize,
    /// Clients waiting for a pooled connection.
    pub waiting: usize,
    /// Tunnelled connections open.
    pub active: usize,
    /// Connected agents.
    pub agents: Vec<AgentStatus>,
}

/// One connected agent in `/tunnels`.
#[derive(Debug, Serialize)]
pub struct AgentStatus {
    /// Control session id.
    pub session: u64,
    /// The agent's address as the relay sees it.
    pub addr: String,
    /// Seconds since the control channel connected.
    pub connected_seconds: f64,
    /// Idle pooled connections of this agent.
    pub pool_idle: usize,
}
