//! UDP services on the relay: the public socket's receive loop, which
//! turns each client address into a session, and the carrying of a session
//! over the pooled connection it was handed.
//!
//! A session is a bounded queue (`udp_queue` datagrams) that the receive
//! loop fills and the carrying task drains. It is handed to a pooled
//! connection exactly like a TCP client (the same pool, wait and retry on
//! another pooled connection when one does not answer), with `StartUdp`
//! instead of `Start`; its datagrams wait in the queue until the agent
//! answers `Started`, so a failed hand-off loses none. Then datagrams are
//! written as records (`u16 length | datagram`) in batches, and the agent's
//! records are sent back to the client's address from the service's
//! socket. A session with no datagram either way for `udp_idle_timeout_ms`
//! is closed, which closes its pooled connection; the next datagram from
//! that address opens a new session. Excess is dropped and counted, never
//! queued without bound: beyond `udp_max_sessions` sessions, beyond
//! `udp_queue` queued datagrams of a session, datagrams over
//! [`MAX_DATAGRAM`] bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant as Deadline;

use super::carry::{announce, handoff_failed, Carrying, Entry, HandOffError};
use super::clients::hand;
use super::pool::{Handed, OpenSession, UdpAssignment};
use super::state::{Service, TunnelState, UdpParts};
use crate::defaults;
use crate::protocol::tunnel::{self, Frame, MAX_DATAGRAM};
use crate::tunnel::error::TunnelError;
use crate::tunnel::framing::{FrameReader, RecordError, RecordReader};
use crate::tunnel::tls::RelayConn;

/// Binds a UDP service's public socket, with enlarged buffers.
pub(super) fn bind(addr: &str) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    crate::tunnel::net::enlarge_udp_buffers(&socket);
    Ok(socket)
}

/// Receives a UDP service's datagrams until shutdown, each into its
/// client address's session (opened on its first datagram).
pub(super) async fn receive(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    socket: Arc<UdpSocket>,
) {
    let Some(udp) = service.udp.as_ref() else {
        return log::error!("tunnel: {}: a UDP socket for a TCP service", service.name);
    };
    let server = service.addr;
    let mut sessions: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    // One byte more than the largest datagram carried, to notice larger ones.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        // Ending (shutdown, or a reload stopping the service) drops every
        // session's queue, which ends the sessions.
        let received = tokio::select! {
            biased;
            _ = service.cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, from) = match received {
            Ok(r) => r,
            Err(e) => {
                log::debug!("tunnel: {}: receive failed: {e}", service.name);
                continue;
            }
        };
        if n > MAX_DATAGRAM {
            state.udp_drop(&service, "too_large");
            continue;
        }
        let from = crate::addr::canonical(from);
        let mut datagram = buf[..n].to_vec();
        if let Some(tx) = sessions.get(&from) {
            match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => {
                    state.udp_drop(&service, "queue_full");
                    continue;
                }
                // The session ended (idle, or its agent went): open another.
                Err(TrySendError::Closed(back)) => {
                    sessions.remove(&from);
                    datagram = back;
                }
            }
        }
        if let Some(reason) = full(&state, udp, &mut sessions) {
            state.udp_drop(&service, reason);
            continue;
        }
        let (tx, rx) = mpsc::channel(udp.limits.queue);
        // A fresh queue has room for one.
        let _ = tx.try_send(datagram);
        sessions.insert(from, tx);
        let session = UdpAssignment {
            datagrams: rx,
            socket: socket.clone(),
            addr: from,
            server,
            conn: state.id(),
            attempts: 0,
            open: OpenSession::new(&udp.sessions, &udp.sessions_gauge),
        };
        log::debug!(
            "tunnel[{}#{}]: UDP session of {from} opened",
            service.name,
            session.conn
        );
        hand(&state, &service, Handed::Udp(session));
    }
}

/// Why no session can be opened now, if so (ended sessions are forgotten first).
fn full(
    state: &TunnelState,
    udp: &UdpParts,
    sessions: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) -> Option<&'static str> {
    if sessions.len() >= udp.limits.max_sessions {
        sessions.retain(|_, tx| !tx.is_closed());
    }
    if sessions.len() >= udp.limits.max_sessions {
        return Some("max_sessions");
    }
    if state.active.load(Ordering::Acquire) >= state.settings.max_clients {
        return Some("max_clients");
    }
    None
}

