//! The relay's pooled data connections: the task that keeps one alive
//! while idle, hands it the client it is given, then carries that client
//! (splice over plain TCP, copying over TLS).
//!
//! The hand-off is one code path for plain TCP and TLS: the relay writes a
//! `Ping` and `Start` (with what the client already sent) in one write; a
//! live agent answers the `Ping` at once and `Started` once its service
//! accepted. Until `Started`, the client's bytes are forwarded and also
//! kept (up to [`defaults::TUNNEL_HANDOFF_BUFFER`]), so when the pooled
//! connection does not answer within `tunnel.handoff_timeout_ms`, fails, or
//! its agent is declared dead, the client is handed (bytes, FIN and all)
//! to another pooled connection. Each such failure is logged at warn and
//! counted. Once carried, a connection ends with its agent's session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::Instant as Deadline;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::clients::reassign;
use super::pool::{Assignment, Handed, Idle, Liveness};
use super::state::{Service, TunnelState};
use crate::admin::metrics::HandoffFailure;
use crate::defaults;
use crate::protocol::tunnel::{self, ErrorCode, Frame};
use crate::tunnel::error::TunnelError;
use crate::tunnel::framing::{write_frame, FrameReader};
use crate::tunnel::pump::{open, pump, pump_io, PumpEnd, PumpMode, Transferred};
use crate::tunnel::tls::RelayConn;

/// A pooled connection's identity: its pool entry and its agent's session.
pub(super) struct Entry {
    pub id: u64,
    pub session: u64,
    /// Cancelled when the agent's control session ends (or the relay stops).
    pub cancel: CancellationToken,
}

/// A pooled connection handed a client (or UDP session), ready to carry it.
pub(super) struct Taken {
    pub stream: RelayConn,
    pub reader: FrameReader,
    pub handed: Handed,
    pub entry: Entry,
}

/// Owns one pooled data connection while it is idle: keeps it alive until
/// it is handed a client (returned, to be carried) or dies (`None`).
pub(super) async fn pooled(
    state: &Arc<TunnelState>,
    service: &Arc<Service>,
    mut stream: RelayConn,
    mut reader: FrameReader,
    session: u64,
    cancel: CancellationToken,
) -> Option<Taken> {
    if cancel.is_cancelled() {
        // Its agent was declared dead during the handshake.
        return None;
    }
    let id = state.id();
    let (tx, mut rx) = oneshot::channel();
    let liveness = Arc::new(Liveness::default());
    let entry = Idle {
        id,
        session,
        tx,
        liveness: liveness.clone(),
    };
    service.pool.add(entry);
    state.pool_changed(service);
    let assigned = idle(state, &mut stream, &mut reader, &mut rx, &cancel, &liveness).await;
    service.pool.remove(id);
    state.pool_changed(service);
    let entry = Entry {
        id,
        session,
        cancel,
    };
    match assigned {
        Ok(handed) => Some(Taken {
            stream,
            reader,
            handed,
            entry,
        }),
        Err(why) => {
            log::debug!(
                "tunnel: {}: pooled connection {id} of session {session} dropped: {why}",
                service.name
            );
            // A client may have been handed over just as the connection died.
            if let Ok(a) = rx.try_recv() {
                tokio::spawn(reassign(state.clone(), service.clone(), a));
            }
            None
        }
    }
}

async fn idle(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    rx: &mut oneshot::Receiver<Handed>,
    cancel: &CancellationToken,
    liveness: &Liveness,
) -> Result<Handed, String> {
    let interval = Duration::from_millis(state.settings.heartbeat_interval_ms);
    let timeout = Duration::from_millis(state.settings.heartbeat_timeout_ms);
    let mut tick = tokio::time::interval_at(Deadline::now() + interval, interval);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            assignment = &mut *rx => return assignment.map_err(|_| "pool entry dropped".to_string()),
            frame = reader.next(stream) => match frame {
                Ok(Frame::Pong { .. }) => {
                    last_heard = Instant::now();
                    liveness.heard();
                }
                Ok(other) => return Err(format!("unexpected frame {other:?}")),
                Err(e) => return Err(e.to_string()),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(format!("silent for {timeout:?} (heartbeat timeout): evicted"));
                }
                seq += 1;
                write_frame(stream, &Frame::Ping { seq }).await.map_err(|e| e.to_string())?;
                liveness.pinged();
            }
            _ = cancel.cancelled() => return Err("agent or relay gone".into()),
        }
    }
}

