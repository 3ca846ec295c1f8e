//! The WebSocket relay (signaling) server, and nothing else.
//!
//! [`start`] is a function of the settings (`[server]` and `[auth]`), the
//! process's [`Metrics`] (it counts sessions, registrations, forwards and
//! closes into them) and an already-bound public listener. It returns a
//! [`RelayServer`] handle: the listener's address, the shared
//! [`ServerState`] (through which [`counts`] and [`clients`] ask the
//! registry what `/health` and `/clients` show), and the steps of a graceful
//! stop (refuse new upgrades, close every session with 1001 within
//! `server.shutdown_grace_ms`, stop the listener), which whoever composes
//! the process calls in its one shutdown path. It knows nothing of the
//! admin listener or the tunnel.
//!
//! Shape: one actix-web HTTP server with `server.workers` workers (it must
//! start inside an actix System); every WebSocket upgrade, on any path,
//! becomes a [`WsSession`] actor on its worker, and the
//! one [`Registry`](registry::Registry) actor runs on the first worker's
//! thread. Sessions register, forward and unregister through the registry
//! with [`messages`]; the registry reaches sessions through `Recipient`s.
//!
//! - [`registry`]: the one actor that owns registrations.
//! - [`cluster`]: the registry's side of the cluster (`[cluster] enabled`).
//! - [`session`]: one actor per WebSocket; [`inbound`] reads its frames.
//! - [`auth`]: authentication of upgrade requests.
//! - [`messages`]: actor messages between them.
//! - [`outbound`]: a session's bounded outbound queue and its writer.
//! - `state`: [`ServerState`], shared by the sessions, the status readers
//!   and the stop, with the [`RegistrySlot`].
//!
//! TLS (`server.certfile`) comes from [`crate::tls`].

pub mod auth;
pub mod cluster;
pub mod inbound;
pub mod messages;
pub mod outbound;
pub mod registry;
pub mod session;
mod state;

pub use cluster::{attach as attach_cluster, registration_source, ClusterLink, ClusterSlot};
pub use state::{RegistrySlot, ServerState};

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::admin::metrics::Metrics;
use crate::config::{ConfigError, Settings};
use crate::defaults;
use crate::protocol::close;
use auth::Authenticator;
use messages::{ClientInfo, CloseAll, Counts, CountsReply, ListClients};
use session::WsSession;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting could not be turned into a running component.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A listener could not be used.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::tls::TlsError> for ServerError {
    fn from(error: crate::tls::TlsError) -> Self {
        ServerError::Tls(error.0)
    }
}

/// A running relay server: its address, its state and the steps of its stop.
pub struct RelayServer {
    state: Arc<ServerState>,
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RelayServer {
    /// Address of the public WebSocket listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state (settings, metrics, registry, counters).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// First step of a stop: new upgrades get 503 from now on.
    pub fn refuse_new(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Closes every session with 1001 and waits for them, bounded by
    /// `server.shutdown_grace_ms`; sessions left after that are dropped
    /// with the listener.
    pub async fn close_sessions(&self) {
        let state = &self.state;
        let grace = Duration::from_millis(state.settings.server.shutdown_grace_ms);
        let asked = match state.registry.get() {
            Some(registry) => registry
                .send(CloseAll {
                    code: close::GOING_AWAY,
                    reason: close::REASON_SHUTDOWN,
                })
                .await
                .unwrap_or(0),
            None => 0,
        };
        log::info!("shutting down: closing {asked} sessions with 1001");
        let deadline = Instant::now() + grace;
        while state.connected.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = state.connected.load(Ordering::Acquire);
        if left > 0 {
            log::warn!("{left} sessions still open after the grace period; dropping them");
        }
    }

    /// Stops the listener (its workers finish within a second).
    pub async fn stop_listener(&self) {
        self.handle.stop(false).await;
    }

    /// Resolves when the listener has stopped.
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The relay's settings with what they name already loaded and checked:
/// the authenticator (`[auth]`, its tokens file) and the TLS configuration
/// (`server.certfile`/`keyfile`). [`prepare`] makes it before any component
/// starts, so a bad setting stops the process before anything listens.
pub struct Prepared {
    settings: Settings,
    authenticator: Authenticator,
    tls: Option<rustls::ServerConfig>,
}

/// Loads and checks what the relay's settings name (auth, TLS); errors name
/// the setting or the file.
pub fn prepare(settings: Settings) -> Result<Prepared, ServerError> {
    let authenticator = Authenticator::from_settings(&settings.auth)?;
    let tls = match (&settings.server.certfile, &settings.server.keyfile) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    Ok(Prepared {
        settings,
        authenticator,
        tls,
    })
}

/// Starts the relay server on an already-bound public listener, counting
/// into `metrics`. Must run inside an actix System.
pub fn start(
    prepared: Prepared,
    metrics: Arc<Metrics>,
    public: TcpListener,
) -> Result<RelayServer, ServerError> {
    let Prepared {
        settings,
        authenticator,
        tls,
    } = prepared;
    let cluster = ClusterSlot::default();
    let state = Arc::new(ServerState {
        settings,
        registry: RegistrySlot::new(metrics.clone(), cluster.clone()),
        cluster,
        metrics,
        authenticator,
        connected: AtomicUsize::new(0),
        next_session_id: AtomicU64::new(1),
        shutting_down: AtomicBool::new(false),
        close_flush: Duration::from_millis(defaults::CLOSE_FLUSH_MS),
    });
    public.set_nonblocking(true)?;
    // Accepted sockets inherit this: a client that acknowledges none of the
    // data sent to it for the heartbeat timeout (one that stopped reading,
    // even while it keeps its window at zero, or a dead host) has its
    // connection aborted by the kernel. Without it such a connection, and
    // the frames buffered for it, would outlive its session for as long as
    // the client keeps it open (the HTTP layer has no write timeout).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(&public).set_tcp_user_timeout(Some(Duration::from_millis(
        state.settings.server.heartbeat_timeout_ms,
    )))?;
    let addr = public.local_addr()?;
    let server = public_server(&state, public, tls)?;
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    Ok(RelayServer {
        state,
        addr,
        handle,
        task: Some(task),
    })
}

