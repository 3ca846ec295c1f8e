//! The relay side of the tunnel.
//!
//! [`start`] is a function of the `[tunnel]` settings, the process's
//! [`Metrics`] (it counts agents, pools, hand-offs, bytes) and the bound
//! [`TunnelListeners`] ([`bind`] makes them from the settings): it runs the
//! agents' listener and one public listener per service on a runtime of its
//! own (on a thread of its own) and returns a [`TunnelRelay`], the handle
//! to it: its addresses, the [`TunnelState`] behind `/tunnels`, and
//! `shutdown` (which cancels the tasks and waits until they are done).
//! Errors are [`StartError`]s. It is handed nothing else: the relay node
//! decides when to start and stop it.
//!
//! - `state`: what the tasks share, the configured [`Service`]s (each with its
//!   pool), the connected agents, and the `/tunnels` view ([`TunnelStatus`]).
//! - [`pool`]: one service's idle pooled data connections and the clients
//!   waiting for one (oldest first on both sides).
//! - `agents`: an agent connection (optional TLS, the handshake), then its
//!   control channel, or a pooled data connection handed to `carry`.
//! - `carry`: a pooled connection's task: kept alive while idle, then it hands
//!   the client over and pumps bytes; a failed hand-off goes back to `clients`.
//! - `clients`: the services' public listeners; each client takes the idle
//!   pooled connection of its service likeliest to be alive, waiting up to
//!   `tunnel.pool_wait_ms` when there is none.
//! - `udp`: a UDP service's socket: each client address becomes a session
//!   handed to a pooled connection like a TCP client, then carried as
//!   length-framed datagrams until it is idle for `udp_idle_timeout_ms`.
//!
//! Imports run one way: `agents` → `udp` → `carry` → `clients` → `state` → `pool`.

mod agents;
mod carry;
mod clients;
pub mod pool;
mod state;
mod udp;

pub use state::{AgentStatus, Service, ServiceStatus, TunnelState, TunnelStatus};

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::admin::metrics::{Metrics, ServiceLabels};
use crate::config::{ConfigError, TunnelSettings};
use crate::protocol::tunnel::Transport;
use crate::tls::TlsError;
use pool::Pool;
use state::UdpParts;

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

/// A service's bound public socket.
#[derive(Debug)]
pub enum ServiceSocket {
    /// A TCP service's listener.
    Tcp(TcpListener),
    /// A UDP service's socket.
    Udp(UdpSocket),
}

impl ServiceSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            ServiceSocket::Tcp(l) => l.local_addr(),
            ServiceSocket::Udp(s) => s.local_addr(),
        }
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            ServiceSocket::Tcp(l) => l.set_nonblocking(true),
            ServiceSocket::Udp(s) => s.set_nonblocking(true),
        }
    }
}

/// The listeners the tunnel serves: agents', then one per service.
#[derive(Debug)]
pub struct TunnelListeners {
    /// Where host agents connect.
    pub agents: TcpListener,
    /// Service name → its public socket (TCP listener or UDP socket).
    pub services: Vec<(String, ServiceSocket)>,
}

/// Binds the listeners `settings` names (port 0 picks free ports).
pub fn bind(settings: &TunnelSettings) -> Result<TunnelListeners, StartError> {
    let agents = TcpListener::bind((settings.host.as_str(), settings.port)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "tunnel agents listener {}:{}: {e}",
                settings.host, settings.port
            ),
        )
    })?;
    let mut services = Vec::new();
    for service in &settings.services {
        let bound = match service.transport() {
            Transport::Tcp => TcpListener::bind(service.bind.as_str()).map(ServiceSocket::Tcp),
            Transport::Udp => udp::bind(service.bind.as_str()).map(ServiceSocket::Udp),
        };
        let socket = bound.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "tunnel service {}: {} ({}): {e}",
                    service.name,
                    service.bind,
                    service.transport().as_str()
                ),
            )
        })?;
        services.push((service.name.clone(), socket));
    }
    Ok(TunnelListeners { agents, services })
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

/// Each service with its public socket, as the accept (or receive) loops take them.
type ServiceListeners = Vec<(Arc<Service>, ServiceSocket)>;

/// The services of `settings` by name, and each with its bound public listener.
fn services(
    settings: &TunnelSettings,
    metrics: &Metrics,
    listeners: Vec<(String, ServiceSocket)>,
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
        listener.set_nonblocking()?;
        let labels = ServiceLabels {
            service: name.clone(),
        };
        let transport = match &listener {
            ServiceSocket::Tcp(_) => Transport::Tcp,
            ServiceSocket::Udp(_) => Transport::Udp,
        };
        let udp = (transport == Transport::Udp)
            .then(|| UdpParts::new(config.udp_limits(), metrics, &labels));
        let service = Arc::new(Service {
            name: name.clone(),
            addr: listener.local_addr()?,
            token: config.load_token()?,
            pool: Pool::default(),
            active: AtomicUsize::new(0),
            labels,
            transport,
            udp,
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
    let (services, std_listeners) = services(&settings, &metrics, listeners.services)?;
    listeners.agents.set_nonblocking(true)?;
    let tls = match (&settings.certfile, &settings.keyfile) {
        (Some(cert), Some(key)) => Some(crate::tunnel::tls::acceptor(cert, key)?),
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
    let runtime = crate::tunnel::net::runtime(state.settings.workers, "switchboard-tunnel")?;
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
            .map(|s| match s.transport {
                Transport::Tcp => format!("{} on {}", s.name, s.addr),
                Transport::Udp => format!("{} on {} (udp)", s.name, s.addr),
            })
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
    tokio::spawn(agents::accept_loop(state.clone(), agents));
    for (service, socket) in services {
        let served = match socket {
            ServiceSocket::Tcp(listener) => tokio::net::TcpListener::from_std(listener).map(|l| {
                drop(tokio::spawn(clients::accept_clients(
                    state.clone(),
                    service.clone(),
                    l,
                )))
            }),
            ServiceSocket::Udp(socket) => tokio::net::UdpSocket::from_std(socket).map(|s| {
                drop(tokio::spawn(udp::receive(
                    state.clone(),
                    service.clone(),
                    s,
                )))
            }),
        };
        if let Err(e) = served {
            log::error!("tunnel: service {} socket: {e}", service.name);
        }
    }
    state.cancel.cancelled().await;
    // Give pumps and control channels a moment to notice and close.
    let deadline = Instant::now() + Duration::from_millis(500);
    while state.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
