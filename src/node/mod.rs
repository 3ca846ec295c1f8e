//! The relay node: the running process that composes the relay server, the
//! TCP tunnel and the admin listener.
//!
//! [`start`] is a function of the [`Settings`] and the already-bound public
//! and admin listeners ([`bind`] makes them from the settings; tests bind
//! `127.0.0.1:0`); the tunnel's listeners are bound from `[tunnel]` when it
//! has services. It makes the one [`Metrics`] of the process and hands
//! each component what it needs:
//!
//! - [`server`] gets the settings, the metrics and the public
//!   listener;
//! - [`tunnel::relay`](crate::tunnel::relay) gets `[tunnel]`, the metrics and
//!   its listeners;
//! - [`admin`] gets a view of the others (`view.rs`: the
//!   relay's counts and clients, the tunnel's state, the metrics, the
//!   uptime), the admin token and the admin listener.
//!
//! With `[cluster] enabled`, it also starts the [`crate::cluster`] engine
//! (in the background: it connects to Redis) and attaches it to the relay
//! ([`server::attach_cluster`]); with the cluster off no Redis is touched.
//!
//! With `log.clients_interval_secs`, it logs the connected clients
//! periodically, as ProxyStore's relay does (`clients_line.rs`).
//!
//! It returns a [`Node`], which owns the one shutdown path
//! ([`Node::shutdown`]): new upgrades are refused, the tunnel stops (its
//! pumps are cancelled), every session is closed with 1001 within
//! `server.shutdown_grace_ms`, then both HTTP listeners stop. Start errors
//! of every component come back as one [`NodeError`]. `main.rs` calls
//! [`bind`], [`start`] and, on SIGTERM/SIGINT, [`Node::shutdown`]; on SIGHUP
//! or a change of the `--config` file, [`Reloader::reload`] (`reload.rs`)
//! applies the file's `[[tunnel.services]]` to the running tunnel.
//! `switchboard check-config` calls [`check`], which loads what [`start`]
//! loads from the settings without binding or connecting.

mod check;
mod clients_line;
mod reload;
mod view;

pub use reload::Reloader;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use crate::admin::{self, metrics::Metrics};
use crate::cluster::Cluster;
use crate::config::{ConfigError, Settings};
use crate::server::{self, RelayServer, ServerError, ServerState};
use crate::tunnel::relay::{self as tunnel, StartError, TunnelRelay};
use view::NodeView;

pub use check::check;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting could not be turned into a running component.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS certificate or key (`server.*` or `tunnel.*`) could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A listener could not be bound or used.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ServerError> for NodeError {
    fn from(error: ServerError) -> Self {
        match error {
            ServerError::Config(e) => NodeError::Config(e),
            ServerError::Tls(e) => NodeError::Tls(e),
            ServerError::Io(e) => NodeError::Io(e),
        }
    }
}

impl From<StartError> for NodeError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Config(e) => NodeError::Config(e),
            StartError::Tls(e) => NodeError::Tls(e),
            StartError::Io(e) => NodeError::Io(e),
        }
    }
}

/// The running admin listener.
struct AdminListener {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A running node: its addresses and the way to stop it.
pub struct Node {
    relay: RelayServer,
    admin: Option<AdminListener>,
    tunnel: Option<TunnelRelay>,
    /// The periodic "Connected clients" line (`log.clients_interval_secs`).
    clients_line: Option<actix_rt::task::JoinHandle<()>>,
}

impl Node {
    /// Address of the public WebSocket listener.
    pub fn public_addr(&self) -> SocketAddr {
        self.relay.addr()
    }

    /// Address of the admin listener, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The TCP tunnel, when `[tunnel]` has services (its listeners' addresses).
    pub fn tunnel(&self) -> Option<&TunnelRelay> {
        self.tunnel.as_ref()
    }

    /// The relay server (its state: settings, metrics, registry).
    pub fn relay(&self) -> &RelayServer {
        &self.relay
    }