/// The WebSocket listener's HTTP server (not yet polled: its workers start,
/// and the first of them starts the Registry, once it is spawned).
fn public_server(
    state: &Arc<ServerState>,
    public: TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> Result<actix_web::dev::Server, ServerError> {
    let workers = match state.settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let max_clients = state.settings.server.max_clients;
    let data = web::Data::from(state.clone());
    let server = HttpServer::new(move || {
        // Runs on each worker's thread; the first one hosts the Registry.
        data.registry.start_here();
        App::new()
            .app_data(data.clone())
            .default_service(web::to(upgrade))
    })
    .workers(workers)
    .max_connections(max_clients.saturating_add(1024))
    .max_connection_rate(defaults::MAX_CONNECTION_RATE)
    .backlog(4096)
    // Relay frames are small and latency-bound: never hold them back (Nagle).
    .tcp_nodelay(true)
    .disable_signals()
    // Once a session's close frame is flushed the socket is shut down at once;
    // actix's default lingers up to 1 s waiting for the client to hang up first,
    // while WebSocket clients wait for the server to (RFC 6455 §7.1.1).
    .client_disconnect_timeout(Duration::ZERO)
    .shutdown_timeout(1);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(public, config)?,
        None => server.listen(public)?,
    };
    Ok(server.run())
}

/// Accepts a WebSocket upgrade on any path and starts its session actor.
async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ServerState>,
) -> Result<HttpResponse, actix_web::Error> {
    if state.shutting_down.load(Ordering::Acquire) {
        return Ok(HttpResponse::ServiceUnavailable().body("relay is shutting down"));
    }
    let max = state.settings.server.max_clients;
    if state.connected.fetch_add(1, Ordering::AcqRel) >= max {
        state.connected.fetch_sub(1, Ordering::AcqRel);
        state.metrics.rejected_max_clients.inc();
        log::warn!(
            "refused connection from {}: max_clients ({max}) reached",
            crate::addr::shown(req.peer_addr())
        );
        return Ok(HttpResponse::ServiceUnavailable().body("relay is at max_clients"));
    }
    let Some(registry) = state.registry.get() else {
        state.connected.fetch_sub(1, Ordering::AcqRel);
        return Ok(HttpResponse::ServiceUnavailable().body("relay is starting"));
    };
    // actix-http checks the handshake (RFC 6455 §4.2.1) and answers 101; the
    // frames each way are ours: `outbound` encodes into the response body,
    // `inbound` decodes the request's payload.
    let queue = state
        .settings
        .server
        .outbound_queue
        .max(defaults::MIN_SESSION_QUEUE);
    let (out, response_body) = outbound::Outbound::new(queue);
    let response = actix_http::ws::handshake(req.head())
        .map_err(actix_web::Error::from)
        .and_then(|mut handshake| {
            handshake
                .message_body(actix_web::body::BoxBody::new(response_body))
                .map_err(actix_web::Error::from)
        });
    let response = match response {
        Ok(response) => HttpResponse::from(response),
        Err(error) => {
            state.connected.fetch_sub(1, Ordering::AcqRel);
            return Err(error);
        }
    };
    let limit = state.settings.server.max_message_bytes;
    let stream = inbound::InboundStream::new(body.into_inner(), limit);
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let state = state.into_inner();
    let remote = req.peer_addr().map(crate::addr::canonical);
    WsSession::create(move |ctx| {
        ctx.add_stream(stream);
        WsSession::new(state, registry, authorization, remote, out)
    });
    Ok(response)
}

/// Open and registered counts (`/health`); `None` when the registry cannot answer.
pub async fn counts(state: &ServerState) -> Option<CountsReply> {
    state.registry.get()?.send(Counts).await.ok()
}

/// The registered clients (`/clients`); `None` when the registry cannot answer.
pub async fn clients(state: &ServerState) -> Option<Vec<ClientInfo>> {
    state.registry.get()?.send(ListClients).await.ok()
}
