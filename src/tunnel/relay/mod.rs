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
//! - `reload`: a live reload of `[[tunnel.services]]` (each service has a
//!   cancel token of its own, a child of the tunnel's, so one can stop alone).
//! - `udp`: a UDP service's socket: each client address becomes a session
//!   handed to a pooled connection like a TCP client, then carried as
//!   length-framed datagrams until it is idle for `udp_idle_timeout_ms`.
//!
//! Imports run one way: `agents` → `udp` → `carry` → `clients` → `state` → `pool`,
//! and `reload` → `udp`, `clients`, `state`, `pool`.

mod agents;
mod carry;
mod clients;
pub mod pool;
mod reload;
mod state;
mod udp;

pub use reload::{ReloadError, ReloadSummary};
pub use state::{AgentStatus, ReloadStatus, Service, ServiceStatus, TunnelState, TunnelStatus};

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::admin::metrics::{Metrics, ResultLabels};
use crate::config::{ConfigError, TunnelService, TunnelSettings};
use crate::protocol::tunnel::Transport;
use crate::tls::TlsError;
use reload::{launch, make_service, PublicSocket};

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
    /// Registers it with the current runtime (call inside it).
    fn public(self) -> std::io::Result<PublicSocket> {
        match self {
            ServiceSocket::Tcp(l) => PublicSocket::tcp(l),
            ServiceSocket::Udp(s) => PublicSocket::udp(s),
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
    runtime: tokio::runtime::Handle,
    /// The services' public sockets by name (each also held by its loop).
    sockets: HashMap<String, PublicSocket>,
    done: Option<oneshot::Receiver<()>>,
}

impl TunnelRelay {
    /// Address of the agents' listener.
    pub fn agents_addr(&self) -> SocketAddr {
        self.state.agents_addr
    }

    /// Public address of a service.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.state.service(name).map(|s| s.addr)
    }

    /// Shared state (for `/tunnels`).
    pub fn state(&self) -> &Arc<TunnelState> {
        &self.state
    }

    /// Applies freshly loaded, validated `[[tunnel.services]]` entries
    /// (see `reload.rs`: added services start, removed ones stop, changed
    /// ones restart, the rest keep every connection). Counted in `/tunnels`
    /// and `/metrics`; on an error (a token file that cannot be read, a
    /// socket that cannot be bound) nothing changed.
    pub fn reload(&mut self, services: &[TunnelService]) -> Result<ReloadSummary, ReloadError> {
        let applied = reload::apply(&self.state, &self.runtime, &mut self.sockets, services);
        match &applied {
            Ok(_) => self.record_reload(None),
            Err(e) => self.record_reload(Some(e.to_string())),
        }
        applied
    }

    /// Counts a reload: applied (`None`), or refused for `error`.
    pub fn record_reload(&self, error: Option<String>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.state
            .metrics
            .tunnel_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        let mut status = self.state.reload.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            None => status.count += 1,
            Some(error) => {
                status.failed += 1;
                status.last_error = Some(error);
                status.last_error_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
            }
        }
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
type ServiceListeners = Vec<(Arc<Service>, PublicSocket)>;

/// The services of `settings` by name, each with its bound public socket
/// (registered with the current runtime: call inside it).
fn services(
    settings: &TunnelSettings,
    metrics: &Metrics,
    cancel: &CancellationToken,
    listeners: Vec<(String, ServiceSocket)>,
) -> Result<(HashMap<String, Arc<Service>>, ServiceListeners), StartError> {
    let mut services = HashMap::new();
    let mut public = Vec::new();
    for (name, listener) in listeners {
        let config = settings
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                key: "tunnel.services".into(),
                message: format!("a listener was given for unknown service {name:?}"),
            })?;
        let socket = listener.public()?;
        let service = make_service(config, config.load_token()?, &socket, metrics, cancel)?;
        services.insert(name, service.clone());
        public.push((service, socket));
    }
    Ok((services, public))
}

/// Starts the tunnel relay on already-bound listeners, on a runtime of its
/// own (one thread per core). Callable from any context.
pub fn start(
    settings: TunnelSettings,
    metrics: Arc<Metrics>,
    listeners: TunnelListeners,
) -> Result<TunnelRelay, StartError> {
    let runtime = crate::tunnel::net::runtime(settings.workers, "switchboard-tunnel")?;
    let cancel = CancellationToken::new();
    let (services, public) = {
        let _inside = runtime.enter();
        services(&settings, &metrics, &cancel, listeners.services)?
    };
    listeners.agents.set_nonblocking(true)?;
    let tls = match (&settings.certfile, &settings.keyfile) {
        (Some(cert), Some(key)) => Some(crate::tunnel::tls::acceptor(cert, key)?),
        _ => None,
    };
    let state = Arc::new(TunnelState {
        tls,
        agents_addr: listeners.agents.local_addr()?,
        settings,
        services: RwLock::new(services),
        reload: Mutex::default(),
        agents: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        metrics,
        active: AtomicUsize::new(0),
        cancel,
    });
    let handle = runtime.handle().clone();
    let mut sockets = HashMap::new();
    for (service, socket) in public {
        sockets.insert(service.name.clone(), socket.clone());
        launch(&handle, &state, service, socket);
    }
    let (done_tx, done_rx) = oneshot::channel();
    let run_state = state.clone();
    let agents = listeners.agents;
    std::thread::Builder::new()
        .name("switchboard-tunnel".into())
        .spawn(move || {
            runtime.block_on(serve(run_state, agents));
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = done_tx.send(());
        })?;
    log::info!(
        "tunnel: agents connect to {}{}; services: {}",
        state.agents_addr,
        if state.tls.is_some() { " (TLS)" } else { "" },
        state
            .services()
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
        runtime: handle,
        sockets,
        done: Some(done_rx),
    })
}

async fn serve(state: Arc<TunnelState>, agents: TcpListener) {
    let agents = match tokio::net::TcpListener::from_std(agents) {
        Ok(l) => l,
        Err(e) => return log::error!("tunnel: agents listener: {e}"),
    };
    tokio::spawn(agents::accept_loop(state.clone(), agents));
    state.cancel.cancelled().await;
    // Give pumps and control channels a moment to notice and close.
    let deadline = Instant::now() + Duration::from_millis(500);
    while state.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
