//! The host agent (`switchboard host`): serves a local TCP (or UDP) service through the relay.
//!
//! [`spawn`] (or [`run`]) takes [`AgentSettings`] (the relay's agents
//! address, the service and its token, what to serve locally, the pool
//! size, timers, optional TLS) and runs on the caller's tokio runtime until
//! stopped (the `CancellationToken` given to [`run`]; [`spawn`] keeps it
//! in the [`AgentHandle`] it returns), or until the relay refuses it for
//! good ([`AgentError`]). It is handed nothing else; what it does is
//! readable in [`AgentStats`] while it runs.
//!
//! It keeps one control channel and [`AgentSettings::pool`] pooled data
//! connections to the relay. Each pooled connection waits for `Start`,
//! dials the local service (or echoes, with [`LocalService::Echo`]), answers
//! `Started` and pumps bytes; its slot opens a fresh pooled connection at
//! once. When the relay goes away the agent reconnects with capped,
//! jittered exponential [`Backoff`] that resets after a stable session. A wrong
//! token or a transport the relay's service does not have ends [`run`] with
//! [`AgentError::Rejected`]. An unknown service does not: the relay's
//! services can be reloaded (removed, then added back), so the agent keeps
//! retrying with the same backoff, warning at the first refusal and then
//! at most every [`UNKNOWN_SERVICE_WARN_EVERY`].
//!
//! - this file: the agent's life (sessions, reconnects) and its control channel.
//! - `pool`: the slots that keep one pooled data connection each, and the
//!   service of a client once the relay starts a pooled connection.
//! - `connect`: one connection's handshake with the relay, and the backoff.
//! - `udp`: a UDP session ([`LocalService::Udp`]): a socket connected to
//!   the local service, datagram records to and from the relay.
//! - `settings`: [`AgentSettings`], [`LocalService`], [`AgentStats`].
//! - [`host_config`]: the agent's settings file, merged with command-line flags.
//! - [`services`]: its `[[services]]` tables, one agent per service and relay
//!   (`switchboard host` runs them all in one process).
//! - [`metrics`]: the table of those agents' [`AgentStats`], served as
//!   `/metrics` and `/health` on the optional `metrics_listen` listener.
//!
//! Imports run one way: this file → `pool` → `udp`, `connect` → `settings`.

mod connect;
pub mod host_config;
pub mod metrics;
mod pool;
pub mod services;
mod settings;
mod udp;

pub use connect::Backoff;
pub use settings::{AgentSettings, AgentStats, LocalService};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::protocol::tunnel::{self, ErrorCode, Frame, Role};
use crate::tunnel::error::{TlsMismatch, TunnelError};
use crate::tunnel::framing::{write_frame, FrameReader};
use crate::tunnel::tls::AgentConn;
use connect::connect;

/// While the relay keeps answering "unknown service", how often that is
/// logged as a warning again (the refusals in between are logged at debug).
pub const UNKNOWN_SERVICE_WARN_EVERY: Duration = Duration::from_secs(30);

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

/// Runs the agent until `cancel` fires (`Ok`) or the relay refuses it for good.
pub async fn run(
    settings: AgentSettings,
    stats: Arc<AgentStats>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    if settings.pool == 0 {
        return Err(AgentError::Settings("pool must be at least 1".into()));
    }
    if settings.proxy_protocol && matches!(settings.local, LocalService::Udp(_)) {
        return Err(AgentError::Settings(
            "proxy_protocol is for TCP services only, not a UDP one".into(),
        ));
    }
    if !tunnel::valid_service_name(&settings.service) {
        return Err(AgentError::Settings(format!(
            "invalid service name {:?}",
            settings.service
        )));
    }
    let settings = Arc::new(settings);
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    let mut unknown = UnknownService::default();
    loop {
        let began = Instant::now();
        let sessions = stats.sessions.load(Ordering::Relaxed);
        let result = session(&settings, &stats, &cancel).await;
        stats.connected.store(false, Ordering::Release);
        if stats.sessions.load(Ordering::Relaxed) != sessions {
            // Accepted: a later "unknown service" is news again.
            unknown = UnknownService::default();
        }
        match result {
            Ok(()) => return Ok(()),
            Err(TunnelError::Refused {
                code: ErrorCode::UnknownService,
                reason,
            }) => unknown.refused(&settings, &reason),
            Err(TunnelError::Refused { code, reason }) if code.is_fatal() => {
                log::error!(
                    "tunnel agent: relay {} refused service {:?}: {reason}",
                    settings.relay,
                    settings.service
                );
                return Err(AgentError::Rejected { code, reason });
            }
            Err(TunnelError::Tls(mismatch)) => {
                log::error!(
                    "tunnel agent {:?}: relay {}: {mismatch}",
                    settings.service,
                    settings.relay
                );
                return Err(AgentError::TlsMismatch(mismatch));
            }
            Err(e @ TunnelError::UntrustedRelay(_)) => {
                log::error!(
                    "tunnel agent {:?}: relay {}: {e}",
                    settings.service,
                    settings.relay
                );
                return Err(AgentError::UntrustedRelay(e));
            }
            Err(e) => log::warn!(
                "tunnel agent {:?}: relay {}: {e}",
                settings.service,
                settings.relay
            ),
        }
        if began.elapsed() >= settings.backoff_reset {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        log::info!(
            "tunnel agent {:?}: reconnecting to {} in {delay:?}",
            settings.service,
            settings.relay
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// The warnings of a run of "unknown service" refusals: the first one,
/// then at most one per [`UNKNOWN_SERVICE_WARN_EVERY`].
#[derive(Default)]
struct UnknownService {
    /// When the last warning was logged (`None`: none yet in this run).
    warned: Option<Instant>,
    /// Refusals since that warning.
    since: u64,
}

impl UnknownService {
    fn refused(&mut self, settings: &AgentSettings, reason: &str) {
        let due = self
            .warned
            .is_none_or(|at| at.elapsed() >= UNKNOWN_SERVICE_WARN_EVERY);
        if !due {
            self.since += 1;
            log::debug!(
                "tunnel agent {:?}: relay {}: {reason} (retrying)",
                settings.service,
                settings.relay
            );
            return;
        }
        let again = match (self.warned, self.since) {
            (None, _) => String::new(),
            (Some(at), n) => format!(" ({n} more refusal(s) in the last {:.0?})", at.elapsed()),
        };
        log::warn!(
            "tunnel agent {:?}: relay {} does not know the service: {reason}{again}; \
             retrying (its services may be reloaded)",
            settings.service,
            settings.relay
        );
        self.warned = Some(Instant::now());
        self.since = 0;
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
        pool::spawn_slot(settings, stats, session, &slots, None);
    }
    let result = control(settings, &mut stream, &mut reader, cancel).await;
    slots.cancel();
    result
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
