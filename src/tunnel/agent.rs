//! The host agent: serves a local TCP service through the relay.
//!
//! It keeps one control channel and [`AgentSettings::pool`] pooled data
//! connections to the relay. Each pooled connection waits for `Start`,
//! dials the local service (or echoes, with [`LocalService::Echo`]), answers
//! `Started` and pumps bytes; its slot opens a fresh pooled connection at
//! once. When the relay goes away the agent reconnects with capped,
//! jittered exponential backoff that resets after a stable session. A wrong
//! token or an unknown service ends [`run`] with [`AgentError::Rejected`].
//! The pool's slots and the service of each client live in `agent_pool.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::framing::{write_frame, FrameReader};
use super::tls::{AgentConn, AgentTls};
use super::{TlsMismatch, TunnelError};
use crate::config::Secret;
use crate::defaults;
use crate::protocol::tunnel::{self, ErrorCode, Frame, FrameError, Role};
use tokio_util::either::Either;

/// What the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalService {
    /// A TCP service at `host:port`, dialled once per client.
    Addr(String),
    /// The built-in echo service: every byte is sent back.
    Echo,
}

/// Everything the agent needs; [`AgentSettings::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The relay's agents listener, `host:port`.
    pub relay: String,
    /// The service name to serve.
    pub service: String,
    /// The service's token.
    pub token: Secret,
    /// What to serve.
    pub local: LocalService,
    /// Pooled data connections kept open.
    pub pool: usize,
    /// Interval between the agent's heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence from the relay after which a connection is dropped.
    pub heartbeat_timeout: Duration,
    /// Time the relay gets to complete a handshake.
    pub handshake_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// A session lasting this long resets the backoff.
    pub backoff_reset: Duration,
    /// Time the local service gets to accept a connection.
    pub local_connect_timeout: Duration,
    /// Largest copy buffer (or splice pipe) per direction, in bytes.
    pub copy_buffer: usize,
    /// Forward with zero-copy `splice(2)` on Linux.
    pub splice: bool,
    /// Send a PROXY protocol v2 header (the client's address) to the local service first.
    pub proxy_protocol: bool,
    /// Connect to the relay over TLS.
    pub tls: Option<AgentTls>,
}

impl AgentSettings {
    /// Settings with every default from [`crate::defaults`].
    pub fn new(
        relay: impl Into<String>,
        service: impl Into<String>,
        token: Secret,
        local: LocalService,
    ) -> Self {
        let ms = Duration::from_millis;
        AgentSettings {
            relay: relay.into(),
            service: service.into(),
            token,
            local,
            pool: defaults::AGENT_POOL,
            heartbeat_interval: ms(defaults::TUNNEL_HEARTBEAT_INTERVAL_MS),
            heartbeat_timeout: ms(defaults::TUNNEL_HEARTBEAT_TIMEOUT_MS),
            handshake_timeout: ms(defaults::TUNNEL_HANDSHAKE_TIMEOUT_MS),
            backoff_min: ms(defaults::AGENT_BACKOFF_MIN_MS),
            backoff_max: ms(defaults::AGENT_BACKOFF_MAX_MS),
            backoff_reset: ms(defaults::AGENT_BACKOFF_RESET_MS),
            local_connect_timeout: ms(defaults::AGENT_LOCAL_CONNECT_TIMEOUT_MS),
            copy_buffer: defaults::TUNNEL_COPY_BUFFER,
            splice: defaults::TUNNEL_SPLICE,
            proxy_protocol: false,
            tls: None,
        }
    }
}

/// Why the agent stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The relay refused the agent in a way retrying cannot fix.
    #[error("relay refused the agent: {reason}")]
    Rejected {
        /// The relay's error code.
        code: ErrorCode,
        /// The relay's reason.
        reason: String,
    },
    /// The settings cannot work.
    #[error("invalid agent settings: {0}")]
    Settings(String),
    /// The agent's `--tls` differs from the relay's `tunnel.certfile`.
    #[error("{0}")]
    TlsMismatch(TlsMismatch),
    /// The relay's certificate fails verification; retrying cannot help.
    #[error("{0}")]
    UntrustedRelay(TunnelError),
}

/// Live counters of an agent (for tests, logs and the CLI).
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Whether the control channel is up now.
    pub connected: AtomicBool,
    /// Control sessions established, ever.
    pub sessions: AtomicU64,
    /// Idle pooled data connections now.
    pub idle: AtomicUsize,
    /// Clients connected through to the local service, ever.
    pub served: AtomicU64,
    /// Clients whose local connection failed, ever.
    pub local_failures: AtomicU64,
}

/// A running agent.
pub struct AgentHandle {
    /// Live counters.
    pub stats: Arc<AgentStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl AgentHandle {
    /// Stops the agent (closing every connection) and waits for it.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.cancel.cancel();
        self.join().await
    }

    /// Waits for the agent to end by itself (a fatal refusal).
    pub async fn join(self) -> Result<(), AgentError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(AgentError::Settings(format!("agent task failed: {e}"))))
    }
}

/// Starts an agent on the current tokio runtime.
pub fn spawn(settings: AgentSettings) -> AgentHandle {
    let stats = Arc::new(AgentStats::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(settings, stats.clone(), cancel.clone()));
    AgentHandle {
        stats,
        cancel,
        task,
    }
}

/// Capped, jittered exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `min`, doubles per attempt, never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in [base/2, base], base = min·2^attempt capped at max.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let factor = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(factor)
    }

    /// Back to `min` (after a stable session).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs the agent until `cancel` fires (`Ok`) or the relay refuses it for good.
