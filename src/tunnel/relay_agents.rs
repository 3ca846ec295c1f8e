//! Agent connections on the relay: the handshake, the control channel, and
//! the task that owns each pooled data connection (idle, then carrying one client).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::framing::{refuse, write_frame, FrameReader};
use super::pool::{Assignment, Idle};
use super::pump::{pump, pump_io, PumpEnd, PumpMode, Transferred};
use super::relay::{AgentEntry, Service, TunnelState};
use super::tls::RelayConn;
use super::TunnelError;
use crate::defaults;
use crate::protocol::tunnel::{self, ErrorCode, Frame, Role, NONCE_BYTES};
use tokio_util::either::Either;

/// Accepts agent connections until shutdown.
pub(super) async fn accept_loop(state: Arc<TunnelState>, listener: tokio::net::TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(state.clone(), stream, addr));
            }
            Err(e) => {
                log::warn!("tunnel: agents listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a completed handshake established.
enum Accepted {
    Control {
        service: Arc<Service>,
        session: u64,
        rx: mpsc::Receiver<Frame>,
        cancel: CancellationToken,
    },
    Data {
        service: Arc<Service>,
        session: u64,
        cancel: CancellationToken,
    },
}

async fn handle(state: Arc<TunnelState>, tcp: TcpStream, addr: SocketAddr) {
    let limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let deadline = tokio::time::Instant::now() + limit;
    let mut stream: RelayConn = match &state.tls {
        None => Either::Left(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Either::Right(tls),
            Ok(Err(e)) => return log::warn!("tunnel: agent {addr}: TLS handshake failed: {e}"),
            Err(_) => return log::warn!("tunnel: agent {addr}: no TLS handshake within {limit:?}"),
        },
    };
    let mut reader = FrameReader::new();
    let outcome =
        tokio::time::timeout_at(deadline, handshake(&state, &mut stream, &mut reader, addr)).await;
    match outcome {
        Err(_) => {
            log::warn!("tunnel: agent {addr}: no handshake within {limit:?}; closing");
            let reason = "handshake timed out".to_string();
            refuse(
                &mut stream,
                &Frame::Error {
                    code: ErrorCode::Protocol,
                    reason,
                },
            )
            .await;
        }
        Ok(Err(e)) => log::warn!("tunnel: agent {addr}: handshake failed: {e}"),
        Ok(Ok(Accepted::Control {
            service,
            session,
            rx,
            cancel,
        })) => control(&state, &service, stream, reader, addr, session, rx, cancel).await,
        Ok(Ok(Accepted::Data {
            service,
            session,
            cancel,
        })) => pooled(state, service, stream, reader, session, cancel).await,
    }
}

async fn handshake(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    addr: SocketAddr,
) -> Result<Accepted, TunnelError> {
    let refused = |code: ErrorCode, reason: String| Frame::Error { code, reason };
    let hello = match reader.next(stream).await {
        Ok(frame) => frame,
        Err(TunnelError::Frame(e)) => {
            refuse(
                stream,
                &refused(ErrorCode::Protocol, format!("bad frame: {e}")),
            )
            .await;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    let Frame::Hello {
        role,
        service: name,
        session,
    } = hello
    else {
        let reason = "expected a hello".to_string();
        refuse(stream, &refused(ErrorCode::Protocol, reason.clone())).await;
        return Err(TunnelError::Unexpected(reason));
    };
    let Some(service) = state.services.get(&name).cloned() else {
        state.metrics.tunnel_auth_failures.inc();
        let reason = format!("unknown service {name:?}");
        refuse(stream, &refused(ErrorCode::UnknownService, reason.clone())).await;
        return Err(TunnelError::Refused {
            code: ErrorCode::UnknownService,
            reason,
        });
    };
    let agent_cancel = match role {
        Role::Control => None,
        Role::Data => match owner_cancel(state, session, &name) {
            Some(cancel) => Some(cancel),
            None => {
                state.metrics.tunnel_auth_failures.inc();
                let reason = format!("no control session {session} for service {name:?}");
                refuse(stream, &refused(ErrorCode::UnknownSession, reason.clone())).await;
                return Err(TunnelError::Refused {
                    code: ErrorCode::UnknownSession,
                    reason,
                });
            }
        },
    };
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    write_frame(stream, &Frame::Challenge { nonce }).await?;
    let mac = match reader.next(stream).await? {
        Frame::Proof { mac } => mac,
        other => {
            let reason = format!("expected a proof, got {other:?}");
            refuse(stream, &refused(ErrorCode::Protocol, reason.clone())).await;
            return Err(TunnelError::Unexpected(reason));
        }
    };
    let token = service.token.expose().as_bytes();
    if !tunnel::verify(token, role, &name, session, &nonce, &mac) {
        state.metrics.tunnel_auth_failures.inc();
        log::warn!("tunnel: agent {addr}: authentication failed for service {name:?}");
        let reason = format!("authentication failed for service {name:?}: wrong token");
        refuse(stream, &refused(ErrorCode::AuthFailed, reason.clone())).await;
        return Err(TunnelError::Refused {
            code: ErrorCode::AuthFailed,
            reason,
        });
    }
    match agent_cancel {
        None => {
            let session = state.id();
            let (tx, rx) = mpsc::channel(defaults::TUNNEL_CONTROL_QUEUE);
            let cancel = state.cancel.child_token();
            let entry = AgentEntry {
                service: name.clone(),
                addr,
                since: Instant::now(),
                tx,
                cancel: cancel.clone(),
            };
            state.agents().insert(session, entry);
            state.metrics.tunnel_agents.set(state.agents().len() as i64);
            write_frame(stream, &Frame::Accepted { session }).await?;
            log::info!("tunnel: agent {addr} connected for service {name:?} (session {session})");
            Ok(Accepted::Control {
                service,
                session,
                rx,
                cancel,
            })
        }
        Some(cancel) => {
            if service.pool.idle() >= state.settings.max_pool {
                let reason = format!("service {name:?} has tunnel.max_pool idle connections");
                refuse(stream, &refused(ErrorCode::Busy, reason.clone())).await;
                return Err(TunnelError::Refused {
                    code: ErrorCode::Busy,
                    reason,
                });
            }
            write_frame(stream, &Frame::Accepted { session }).await?;
            Ok(Accepted::Data {
                service,
                session,
                cancel,
            })
        }
    }
}

/// The cancel token of control session `session` if it serves `service`.
fn owner_cancel(state: &TunnelState, session: u64, service: &str) -> Option<CancellationToken> {
    let agents = state.agents();
    let agent = agents.get(&session)?;
    (agent.service == service).then(|| agent.cancel.clone())
}

/// Runs an agent's control channel until it closes, goes silent or the relay stops.
#[allow(clippy::too_many_arguments)]
async fn control(
    state: &TunnelState,
    service: &Service,
    mut stream: RelayConn,
    mut reader: FrameReader,
    addr: SocketAddr,
    session: u64,
    mut rx: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(state.settings.heartbeat_interval_ms);
    let timeout = Duration::from_millis(state.settings.heartbeat_timeout_ms);
    let mut tick = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    let why = loop {
        let sent = tokio::select! {
            frame = reader.next(&mut stream) => match frame {
                Ok(Frame::Pong { .. }) => {
                    last_heard = Instant::now();
                    Ok(())
                }
                Ok(Frame::Ping { seq }) => {
                    last_heard = Instant::now();
                    write_frame(&mut stream, &Frame::Pong { seq }).await
                }
                Ok(other) => break format!("unexpected frame {other:?}"),
                Err(e) => break e.to_string(),
            },
            Some(frame) = rx.recv() => write_frame(&mut stream, &frame).await,
            _ = tick.tick() => {
                if last_heard.elapsed() > timeout {
                    break format!("silent for {timeout:?} (heartbeat timeout)");
                }
                seq += 1;
                write_frame(&mut stream, &Frame::Ping { seq }).await
            }
            _ = cancel.cancelled() => {
                let reason = "relay is shutting down".to_string();
                refuse(&mut stream, &Frame::Error { code: ErrorCode::ShuttingDown, reason }).await;
                break "relay shutting down".into();
            }
        };
        if let Err(e) = sent {
            break e.to_string();
        }
    };
    cancel.cancel();
    state.agents().remove(&session);
    state.metrics.tunnel_agents.set(state.agents().len() as i64);
    service.pool.remove_session(session);
    state.pool_changed(service);
    log::info!(
        "tunnel: agent {addr} (session {session}, service {:?}) disconnected: {why}",
        service.name
    );
}

/// Owns one pooled data connection: keeps it alive while idle, then
/// carries the client it is given.
async fn pooled(
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
    if let Err(e) = write_frame(
        &mut stream,
        &Frame::Start {
            conn,
            client: a.addr,
        },
    )
    .await
    {
        log::debug!("{tag}: pooled connection dead before start ({e}); trying another");
        return super::relay::reassign(state.clone(), service.clone(), a).await;
    }
    announce(
        &state,
        session,
        &tag,
        Frame::ConnectionOpen {
            conn,
            client: a.addr,
        },
    );
    state.active.fetch_add(1, Ordering::AcqRel);
    service.active.fetch_add(1, Ordering::AcqRel);
    state
        .metrics
        .tunnel_active
        .get_or_create(&service.labels)
        .inc();
    let limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let started = std::sync::atomic::AtomicBool::new(false);
    let gate = async {
        let frame = tokio::time::timeout(limit, async {
            loop {
                match reader.next_shared(&stream).await? {
                    Frame::Pong { .. } => continue,
                    other => return Ok::<Frame, TunnelError>(other),
                }
            }
        });
        match frame
            .await
            .map_err(|_| TunnelError::Timeout("waiting for Started"))??
        {
            Frame::Started { conn: c } if c == conn => {
                started.store(true, Ordering::Release);
                // Announced once the client is through, off its setup path.
                announce(
                    &state,
                    session,
                    &tag,
                    Frame::ConnectionOpen {
                        conn,
                        client: a.addr,
                    },
                );
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
                Ok(std::mem::take(&mut reader).into_leftover())
            }
            Frame::Error { code, reason } => Err(TunnelError::Refused { code, reason }),
            other => Err(TunnelError::Unexpected(format!("{other:?}"))),
        }
    };
    let mode = PumpMode {
        max_buffer: state.settings.copy_buffer,
        splice: state.settings.splice,
    };
    let counts = Transferred::default();
    let end = pump(
        &a.client,
        &stream,
        Vec::new(),
        gate,
        mode,
        &counts,
        &state.cancel,
    )
    .await;
    let (up, down) = (
        counts.a_to_b.load(Ordering::Relaxed),
        counts.b_to_a.load(Ordering::Relaxed),
    );
    state
        .metrics
        .tunnel_bytes_to_agent
        .get_or_create(&service.labels)
        .inc_by(up);
    state
        .metrics
        .tunnel_bytes_to_client
        .get_or_create(&service.labels)
        .inc_by(down);
    state
        .metrics
        .tunnel_active
        .get_or_create(&service.labels)
        .dec();
    service.active.fetch_sub(1, Ordering::AcqRel);
    state.active.fetch_sub(1, Ordering::AcqRel);
    let started = started.load(Ordering::Acquire);
    if started {
        announce(&state, session, &tag, Frame::ConnectionDrop { conn });
    }
    match end {
        PumpEnd::GateFailed(TunnelError::Refused { code, reason }) => {
            log::warn!(
                "{tag}: agent could not serve client {} ({code:?}): {reason}; closing it",
                a.addr
            );
            state.reject(&service, "local_refused");
        }
        PumpEnd::GateFailed(e) if up == 0 => {
            log::debug!("{tag}: pooled connection failed before start ({e}); trying another");
            drop(stream);
            super::relay::reassign(state.clone(), service.clone(), a).await;
        }
        PumpEnd::Failed(e) if !started && up == 0 => {
            log::debug!("{tag}: pooled connection failed before start ({e}); trying another");
            drop(stream);
            super::relay::reassign(state.clone(), service.clone(), a).await;
        }
        end => log::debug!("{tag}: ended ({end:?}); {up} bytes up, {down} down"),
    }
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
            },
        )
        .await?;
        tokio::io::AsyncWriteExt::flush(&mut stream).await?;
        loop {
            match reader
                .next_within(&mut stream, limit, "waiting for Started")
                .await?
            {
                Frame::Pong { .. } => continue,
                Frame::Started { conn: c } if c == conn => return Ok(()),
                Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
                other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
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
    state
        .metrics
        .tunnel_clients_served
        .get_or_create(&service.labels)
        .inc();
    announce(
        &state,
        session,
        &tag,
        Frame::ConnectionOpen {
            conn,
            client: a.addr,
        },
    );
    state.active.fetch_add(1, Ordering::AcqRel);
    service.active.fetch_add(1, Ordering::AcqRel);
    state
        .metrics
        .tunnel_active
        .get_or_create(&service.labels)
        .inc();
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
    let (up, down) = (
        counts.a_to_b.load(Ordering::Relaxed),
        counts.b_to_a.load(Ordering::Relaxed),
    );
    state
        .metrics
        .tunnel_bytes_to_agent
        .get_or_create(&service.labels)
        .inc_by(up);
    state
        .metrics
        .tunnel_bytes_to_client
        .get_or_create(&service.labels)
        .inc_by(down);
    state
        .metrics
        .tunnel_active
        .get_or_create(&service.labels)
        .dec();
    service.active.fetch_sub(1, Ordering::AcqRel);
    state.active.fetch_sub(1, Ordering::AcqRel);
    announce(&state, session, &tag, Frame::ConnectionDrop { conn });
    log::debug!("{tag}: ended ({end:?}); {up} bytes up, {down} down");
}