/// Hands the session over (`Ping` + `StartUdp`, then `Started`), then
/// carries its datagrams both ways until it is idle, either side closes or
/// the agent's session ends. A failed hand-off goes back to the pool.
pub(super) async fn carry(
    state: Arc<TunnelState>,
    service: Arc<Service>,
    mut stream: RelayConn,
    mut reader: FrameReader,
    session: UdpAssignment,
    entry: Entry,
) {
    let tag = format!("tunnel[{}#{}]", service.name, session.conn);
    let Some(udp) = service.udp.as_ref() else {
        return;
    };
    let carrying = Carrying::new(&state, &service);
    if let Err(failure) = hand_off(&state, &mut stream, &mut reader, &session, &entry).await {
        drop(carrying);
        drop(stream);
        let handed = Handed::Udp(session);
        return handoff_failed(state, service, handed, &entry, &tag, failure).await;
    }
    let (client, conn) = (session.addr, session.conn);
    let open = Frame::ConnectionOpen { conn, client };
    announce(&state, entry.session, &tag, open);
    state
        .metrics
        .tunnel_clients_served
        .get_or_create(&service.labels)
        .inc();
    let idle = Duration::from_millis(udp.limits.idle_timeout_ms);
    let why = tokio::select! {
        why = datagrams(stream, reader.into_leftover(), session, udp, idle) => why,
        _ = entry.cancel.cancelled() => format!("its agent (session {}) is gone", entry.session),
    };
    announce(&state, entry.session, &tag, Frame::ConnectionDrop { conn });
    log::debug!("{tag}: UDP session of {client} closed: {why}");
    drop(carrying);
}

/// Sends `Ping` + `StartUdp` and waits for the heartbeat's answer and `Started`.
async fn hand_off(
    state: &TunnelState,
    stream: &mut RelayConn,
    reader: &mut FrameReader,
    session: &UdpAssignment,
    entry: &Entry,
) -> Result<(), HandOffError> {
    let start_limit = Duration::from_millis(state.settings.handshake_timeout_ms);
    let answer_limit = Duration::from_millis(state.settings.handoff_timeout_ms).min(start_limit);
    let start_by = Deadline::now() + start_limit;
    let answer_by = Deadline::now() + answer_limit;
    let mut first = tunnel::encode(&Frame::Ping { seq: session.conn });
    first.extend_from_slice(&tunnel::encode(&Frame::StartUdp {
        conn: session.conn,
        client: session.addr,
        server: session.server,
    }));
    let write = async {
        stream.write_all(&first).await?;
        stream.flush().await
    };
    match tokio::time::timeout_at(start_by, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(HandOffError::Broken(e.into())),
        Err(_) => {
            return Err(HandOffError::Broken(TunnelError::Timeout(
                "writing StartUdp",
            )))
        }
    }
    let mut answered = false;
    loop {
        tokio::select! {
            frame = reader.next(stream) => match frame.map_err(HandOffError::Broken)? {
                Frame::Pong { .. } => answered = true,
                Frame::Started { conn } if conn == session.conn => return Ok(()),
                Frame::Error { code, reason } => return Err(HandOffError::Refused { code, reason }),
                other => {
                    return Err(HandOffError::Broken(TunnelError::Unexpected(format!("{other:?}"))))
                }
            },
            _ = tokio::time::sleep_until(answer_by), if !answered => {
                return Err(HandOffError::NoAnswer(answer_limit))
            }
            _ = tokio::time::sleep_until(start_by) => return Err(HandOffError::NotStarted(start_limit)),
            _ = entry.cancel.cancelled() => return Err(HandOffError::AgentGone),
        }
    }
}

/// Carries a started session's datagrams both ways; returns why it ended.
async fn datagrams(
    stream: RelayConn,
    leftover: Vec<u8>,
    mut session: UdpAssignment,
    udp: &UdpParts,
    idle: Duration,
) -> String {
    let began = Instant::now();
    // Milliseconds since `began` of the last datagram either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (mut from_agent, mut to_agent) = tokio::io::split(stream);
    let up = async {
        let mut batch = Vec::with_capacity(defaults::TUNNEL_UDP_BATCH + MAX_DATAGRAM);
        while let Some(first) = session.datagrams.recv().await {
            batch.clear();
            tunnel::encode_datagram(&mut batch, &first);
            let mut count = 1;
            while batch.len() < defaults::TUNNEL_UDP_BATCH {
                match session.datagrams.try_recv() {
                    Ok(datagram) => tunnel::encode_datagram(&mut batch, &datagram),
                    Err(_) => break,
                };
                count += 1;
            }
            touch();
            // Counted first, so a client that has its answer sees it counted.
            udp.datagrams_in.inc_by(count);
            if let Err(e) = async {
                to_agent.write_all(&batch).await?;
                to_agent.flush().await
            }
            .await
            {
                return format!("writing to the agent: {e}");
            }
        }
        "the relay is stopping".to_string()
    };
    let down = async {
        let mut records = RecordReader::new(leftover);
        loop {
            let batch = match records.next_batch(&mut from_agent).await {
                Ok(batch) => batch,
                Err(RecordError::Closed) => return "the agent closed it".to_string(),
                Err(e) => return format!("the agent's records: {e}"),
            };
            touch();
            for datagram in batch {
                udp.datagrams_out.inc();
                // A client that is gone (ICMP unreachable) is no reason to stop.
                if let Err(e) = session.socket.send_to(datagram, session.addr).await {
                    log::debug!("UDP answer to {} failed: {e}", session.addr);
                }
            }
        }
    };
    let expiry = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = began.elapsed().saturating_sub(since);
            if quiet >= idle {
                return format!("idle for {idle:?}");
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        why = up => why,
        why = down => why,
        why = expiry => why,
    }
}