pub async fn run(
    settings: AgentSettings,
    stats: Arc<AgentStats>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    if settings.pool == 0 {
        return Err(AgentError::Settings("pool must be at least 1".into()));
    }
    if !tunnel::valid_service_name(&settings.service) {
        return Err(AgentError::Settings(format!(
            "invalid service name {:?}",
            settings.service
        )));
    }
    let settings = Arc::new(settings);
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    loop {
        let began = Instant::now();
        let result = session(&settings, &stats, &cancel).await;
        stats.connected.store(false, Ordering::Release);
        match result {
            Ok(()) => return Ok(()),
            Err(TunnelError::Refused { code, reason }) if code.is_fatal() => {
                log::error!(
                    "tunnel agent: relay {} refused service {:?}: {reason}",
                    settings.relay,
                    settings.service
                );
                return Err(AgentError::Rejected { code, reason });
            }
            Err(TunnelError::Tls(mismatch)) => {
                log::error!("tunnel agent: relay {}: {mismatch}", settings.relay);
                return Err(AgentError::TlsMismatch(mismatch));
            }
            Err(e @ TunnelError::UntrustedRelay(_)) => {
                log::error!("tunnel agent: relay {}: {e}", settings.relay);
                return Err(AgentError::UntrustedRelay(e));
            }
            Err(e) => log::warn!("tunnel agent: relay {}: {e}", settings.relay),
        }
        if began.elapsed() >= settings.backoff_reset {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        log::info!(
            "tunnel agent: reconnecting to {} in {delay:?}",
            settings.relay
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// One control session: connect, authenticate, run the pool until the relay goes away.
async fn session(
    settings: &Arc<AgentSettings>,
    stats: &Arc<AgentStats>,
    cancel: &CancellationToken,
) -> Result<(), TunnelError> {
    let (mut stream, mut reader, session) = tokio::select! {
        r = connect(settings, Role::Control, 0) => r?,
        _ = cancel.cancelled() => return Ok(()),
    };
    stats.connected.store(true, Ordering::Release);
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "tunnel agent: serving {:?} for relay {} (session {session}, pool {})",
        settings.service,
        settings.relay,
        settings.pool
    );
    let slots = cancel.child_token();
    for _ in 0..settings.pool {
        super::agent_pool::spawn_slot(settings, stats, session, &slots);
    }
    let result = control(settings, &mut stream, &mut reader, cancel).await;
    slots.cancel();
    result
}

/// Connects to the relay and completes the handshake; returns the session id.
pub(super) async fn connect(
    settings: &AgentSettings,
    role: Role,
    session: u64,
) -> Result<(AgentConn, FrameReader, u64), TunnelError> {
    let limit = settings.handshake_timeout;
    let tcp = tokio::time::timeout(limit, TcpStream::connect(&settings.relay))
        .await
        .map_err(|_| TunnelError::Timeout("connecting to the relay"))??;
    let _ = tcp.set_nodelay(true);
    if let Err(e) = super::tune_agent_socket(&tcp) {
        log::debug!("tunnel agent: keepalive not set: {e}");
    }
    let mut stream = match &settings.tls {
        None => Either::Left(tcp),
        Some(tls) => tokio::time::timeout(limit, tls.connect(tcp))
            .await
            .map_err(|_| TunnelError::Timeout("in the TLS handshake"))??,
    };
    // A plain agent reading a TLS record: the relay's alert.
    let plain = settings.tls.is_none();
    let mismatch = |e| match e {
        TunnelError::Frame(FrameError::TlsRecord(_)) if plain => {
            TlsMismatch::RelayRequiresTls.into()
        }
        e => e,
    };
    let mut reader = FrameReader::new();
    let hello = Frame::Hello {
        role,
        service: settings.service.clone(),
        session,
    };
    write_frame(&mut stream, &hello).await?;
    let nonce = match reader
        .next_within(&mut stream, limit, "waiting for the challenge")
        .await
        .map_err(mismatch)?
    {
        Frame::Challenge { nonce } => nonce,
        Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
        other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
    };
    let token = settings.token.expose().as_bytes();
    let mac = tunnel::proof(token, role, &settings.service, session, &nonce);
    write_frame(&mut stream, &Frame::Proof { mac }).await?;
    match reader
        .next_within(&mut stream, limit, "waiting for acceptance")
        .await
        .map_err(mismatch)?
    {
        Frame::Accepted { session } => Ok((stream, reader, session)),
        Frame::Error { code, reason } => Err(TunnelError::Refused { code, reason }),
        other => Err(TunnelError::Unexpected(format!("{other:?}"))),
    }
}

/// Answers and sends heartbeats on the control channel, logs announcements.
async fn control(
    settings: &AgentSettings,
    stream: &mut AgentConn,
    reader: &mut FrameReader,
    cancel: &CancellationToken,
) -> Result<(), TunnelError> {
    let mut tick = tokio::time::interval(settings.heartbeat_interval);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            frame = reader.next(stream) => {
                last_heard = Instant::now();
                match frame? {
                    Frame::Ping { seq } => write_frame(stream, &Frame::Pong { seq }).await?,
                    Frame::Pong { .. } => {}
                    Frame::ConnectionOpen { conn, client } => log::debug!("tunnel agent: client {client} opened (conn {conn})"),
                    Frame::ConnectionDrop { conn } => log::debug!("tunnel agent: conn {conn} dropped"),
                    Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
                    other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > settings.heartbeat_timeout {
                    return Err(TunnelError::Timeout("relay silent past the heartbeat timeout"));
                }
                seq += 1;
                write_frame(stream, &Frame::Ping { seq }).await?;
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