/// Hands the client over, then pumps until both sides end, either fails,
/// or the agent's session ends. A failed hand-off goes back to the pool.
pub(super) async fn carry(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut stream: RelayConn,
    mut reader: FrameReader,
    mut a: Assignment,
    entry: Entry,
) {
    let tag = format!("tunnel[{}#{}]", service.name, a.conn);
    let carrying = Carrying::new(&state, &service);
    let handed = hand_off(&state, &mut stream, &mut reader, &mut a, &entry.cancel).await;
    if let Err(failure) = handed {
        drop(carrying);
        drop(stream);
        return handoff_failed(state, service, Handed::Tcp(a), &entry, &tag, failure).await;
    }
    served(&state, &service, entry.session, &tag, &a);
    let counts = Transferred::default();
    counts
        .a_to_b
        .fetch_add(a.early.len() as u64, Ordering::Relaxed);
    let leftover = reader.into_leftover();
    let client = a.addr;
    let end = match stream {
        Either::Left(tcp) => {
            let mode = PumpMode {
                max_buffer: state.settings.copy_buffer,
                splice: state.settings.splice,
            };
            let gate = open(leftover);
            pump(
                &a.client,
                &tcp,
                Vec::new(),
                gate,
                None,
                mode,
                &counts,
                &entry.cancel,
            )
            .await
        }
        Either::Right(tls) => {
            let max = state.settings.copy_buffer;
            pump_io(
                a.client,
                tls,
                Vec::new(),
                leftover,
                None,
                max,
                &counts,
                &entry.cancel,
            )
            .await
        }
    };
    closed(&state, &service, entry.session, &tag, (a.conn, &counts));
    match end {
        PumpEnd::Cancelled if service.cancel.is_cancelled() && !state.cancel.is_cancelled() => {
            log::info!("{tag}: closing client {client}: its service was stopped by a reload")
        }
        PumpEnd::Cancelled if !state.cancel.is_cancelled() => log::info!(
            "{tag}: closing client {client}: its agent (session {}) is gone",
            entry.session
        ),
        end => log::debug!("{tag}: ended ({end:?})"),
    }
    drop(carrying);
}

/// Why a hand-off failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandOffError {
    /// The pooled connection did not answer the heartbeat sent with `Start`.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// It answered, but no `Started` came in time.
    #[error("no Started within {0:?}")]
    NotStarted(Duration),
    /// The agent's control session ended meanwhile.
    #[error("its agent's session ended")]
    AgentGone,
    /// The agent could not reach its local service (final for this client).
    #[error("the agent refused ({code:?}): {reason}")]
    Refused { code: ErrorCode, reason: String },
    /// The client itself went away (final).
    #[error("the client is gone: {0}")]
    ClientGone(std::io::Error),
    /// The pooled connection closed, failed or sent something unexpected.
    #[error("{0}")]
    Broken(TunnelError),
}

/// Sends `Ping` + `Start` + the client's kept bytes (and FIN), forwards
/// (and keeps) what the client sends meanwhile, and waits for `Started`.
async fn hand_off(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    a: &mut Assignment,
    cancel: &CancellationToken,
) -> Result<(), HandOffError> {
    let start_limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let answer_limit = Duration::from_millis(state.settings.handoff_timeout_ms).min(start_limit);
    let start_by = Deadline::now() + start_limit;
    let answer_by = Deadline::now() + answer_limit;
    read_early(a).map_err(HandOffError::ClientGone)?;
    let mut first = tunnel::encode(&Frame::Ping { seq: a.conn });
    first.extend_from_slice(&tunnel::encode(&Frame::Start {
        conn: a.conn,
        client: a.addr,
        server: a.server,
    }));
    first.extend_from_slice(&a.early);
    send(stream, &first, a.early_eof, start_by).await?;
    let mut answered = false;
    loop {
        let reading = !a.early_eof && a.early.len() < defaults::TUNNEL_HANDOFF_BUFFER;
        tokio::select! {
            frame = reader.next(stream) => match frame.map_err(HandOffError::Broken)? {
                Frame::Pong { .. } => answered = true,
                Frame::Started { conn } if conn == a.conn => return Ok(()),
                Frame::Error { code, reason } => return Err(HandOffError::Refused { code, reason }),
                other => {
                    return Err(HandOffError::Broken(TunnelError::Unexpected(format!("{other:?}"))))
                }
            },
            ready = a.client.readable(), if reading => {
                ready.map_err(HandOffError::ClientGone)?;
                let before = a.early.len();
                read_early(a).map_err(HandOffError::ClientGone)?;
                if a.early.len() > before || a.early_eof {
                    let fresh = a.early[before..].to_vec();
                    send(stream, &fresh, a.early_eof, start_by).await?;
                }
            }
            _ = tokio::time::sleep_until(answer_by), if !answered => {
                return Err(HandOffError::NoAnswer(answer_limit))
            }
            _ = tokio::time::sleep_until(start_by) => return Err(HandOffError::NotStarted(start_limit)),
            _ = cancel.cancelled() => return Err(HandOffError::AgentGone),
        }
    }
}

