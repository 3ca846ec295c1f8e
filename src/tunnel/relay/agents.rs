//! Agent connections on the relay: the (optional TLS and) handshake and the
//! control channel; pooled data connections continue in `carry.rs` (and
//! in `udp.rs` once handed a UDP session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tokio_util::either::Either;

use super::pool::Handed;
use super::state::{AgentEntry, Service, TunnelState};
use super::{carry, udp};
use crate::defaults;
use crate::protocol::tunnel::{self, ErrorCode, Frame, FrameError, Role, Transport, NONCE_BYTES};
use crate::tunnel::error::{TlsMismatch, TunnelError};
use crate::tunnel::framing::{refuse, write_frame, FrameReader};
use crate::tunnel::net::tune_agent_socket;
use crate::tunnel::tls::RelayConn;

/// Accepts agent connections until shutdown.
pub(super) async fn accept_loop(state: Arc<TunnelState>, listener: tokio::net::TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let addr = crate::addr::canonical(addr);
                let _ = stream.set_nodelay(true);
                if let Err(e) = tune_agent_socket(&stream) {
                    log::debug!("tunnel: agent {addr}: keepalive not set: {e}");
                }
                // Boxed: the future is large (a TLS stream inline) and
                // spawning moves it by value several times.
                tokio::spawn(Box::pin(handle(state.clone(), stream, addr)));
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
    /// An authenticated control channel, not registered yet.
    Control { service: Arc<Service> },
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
        Some(acceptor) => {
            let plain = sends_plain_hello(&tcp, deadline).await;
            match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Either::Right(tls),
                // rustls has answered with an alert, which the agent recognises.
                Ok(Err(_)) if plain => {
                    return log::warn!("tunnel: agent {addr}: {}", TlsMismatch::AgentWithoutTls)
                }
                Ok(Err(e)) => return log::warn!("tunnel: agent {addr}: TLS handshake failed: {e}"),
                Err(_) => {
                    return log::warn!("tunnel: agent {addr}: no TLS handshake within {limit:?}")
                }
            }
        }
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
        Ok(Ok(Accepted::Control { service })) => {
            let Some((session, rx, cancel)) =
                admit_control(&state, &mut stream, addr, &service).await
            else {
                return;
            };
            control(&state, &service, stream, reader, addr, session, rx, cancel).await
        }
        Ok(Ok(Accepted::Data {
            service,
            session,
            cancel,
        })) => {
            let Some(taken) =
                carry::pooled(&state, &service, stream, reader, session, cancel).await
            else {
                return;
            };
            let carry::Taken {
                stream,
                reader,
                handed,
                entry,
            } = taken;
            match handed {
                Handed::Tcp(a) => carry::carry(state, service, stream, reader, a, entry).await,
                Handed::Udp(u) => udp::carry(state, service, stream, reader, u, entry).await,
            }
        }
    }
}

