//! Live reload of `[[tunnel.services]]`: the running services are compared
//! with freshly loaded entries by name.
//!
//! - A service whose entry and token are the same is kept: its listener,
//!   agents, pooled connections and clients are not touched.
//! - A removed service stops: its [`Service::cancel`] ends its listener (or
//!   UDP socket), its agents' control channels (so their pooled
//!   connections and every client carried over them), its waiting clients
//!   and its UDP sessions; its public port is closed.
//! - A changed service (any key, or its token file's content) is stopped
//!   like a removed one and started again. When its `bind` and `type` are
//!   unchanged its public socket passes to the new service as it is (no
//!   moment where the port refuses); otherwise a new one is bound.
//! - An added service starts on a newly bound socket.
//!
//! Every socket a reload needs is bound before anything changes: one that
//! cannot be bound (the port is taken, the address is not local) refuses
//! the whole reload with the service and address named, and the running
//! services stay as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::pool::Pool;
use super::state::{Service, TunnelState, UdpParts};
use super::{clients, udp};
use crate::admin::metrics::{Metrics, ServiceLabels};
use crate::config::{ConfigError, Secret, TunnelService};
use crate::protocol::tunnel::Transport;

/// A service's public socket on the tunnel's runtime, shared by its accept
/// (or receive) loop and the relay's handle, which may pass it on to the
/// service's successor.
#[derive(Clone)]
pub(super) enum PublicSocket {
    Tcp(Arc<tokio::net::TcpListener>),
    Udp(Arc<tokio::net::UdpSocket>),
}

/// Why a reload was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// An entry could not be used (its token file cannot be read).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A service's public socket could not be bound (the error names the
    /// service and its address).
    #[error("{0}")]
    Bind(std::io::Error),
}

impl PublicSocket {
    /// Registers a bound TCP listener with the current runtime (call inside it).
    pub(super) fn tcp(listener: std::net::TcpListener) -> std::io::Result<PublicSocket> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(PublicSocket::Tcp(Arc::new(listener)))
    }

    /// Registers a bound UDP socket with the current runtime (call inside it).
    pub(super) fn udp(socket: std::net::UdpSocket) -> std::io::Result<PublicSocket> {
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        Ok(PublicSocket::Udp(Arc::new(socket)))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            PublicSocket::Tcp(l) => l.local_addr(),
            PublicSocket::Udp(s) => s.local_addr(),
        }
    }

    fn transport(&self) -> Transport {
        match self {
            PublicSocket::Tcp(_) => Transport::Tcp,
            PublicSocket::Udp(_) => Transport::Udp,
        }
    }
}

/// The run-time service of `config` (its token already loaded) on `socket`.
pub(super) fn make_service(
    config: &TunnelService,
    token: Secret,
    socket: &PublicSocket,
    metrics: &Metrics,
    parent: &CancellationToken,
) -> std::io::Result<Arc<Service>> {
    let labels = ServiceLabels {
        service: config.name.clone(),
    };
    let transport = socket.transport();
    let udp =
        (transport == Transport::Udp).then(|| UdpParts::new(config.udp_limits(), metrics, &labels));
    Ok(Arc::new(Service {
        name: config.name.clone(),
        addr: socket.local_addr()?,
        token,
        pool: Pool::default(),
        active: AtomicUsize::new(0),
        labels,
        transport,
        udp,
        config: config.clone(),
        cancel: parent.child_token(),
    }))
}

/// Starts serving `service` on `socket` (its accept or receive loop, on
/// the tunnel's runtime `runtime`).
pub(super) fn launch(
    runtime: &tokio::runtime::Handle,
    state: &Arc<TunnelState>,
    service: Arc<Service>,
    socket: PublicSocket,
) {
    let state = state.clone();
    match socket {
        PublicSocket::Tcp(l) => drop(runtime.spawn(clients::accept_clients(state, service, l))),
        PublicSocket::Udp(s) => drop(runtime.spawn(udp::receive(state, service, s))),
    }
}