    /// The one shutdown path: refuses new upgrades, stops the tunnel,
    /// closes every session with 1001 and waits for them (bounded by
    /// `server.shutdown_grace_ms`), stops the cluster engine, then stops
    /// both listeners.
    ///
    /// With the cluster on, each closed session's registrations are
    /// unregistered in Redis as it closes (compare and delete); the engine
    /// then leaves the cluster (its liveness key, what is left of its
    /// records, and its id in the nodes set are deleted).
    pub async fn shutdown(mut self) {
        if let Some(task) = self.clients_line.take() {
            task.abort();
        }
        self.relay.refuse_new();
        if let Some(tunnel) = self.tunnel.take() {
            tunnel.shutdown().await;
        }
        self.relay.close_sessions().await;
        if let Some(link) = self.relay.state().cluster() {
            link.cluster.shutdown().await;
        }
        self.relay.stop_listener().await;
        if let Some(admin) = &self.admin {
            admin.handle.stop(false).await;
        }
        self.wait().await;
        log::info!("relay stopped");
    }

    /// Resolves when both listeners have stopped.
    pub async fn wait(&mut self) {
        self.relay.wait().await;
        if let Some(task) = self.admin.as_mut().and_then(|a| a.task.take()) {
            let _ = task.await;
        }
    }
}

/// Binds the listeners the settings name (public, then admin if enabled).
pub fn bind(settings: &Settings) -> Result<(TcpListener, Option<TcpListener>), NodeError> {
    let s = &settings.server;
    let public = bind_named("public listener", &s.host, s.port)?;
    let admin = if settings.admin.enabled {
        Some(bind_named(
            "admin listener",
            &settings.admin.host,
            settings.admin.port,
        )?)
    } else {
        None
    };
    Ok((public, admin))
}

/// Binds `host:port`; an error names the listener and the address.
fn bind_named(what: &str, host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what} {host}:{port}: {e}")))
}

/// Starts the node on already-bound listeners: loads what the relay's
/// settings name (auth, TLS; [`server::prepare`]), then starts the tunnel
/// (when `[tunnel]` has services, on listeners bound here), the relay
/// server, then the admin listener. Must run inside an actix System.
pub fn start(
    settings: Settings,
    public: TcpListener,
    admin: Option<TcpListener>,
) -> Result<Node, NodeError> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    let token = settings.admin.token.clone();
    // Everything the settings name is loaded before anything listens.
    let prepared = server::prepare(settings.clone())?;
    let tunnel = if settings.tunnel.services.is_empty() {
        None
    } else {
        let listeners = tunnel::bind(&settings.tunnel)?;
        Some(tunnel::start(
            settings.tunnel.clone(),
            metrics.clone(),
            listeners,
        )?)
    };
    let relay = server::start(prepared, metrics.clone(), public)?;
    if settings.cluster.enabled {
        start_cluster(&settings, relay.state());
    }
    let admin = match admin {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let view = NodeView {
                relay: relay.state().clone(),
                tunnel: tunnel.as_ref().map(|t| t.state().clone()),
                metrics,
                started,
            };
            let server = admin::serve(view, token, listener)?;
            let handle = server.handle();
            Some(AdminListener {
                addr,
                handle,
                task: Some(actix_rt::spawn(server)),
            })
        }
        None => None,
    };
    log::info!(
        "relay listening on {}://{}; admin on {}",
        if relay.state().settings.server.certfile.is_some() {
            "wss"
        } else {
            "ws"
        },
        relay.addr(),
        admin
            .as_ref()
            .map_or("(disabled)".to_string(), |a| format!("http://{}", a.addr))
    );
    let clients_line = clients_line::start(&settings.log, relay.state().clone());
    Ok(Node {
        relay,
        admin,
        tunnel,
        clients_line,
    })
}

/// Starts the cluster engine in the background (it connects to Redis, so
/// it is async; the node serves meanwhile, on its own) and attaches it to
/// the relay once started. Redis being away is not an error: the engine
/// starts degraded and keeps trying.
fn start_cluster(settings: &Settings, state: &Arc<ServerState>) {
    let cluster = settings.cluster.clone();
    let node_id = if cluster.node_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        cluster.node_id.clone()
    };
    let max_message = settings.server.max_message_bytes;
    let source = server::registration_source(state);
    let state = state.clone();
    actix_rt::spawn(async move {
        match Cluster::start(&cluster, node_id, max_message, source).await {
            Ok((engine, inbox)) => {
                log::info!("cluster node {} started", engine.node_id());
                server::attach_cluster(&state, engine, inbox);
            }
            Err(e) => log::error!("cluster engine not started: {e}; this node works alone"),
        }
    });
}