/// Reads what the client has sent, without waiting, onto `a.early` (up to
/// the hand-off buffer); notes its FIN. Nothing there yet is not an error.
fn read_early(a: &mut Assignment) -> std::io::Result<()> {
    let mut chunk = [0u8; 2048];
    while !a.early_eof && a.early.len() < defaults::TUNNEL_HANDOFF_BUFFER {
        let room = (defaults::TUNNEL_HANDOFF_BUFFER - a.early.len()).min(chunk.len());
        match a.client.try_read(&mut chunk[..room]) {
            Ok(0) => a.early_eof = true,
            Ok(n) => a.early.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `bytes` (and a FIN after them when `eof`) to the pooled connection by `deadline`.
async fn send(
    stream: &mut RelayConn,
    bytes: &[u8],
    eof: bool,
    deadline: Deadline,
) -> Result<(), HandOffError> {
    let write = async {
        stream.write_all(bytes).await?;
        if eof {
            stream.shutdown().await
        } else {
            stream.flush().await
        }
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandOffError::Broken(e.into())),
        Err(_) => Err(HandOffError::Broken(TunnelError::Timeout("writing Start"))),
    }
}

/// After a failed hand-off: a refusal or a vanished client ends the
/// client; anything else is logged at warn, counted, and the client goes
/// to another pooled connection (a silent one's siblings leave the pool).
pub(super) async fn handoff_failed(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut a: Handed,
    entry: &Entry,
    tag: &str,
    failure: HandOffError,
) {
    let reason = match &failure {
        HandOffError::Refused { .. } => {
            log::warn!(
                "{tag}: agent could not serve client {}: {failure}; closing it",
                a.addr()
            );
            return state.reject(&service, "local_refused");
        }
        HandOffError::ClientGone(_) => return log::debug!("{tag}: {failure} before it was served"),
        _ if service.cancel.is_cancelled() => return,
        HandOffError::NoAnswer(_) => HandoffFailure::NoAnswer,
        HandOffError::NotStarted(_) => HandoffFailure::NotStarted,
        HandOffError::AgentGone => HandoffFailure::AgentGone,
        HandOffError::Broken(_) => HandoffFailure::Broken,
    };
    state.handoff_failed(&service, reason);
    *a.attempts() += 1;
    let attempts = *a.attempts();
    let (id, session) = (entry.id, entry.session);
    log::warn!(
        "{tag}: hand-off of client {} to pooled connection {id} (agent session {session}) failed \
         ({failure}); attempt {attempts} of {}",
        a.addr(),
        defaults::TUNNEL_HANDOFF_ATTEMPTS
    );
    if reason == HandoffFailure::NoAnswer {
        // A silent agent's other pooled connections are as silent: drop them
        // (a live agent refills its pool at once).
        let evicted = service.pool.remove_session(session);
        state.pool_changed(&service);
        if evicted > 0 {
            log::warn!(
                "{tag}: dropped {evicted} idle pooled connections of silent session {session}"
            );
        }
    }
    if attempts >= defaults::TUNNEL_HANDOFF_ATTEMPTS {
        log::warn!("{tag}: closing client {}: every hand-off failed", a.addr());
        return state.reject(&service, "handoff_failed");
    }
    reassign(state, service, a).await;
}

/// Counts a client as carried (`tunnel.max_clients`, `/tunnels` active and
/// the active gauge) for as long as it lives: every path releases it.
pub(super) struct Carrying<'a> {
    state: &'a TunnelState,
    service: &'a Service,
}

impl<'a> Carrying<'a> {
    pub fn new(state: &'a TunnelState, service: &'a Service) -> Self {
        state.active.fetch_add(1, Ordering::AcqRel);
        service.active.fetch_add(1, Ordering::AcqRel);
        let gauge = state.metrics.tunnel_active.get_or_create(&service.labels);
        gauge.inc();
        Carrying { state, service }
    }
}

impl Drop for Carrying<'_> {
    fn drop(&mut self) {
        let (state, service) = (self.state, self.service);
        let gauge = state.metrics.tunnel_active.get_or_create(&service.labels);
        gauge.dec();
        service.active.fetch_sub(1, Ordering::AcqRel);
        state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a client as served (its agent answered `Started`) and announces it.
fn served(state: &TunnelState, service: &Service, session: u64, tag: &str, a: &Assignment) {
    let open = Frame::ConnectionOpen {
        conn: a.conn,
        client: a.addr,
    };
    // Announced once the client is through, off its setup path.
    announce(state, session, tag, open);
    state
        .metrics
        .tunnel_clients_served
        .get_or_create(&service.labels)
        .inc();
    log::debug!(
        "{tag}: client {} started after {:?}",
        a.addr,
        a.accepted.elapsed()
    );
}

/// Adds a finished connection's bytes and announces its drop.
fn closed(
    state: &TunnelState,
    service: &Service,
    session: u64,
    tag: &str,
    (conn, counts): (u64, &Transferred),
) {
    let up = counts.a_to_b.load(Ordering::Relaxed);
    let down = counts.b_to_a.load(Ordering::Relaxed);
    let m = &state.metrics;
    m.tunnel_bytes_to_agent
        .get_or_create(&service.labels)
        .inc_by(up);
    m.tunnel_bytes_to_client
        .get_or_create(&service.labels)
        .inc_by(down);
    announce(state, session, tag, Frame::ConnectionDrop { conn });
    log::debug!("{tag}: {up} bytes up, {down} down");
}

/// Queues an announcement on the control channel of `session`.
pub(super) fn announce(state: &TunnelState, session: u64, tag: &str, frame: Frame) {
    if let Some(agent) = state.agents().get(&session) {
        if agent.tx.try_send(frame).is_err() {
            log::debug!("{tag}: control queue of session {session} full; announcement dropped");
        }
    }
}