/// Binds `config`'s public socket on `runtime`; an error names the service and address.
pub(super) fn bind_service(
    config: &TunnelService,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<PublicSocket> {
    let _inside = runtime.enter();
    let bound = match config.transport() {
        Transport::Tcp => {
            std::net::TcpListener::bind(config.bind.as_str()).and_then(PublicSocket::tcp)
        }
        Transport::Udp => udp::bind(config.bind.as_str()).and_then(PublicSocket::udp),
    };
    bound.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "tunnel service {}: {} ({}): {e}",
                config.name,
                config.bind,
                config.transport().as_str()
            ),
        )
    })
}

/// What a reload did, by service name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Services unchanged, left running.
    pub kept: Vec<String>,
    /// Services whose entry changed, stopped and started again.
    pub restarted: Vec<String>,
    /// Services added.
    pub started: Vec<String>,
    /// Services removed.
    pub stopped: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        };
        write!(
            f,
            "{} service(s) kept{}, {} restarted{}, {} started{}, {} stopped{}",
            self.kept.len(),
            list(&self.kept),
            self.restarted.len(),
            list(&self.restarted),
            self.started.len(),
            list(&self.started),
            self.stopped.len(),
            list(&self.stopped)
        )
    }
}

/// A service a reload starts: its entry and token, the socket it gets,
/// and whether it replaces a running one.
struct Incoming {
    config: TunnelService,
    token: Secret,
    socket: PublicSocket,
    replaces: bool,
}

/// Applies `entries` (validated settings) to the running tunnel: see the
/// module docs. `sockets` are the running services' public sockets; it is
/// updated. On an error nothing has changed.
pub(super) fn apply(
    state: &Arc<TunnelState>,
    runtime: &tokio::runtime::Handle,
    sockets: &mut HashMap<String, PublicSocket>,
    entries: &[TunnelService],
) -> Result<ReloadSummary, ReloadError> {
    let running = state.services().clone();
    let mut summary = ReloadSummary::default();
    let mut incoming = Vec::new();
    for config in entries {
        let token = config.load_token()?;
        let old = running.get(&config.name);
        match old {
            Some(old) if old.config == *config && old.token == token => {
                summary.kept.push(config.name.clone());
                continue;
            }
            _ => {}
        }
        let same_socket = old
            .filter(|o| o.config.bind == config.bind && o.config.transport() == config.transport());
        let socket = match same_socket.and_then(|_| sockets.get(&config.name)) {
            Some(socket) => socket.clone(),
            None => bind_service(config, runtime).map_err(ReloadError::Bind)?,
        };
        incoming.push(Incoming {
            config: config.clone(),
            token,
            socket,
            replaces: old.is_some(),
        });
    }
    let mut fresh = Vec::new();
    for Incoming {
        config,
        token,
        socket,
        replaces,
    } in incoming
    {
        let service = make_service(&config, token, &socket, &state.metrics, &state.cancel)
            .map_err(ReloadError::Bind)?;
        if replaces {
            summary.restarted.push(config.name.clone());
        } else {
            summary.started.push(config.name.clone());
        }
        fresh.push((service, socket));
    }
    let wanted: std::collections::HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut retired = Vec::new();
    {
        let mut services = state.services.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = services
            .keys()
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            retired.extend(services.remove(&name));
            sockets.remove(&name);
            summary.stopped.push(name);
        }
        for (service, socket) in &fresh {
            retired.extend(services.insert(service.name.clone(), service.clone()));
            sockets.insert(service.name.clone(), socket.clone());
        }
    }
    // The old services' loops end and let go of their sockets; a socket
    // passed on stays open in its successor's loop.
    for service in retired {
        service.cancel.cancel();
        state.pool_changed(&service);
    }
    for (service, socket) in fresh {
        launch(runtime, state, service, socket);
    }
    summary.stopped.sort();
    Ok(summary)
}
