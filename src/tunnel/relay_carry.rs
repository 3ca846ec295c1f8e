//! The relay's pooled data connections: the task that keeps one alive
//! while idle, then carries the client it is given (plain TCP with splice,
//! or TLS by copying).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::framing::{write_frame, FrameReader};
use super::pool::{Assignment, Idle};
use super::pump::{pump, pump_io, PumpEnd, PumpMode, Transferred};
use super::relay::{Service, TunnelState};
use super::tls::RelayConn;
use super::TunnelError;
use crate::protocol::tunnel::{self, Frame};
use tokio::io::AsyncWriteExt;

/// Most client bytes sent along with `Start` (what the client sent before it was paired).
const FIRST_READ: usize = 16 * 1024;

/// Owns one pooled data connection: keeps it alive while idle, then
/// carries the client it is given.
pub(super) async fn pooled(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut stream: RelayConn,
    mut reader: FrameReader,
    session: u64,
    cancel: CancellationToken,
) {
    let id = state.id();
    let (tx, mut rx) = oneshot::channel();
    service.pool.add(Idle { id, session, tx });
    state.pool_changed(&service);
    let assigned = idle(&state, &mut stream, &mut reader, &mut rx, &cancel).await;
    service.pool.remove(id);
    state.pool_changed(&service);
    let assignment = match assigned {
        Ok(a) => a,
        Err(why) => {
            log::debug!(
                "tunnel: {}: pooled connection {id} of session {session} dropped: {why}",
                service.name
            );
            // A client may have been handed over just as the connection died.
            if let Ok(a) = rx.try_recv() {
                tokio::spawn(super::relay::reassign(state.clone(), service.clone(), a));
            }
            return;
        }
    };
    match stream {
        Either::Left(tcp) => carry(state, service, tcp, reader, assignment, session).await,
        Either::Right(tls) => carry_tls(state, service, tls, reader, assignment, session).await,
    }
}

async fn idle(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    rx: &mut oneshot::Receiver<Assignment>,
    cancel: &CancellationToken,
) -> Result<Assignment, String> {
    let interval = Duration::from_millis(state.settings.heartbeat_interval_ms);
    let timeout = Duration::from_millis(state.settings.heartbeat_timeout_ms);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            assignment = &mut *rx => return assignment.map_err(|_| "pool entry dropped".to_string()),
            frame = reader.next(stream) => match frame {
                Ok(Frame::Pong { .. }) => last_heard = Instant::now(),
                Ok(other) => return Err(format!("unexpected frame {other:?}")),
                Err(e) => return Err(e.to_string()),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(format!("silent for {timeout:?} (heartbeat timeout): evicted"));
                }
                seq += 1;
                write_frame(stream, &Frame::Ping { seq }).await.map_err(|e| e.to_string())?;
            }
            _ = cancel.cancelled() => return Err("agent or relay gone".into()),
        }
    }
}

/// Starts the client on the pooled connection and pumps until both sides
/// end. Client bytes flow towards the agent at once; bytes from the agent
/// flow once it answered `Started` (its local service accepted).
async fn carry(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut stream: TcpStream,
    mut reader: FrameReader,
    a: Assignment,
    session: u64,
) {
    let conn = a.conn;
    let tag = format!("tunnel[{}#{conn}]", service.name);
    let (first, early) = start_frame(&a);
    if let Err(e) = stream.write_all(&first).await {
        if early > 0 {
            return log::debug!("{tag}: pooled connection dead at start ({e}); closing the client");
        }
        log::debug!("{tag}: pooled connection dead before start ({e}); trying another");
        return super::relay::reassign(state.clone(), service.clone(), a).await;
    }
    opened(&state, &service);
    let limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let started = std::sync::atomic::AtomicBool::new(false);
    let gate = async {
        await_started(&mut reader, &stream, limit, conn).await?;
        started.store(true, Ordering::Release);
        served(&state, &service, session, &tag, &a);
        Ok(std::mem::take(&mut reader).into_leftover())
    };
    let mode = PumpMode {
        max_buffer: state.settings.copy_buffer,
        splice: state.settings.splice,
    };
    let counts = Transferred::default();
    counts.a_to_b.fetch_add(early as u64, Ordering::Relaxed);
    let end = pump(
        &a.client,
        &stream,
        Vec::new(),
        gate,
        None,
        mode,
        &counts,
        &state.cancel,
    )
    .await;
    let started = started.load(Ordering::Acquire);
    let up = closed(&state, &service, session, &tag, (conn, &counts), started);
    drop(stream);
    // Nothing reached the agent's service yet: another pooled connection may serve it.
    let retry = !started && up == 0;
    settle(state, service, a, end, &tag, retry).await;
}

/// `Start` for the client of `a`, followed by whatever the client already
/// sent (so both ride in one segment); returns the bytes and that count.
fn start_frame(a: &Assignment) -> (Vec<u8>, usize) {
    let mut first = tunnel::encode(&Frame::Start {
        conn: a.conn,
        client: a.addr,
        server: a.server,
    });
    let start_len = first.len();
    first.resize(start_len + FIRST_READ, 0);
    // Nothing there yet (WouldBlock) or a failed client both mean: nothing early.
    let early = a
        .client
        .try_read(&mut first[start_len..])
        .unwrap_or_default();
    first.truncate(start_len + early);
    (first, early)
}

