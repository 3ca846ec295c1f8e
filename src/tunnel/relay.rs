//! The relay side of the tunnel: one listener for host agents, one public
//! listener per service, all on a runtime of their own.
//!
//! A client connecting to a service's public port takes the idle pooled
//! data connection of that service likeliest to be alive (waiting up to
//! `tunnel.pool_wait_ms` when there is none, see [`super::pool`]), and the
//! pooled connection's task hands the client over and pumps bytes between
//! them (`relay_carry.rs`); a failed hand-off comes back here for another
//! pooled connection. Agent connections are handled in `relay_agents.rs`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::pool::{Assignment, Pool, TakeError};
use super::relay_agents;
use crate::admin::metrics::{HandoffFailure, HandoffLabels, Metrics, RejectLabels, ServiceLabels};
use crate::config::{ConfigError, Secret, TunnelSettings};
use crate::protocol::tunnel::Frame;
use crate::tls::TlsError;

/// Why the tunnel relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A `[tunnel]` setting could not be turned into a running service.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `tunnel.certfile` or `tunnel.keyfile` could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A listener (or the tunnel's runtime) could not be set up.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<TlsError> for StartError {
    fn from(error: TlsError) -> Self {
        StartError::Tls(error.0)
    }
}

/// The listeners the tunnel serves: agents', then one per service.
#[derive(Debug)]
pub struct TunnelListeners {
    /// Where host agents connect.
    pub agents: TcpListener,
    /// Service name → its public client listener.
    pub services: Vec<(String, TcpListener)>,
}

/// Binds the listeners `settings` names (port 0 picks free ports).
pub fn bind(settings: &TunnelSettings) -> Result<TunnelListeners, StartError> {
    let agents = TcpListener::bind((settings.host.as_str(), settings.port))?;
    let mut services = Vec::new();
    for service in &settings.services {
        let listener = TcpListener::bind(service.bind.as_str()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("tunnel service {}: {}: {e}", service.name, service.bind),
            )
        })?;
        services.push((service.name.clone(), listener));
    }
    Ok(TunnelListeners { agents, services })
}

/// One configured service at run time.
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its public address.
    pub addr: SocketAddr,
    pub(super) token: Secret,
    /// Idle pooled connections and waiting clients.
    pub pool: Pool,
    /// Tunnelled connections open now.
    pub active: AtomicUsize,
    pub(super) labels: ServiceLabels,
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
    pub(super) services: HashMap<String, Arc<Service>>,
    pub(super) agents: Mutex<HashMap<u64, AgentEntry>>,
    pub(super) next_id: AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) active: AtomicUsize,
    pub(super) cancel: CancellationToken,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    agents_addr: SocketAddr,
}

impl TunnelState {
    /// A fresh id for sessions, pool entries and client connections.
    pub(super) fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the pool-size gauge of `service`.
    pub(super) fn pool_changed(&self, service: &Service) {
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
            .services
            .values()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
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
}

/// One service in `/tunnels`.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
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

/// A running tunnel relay. Dropping it cancels everything without waiting.
pub struct TunnelRelay {
    state: Arc<TunnelState>,
    done: Option<oneshot::Receiver<()>>,
}

impl TunnelRelay {
    /// Address of the agents' listener.
    pub fn agents_addr(&self) -> SocketAddr {
        self.state.agents_addr
    }

    /// Public address of a service.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.state.services.get(name).map(|s| s.addr)
    }

    /// Shared state (for `/tunnels`).
    pub fn state(&self) -> &Arc<TunnelState> {
        &self.state
    }

    /// Stops accepting, closes agents and cancels every pump; waits (bounded) for the runtime.
    pub async fn shutdown(mut self) {
        self.state.cancel.cancel();
        if let Some(done) = self.done.take() {
            let bound = Duration::from_millis(crate::defaults::SHUTDOWN_GRACE_MS);
            if tokio::time::timeout(bound, done).await.is_err() {
                log::warn!("tunnel: runtime did not stop within {bound:?}");
            }
        }
        log::info!("tunnel stopped");
    }
}

impl Drop for TunnelRelay {
    fn drop(&mut self) {
        self.state.cancel.cancel();
    }
}

/// Each service with its public listener, as the accept loops take them.
type ServiceListeners = Vec<(Arc<Service>, TcpListener)>;

/// The services of `settings` by name, and each with its bound public listener.
fn services(
    settings: &TunnelSettings,
    listeners: Vec<(String, TcpListener)>,
) -> Result<(HashMap<String, Arc<Service>>, ServiceListeners), StartError> {
    let mut services = HashMap::new();
    let mut std_listeners = Vec::new();
    for (name, listener) in listeners {
        let config = settings
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                key: "tunnel.services".into(),
                message: format!("a listener was given for unknown service {name:?}"),
            })?;
        listener.set_nonblocking(true)?;
        let service = Arc::new(Service {
            name: name.clone(),
            addr: listener.local_addr()?,
            token: config.load_token()?,
            pool: Pool::default(),
            active: AtomicUsize::new(0),
            labels: ServiceLabels {
                service: name.clone(),
            },
        });
        services.insert(name, service.clone());
        std_listeners.push((service, listener));
    }
    Ok((services, std_listeners))
}