async fn handshake(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    addr: SocketAddr,
) -> Result<Accepted, TunnelError> {
    let hello = match reader.next(stream).await {
        Ok(frame) => frame,
        Err(TunnelError::Frame(FrameError::TlsRecord(_))) => {
            let mismatch = TlsMismatch::AgentSpeaksTls;
            deny(stream, ErrorCode::Protocol, mismatch.to_string()).await;
            return Err(mismatch.into());
        }
        Err(TunnelError::Frame(e)) => {
            return Err(deny(stream, ErrorCode::Protocol, format!("bad frame: {e}")).await)
        }
        Err(e) => return Err(e),
    };
    let Frame::Hello {
        role,
        service: name,
        session,
        transport,
    } = hello
    else {
        return Err(deny(stream, ErrorCode::Protocol, "expected a hello".into()).await);
    };
    let Some(service) = state.service(&name) else {
        state.metrics.tunnel_auth_failures.inc();
        let reason = format!("unknown service {name:?}");
        return Err(deny(stream, ErrorCode::UnknownService, reason).await);
    };
    let owner = match role {
        Role::Control => None,
        Role::Data => match owner_cancel(state, session, &name) {
            Some(cancel) => Some(cancel),
            None => {
                state.metrics.tunnel_auth_failures.inc();
                let reason = format!("no control session {session} for service {name:?}");
                return Err(deny(stream, ErrorCode::UnknownSession, reason).await);
            }
        },
    };
    challenge(state, stream, reader, addr, &service, role, session).await?;
    if transport != service.transport {
        let reason = wrong_transport(&name, service.transport);
        log::warn!("tunnel: agent {addr}: {reason}");
        return Err(deny(stream, ErrorCode::WrongTransport, reason).await);
    }
    match owner {
        None => Ok(Accepted::Control { service }),
        Some(cancel) => {
            if service.pool.idle() >= state.settings.max_pool {
                let reason = format!("service {name:?} has tunnel.max_pool idle connections");
                return Err(deny(stream, ErrorCode::Busy, reason).await);
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

/// Why an agent serving the other transport than `service`'s is refused.
fn wrong_transport(name: &str, service: Transport) -> String {
    match service {
        Transport::Udp => format!(
            "service {name:?} is a UDP service on the relay but this agent serves TCP: \
             start the agent with --local-udp HOST:PORT (file key local_udp)"
        ),
        Transport::Tcp => format!(
            "service {name:?} is a TCP service on the relay but this agent serves UDP \
             (--local-udp): start the agent with --local HOST:PORT, or give the service \
             type = \"udp\" in the relay's [[tunnel.services]]"
        ),
    }
}

/// Whether the first bytes an agent sends (peeked, so the TLS acceptor still
/// reads them, waiting at most until `deadline`) are a plain tunnel `Hello`.
async fn sends_plain_hello(tcp: &TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut first = [0u8; 8];
    matches!(
        tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await,
        Ok(Ok(n)) if tunnel::looks_like_hello(&first[..n])
    )
}

/// Sends an error frame, closes the write side, and returns the matching error.
async fn deny(stream: &mut RelayConn, code: ErrorCode, reason: String) -> TunnelError {
    refuse(
        stream,
        &Frame::Error {
            code,
            reason: reason.clone(),
        },
    )
    .await;
    TunnelError::Refused { code, reason }
}

/// Sends a fresh nonce and checks the agent's proof of the service token.
async fn challenge(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    addr: SocketAddr,
    service: &Service,
    role: Role,
    session: u64,
) -> Result<(), TunnelError> {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    write_frame(stream, &Frame::Challenge { nonce }).await?;
    let mac = match reader.next(stream).await? {
        Frame::Proof { mac } => mac,
        other => {
            let reason = format!("expected a proof, got {other:?}");
            return Err(deny(stream, ErrorCode::Protocol, reason).await);
        }
    };
    let name = &service.name;
    let token = service.token.expose().as_bytes();
    if !tunnel::verify(token, role, name, session, &nonce, &mac) {
        state.metrics.tunnel_auth_failures.inc();
        log::warn!("tunnel: agent {addr}: authentication failed for service {name:?}");
        let reason = format!("authentication failed for service {name:?}: wrong token");
        return Err(deny(stream, ErrorCode::AuthFailed, reason).await);
    }
    Ok(())
}

/// Registers an authenticated control channel and tells the agent its
/// session (bounded by the handshake timeout); unregisters it if that fails.
async fn admit_control(
    state: &TunnelState,
    stream: &mut RelayConn,
    addr: SocketAddr,
    service: &Service,
) -> Option<(u64, mpsc::Receiver<Frame>, CancellationToken)> {
    let session = state.id();
    let (tx, rx) = mpsc::channel(defaults::TUNNEL_CONTROL_QUEUE);
    // Stopping the service (a reload, or shutdown) ends this agent and all it carries.
    let cancel = service.cancel.child_token();
    let entry = AgentEntry {
        service: service.name.clone(),
        addr,
        since: Instant::now(),
        tx,
        cancel: cancel.clone(),
    };
    state.agents().insert(session, entry);
    state.metrics.tunnel_agents.set(state.agents().len() as i64);
    let limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let sent = tokio::time::timeout(limit, write_frame(stream, &Frame::Accepted { session })).await;
    if !matches!(sent, Ok(Ok(()))) {
        log::warn!("tunnel: agent {addr}: gone before its session {session} was confirmed");
        state.agents().remove(&session);
        state.metrics.tunnel_agents.set(state.agents().len() as i64);
        return None;
    }
    log::info!(
        "tunnel: agent {addr} connected for service {:?} (session {session})",
        service.name
    );
    Some((session, rx, cancel))
}

/// Writes `first` and whatever else is queued within
/// [`defaults::TUNNEL_ANNOUNCE_BATCH_MS`] in one write: announcements are
/// informational, and batching keeps them off the clients' setup path.
async fn announce_batch(
    stream: &mut RelayConn,
    rx: &mut mpsc::Receiver<Frame>,
    first: Frame,
) -> std::io::Result<()> {
    tokio::time::sleep(Duration::from_millis(defaults::TUNNEL_ANNOUNCE_BATCH_MS)).await;
    let mut bytes = tunnel::encode(&first);
    while let Ok(frame) = rx.try_recv() {
        bytes.extend_from_slice(&tunnel::encode(&frame));
    }
    tokio::io::AsyncWriteExt::write_all(stream, &bytes).await?;
    tokio::io::AsyncWriteExt::flush(stream).await
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
            Some(frame) = rx.recv() => announce_batch(&mut stream, &mut rx, frame).await,
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