/// Reads the agent's answer to `Start` (skipping heartbeat answers) within `limit`.
async fn await_started(
    reader: &mut FrameReader,
    stream: &TcpStream,
    limit: Duration,
    conn: u64,
) -> Result<(), TunnelError> {
    let frame = tokio::time::timeout(limit, async {
        loop {
            match reader.next_shared(stream).await? {
                Frame::Pong { .. } => continue,
                other => return Ok::<Frame, TunnelError>(other),
            }
        }
    });
    let frame = frame
        .await
        .map_err(|_| TunnelError::Timeout("waiting for Started"))??;
    check_started(frame, conn)
}

/// After the pump: a client the agent refused is closed and counted; one
/// whose pooled connection failed before it started (`retry`) goes to
/// another pooled connection; anything else just ends.
async fn settle(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    a: Assignment,
    end: PumpEnd,
    tag: &str,
    retry: bool,
) {
    match &end {
        PumpEnd::GateFailed(TunnelError::Refused { code, reason }) => {
            log::warn!(
                "{tag}: agent could not serve client {} ({code:?}): {reason}; closing it",
                a.addr
            );
            state.reject(&service, "local_refused");
        }
        PumpEnd::GateFailed(_) | PumpEnd::Failed(_) if retry => {
            log::debug!("{tag}: pooled connection failed before start ({end:?}); trying another");
            super::relay::reassign(state.clone(), service.clone(), a).await;
        }
        _ => log::debug!("{tag}: ended ({end:?})"),
    }
}

/// `Ok` if `frame` is the agent's `Started` for `conn`.
fn check_started(frame: Frame, conn: u64) -> Result<(), TunnelError> {
    match frame {
        Frame::Started { conn: c } if c == conn => Ok(()),
        Frame::Error { code, reason } => Err(TunnelError::Refused { code, reason }),
        other => Err(TunnelError::Unexpected(format!("{other:?}"))),
    }
}

/// Counts a tunnelled connection as open.
fn opened(state: &TunnelState, service: &Service) {
    state.active.fetch_add(1, Ordering::AcqRel);
    service.active.fetch_add(1, Ordering::AcqRel);
    state
        .metrics
        .tunnel_active
        .get_or_create(&service.labels)
        .inc();
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

/// Counts a tunnelled connection as closed, adds its bytes, announces the
/// drop if it had started; returns the bytes read from the client.
fn closed(
    state: &TunnelState,
    service: &Service,
    session: u64,
    tag: &str,
    (conn, counts): (u64, &Transferred),
    started: bool,
) -> u64 {
    let up = counts.a_to_b.load(Ordering::Relaxed);
    let down = counts.b_to_a.load(Ordering::Relaxed);
    let m = &state.metrics;
    m.tunnel_bytes_to_agent
        .get_or_create(&service.labels)
        .inc_by(up);
    m.tunnel_bytes_to_client
        .get_or_create(&service.labels)
        .inc_by(down);
    m.tunnel_active.get_or_create(&service.labels).dec();
    service.active.fetch_sub(1, Ordering::AcqRel);
    state.active.fetch_sub(1, Ordering::AcqRel);
    if started {
        announce(state, session, tag, Frame::ConnectionDrop { conn });
    }
    log::debug!("{tag}: {up} bytes up, {down} down");
    up
}

/// Queues an announcement on the control channel of `session`.
fn announce(state: &TunnelState, session: u64, tag: &str, frame: Frame) {
    if let Some(agent) = state.agents().get(&session) {
        if agent.tx.try_send(frame).is_err() {
            log::debug!("{tag}: control queue of session {session} full; announcement dropped");
        }
    }
}

/// [`carry`] over TLS: waits for `Started`, then copies (no splice through TLS).
async fn carry_tls(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
    mut reader: FrameReader,
    a: Assignment,
    session: u64,
) {
    let conn = a.conn;
    let tag = format!("tunnel[{}#{conn}]", service.name);
    let limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let started = async {
        write_frame(
            &mut stream,
            &Frame::Start {
                conn,
                client: a.addr,
                server: a.server,
            },
        )
        .await?;
        loop {
            match reader
                .next_within(&mut stream, limit, "waiting for Started")
                .await?
            {
                Frame::Pong { .. } => continue,
                frame => return check_started(frame, conn),
            }
        }
    };
    match started.await {
        Ok(()) => {}
        Err(TunnelError::Refused { code, reason }) => {
            log::warn!(
                "{tag}: agent could not serve client {} ({code:?}): {reason}; closing it",
                a.addr
            );
            return state.reject(&service, "local_refused");
        }
        Err(e) => {
            log::debug!("{tag}: pooled connection failed before start ({e}); trying another");
            return super::relay::reassign(state.clone(), service.clone(), a).await;
        }
    }
    opened(&state, &service);
    served(&state, &service, session, &tag, &a);
    let counts = Transferred::default();
    let leftover = reader.into_leftover();
    let max = state.settings.copy_buffer;
    let end = pump_io(
        a.client,
        stream,
        Vec::new(),
        leftover,
        max,
        &counts,
        &state.cancel,
    )
    .await;
    closed(&state, &service, session, &tag, (conn, &counts), true);
    log::debug!("{tag}: ended ({end:?})");
}