/// Starts the tunnel relay on already-bound listeners, on a runtime of its
/// own (one thread per core). Callable from any context.
pub fn start(
    settings: TunnelSettings,
    metrics: Arc<Metrics>,
    listeners: TunnelListeners,
) -> Result<TunnelRelay, StartError> {
    let (services, std_listeners) = services(&settings, listeners.services)?;
    listeners.agents.set_nonblocking(true)?;
    let tls = match (&settings.certfile, &settings.keyfile) {
        (Some(cert), Some(key)) => Some(super::tls::acceptor(cert, key)?),
        _ => None,
    };
    let state = Arc::new(TunnelState {
        tls,
        agents_addr: listeners.agents.local_addr()?,
        settings,
        services,
        agents: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        metrics,
        active: AtomicUsize::new(0),
        cancel: CancellationToken::new(),
    });
    let runtime = super::runtime(state.settings.workers, "switchboard-tunnel")?;
    let (done_tx, done_rx) = oneshot::channel();
    let run_state = state.clone();
    let agents = listeners.agents;
    std::thread::Builder::new()
        .name("switchboard-tunnel".into())
        .spawn(move || {
            runtime.block_on(serve(run_state, agents, std_listeners));
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = done_tx.send(());
        })?;
    log::info!(
        "tunnel: agents connect to {}{}; services: {}",
        state.agents_addr,
        if state.tls.is_some() { " (TLS)" } else { "" },
        state
            .services
            .values()
            .map(|s| format!("{} on {}", s.name, s.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(TunnelRelay {
        state,
        done: Some(done_rx),
    })
}

async fn serve(state: Arc<TunnelState>, agents: TcpListener, services: ServiceListeners) {
    let agents = match tokio::net::TcpListener::from_std(agents) {
        Ok(l) => l,
        Err(e) => return log::error!("tunnel: agents listener: {e}"),
    };
    tokio::spawn(relay_agents::accept_loop(state.clone(), agents));
    for (service, listener) in services {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                tokio::spawn(accept_clients(state.clone(), service, l));
            }
            Err(e) => log::error!("tunnel: service {} listener: {e}", service.name),
        }
    }
    state.cancel.cancelled().await;
    // Give pumps and control channels a moment to notice and close.
    let deadline = Instant::now() + Duration::from_millis(500);
    while state.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accept_clients(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
) {
    // The address clients connect to; asked per client only when the
    // listener is bound to a wildcard address.
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.cancel.cancelled() => return,
        };
        let (client, addr) = match accepted {
            Ok((client, addr)) => (client, crate::addr::canonical(addr)),
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                log::warn!("tunnel: {}: accept failed: {e}", service.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if state.active.load(Ordering::Acquire) >= state.settings.max_clients {
            log::warn!(
                "tunnel: {}: closing client {addr}: tunnel.max_clients reached",
                service.name
            );
            state.reject(&service, "max_clients");
            continue;
        }
        let _ = client.set_nodelay(true);
        let Some(server) = bound
            .or_else(|| client.local_addr().ok())
            .map(crate::addr::canonical)
        else {
            log::warn!("tunnel: {}: client {addr} gone at accept", service.name);
            continue;
        };
        let assignment = Assignment {
            client,
            addr,
            server,
            conn: state.id(),
            accepted: Instant::now(),
            early: Vec::new(),
            early_eof: false,
            attempts: 0,
        };
        // Fast path: an idle pooled connection is there; hand the client over
        // without another task in between.
        let assignment = match service.pool.try_take() {
            Some(idle) => {
                state.pool_changed(&service);
                match idle.tx.send(assignment) {
                    Ok(()) => continue,
                    Err(back) => back,
                }
            }
            None => assignment,
        };
        tokio::spawn(reassign(state.clone(), service.clone(), assignment));
    }
}

/// Hands a client to the best idle pooled connection, waiting up to
/// `tunnel.pool_wait_ms`; closes it (dropping the socket) when none comes.
pub(super) async fn reassign(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut assignment: Assignment,
) {
    let wait = Duration::from_millis(state.settings.pool_wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let addr = assignment.addr;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let taken = tokio::select! {
            t = service.pool.take(left, state.settings.max_waiting) => t,
            _ = state.cancel.cancelled() => return,
        };
        state.pool_changed(&service);
        match taken {
            Ok((idle, waited)) => {
                if waited {
                    state
                        .metrics
                        .tunnel_waits
                        .get_or_create(&service.labels)
                        .inc();
                }
                match idle.tx.send(assignment) {
                    Ok(()) => return,
                    // That pooled connection died just now: try the next one.
                    Err(back) => assignment = back,
                }
            }
            Err(TakeError::TooManyWaiting) => {
                log::warn!(
                    "tunnel: {}: closing client {addr}: {} clients already waiting",
                    service.name,
                    state.settings.max_waiting
                );
                return state.reject(&service, "max_waiting");
            }
            Err(TakeError::Timeout) => {
                log::warn!(
                    "tunnel: {}: closing client {addr}: no pooled connection within {wait:?}",
                    service.name
                );
                return state.reject(&service, "pool_timeout");
            }
        }
    }
}
