//! The host agent's pool: slots that keep one pooled data connection each,
//! and the service of a client once the relay starts a pooled connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::connect::{connect, Backoff};
use super::settings::{AgentSettings, AgentStats, LocalService};
use crate::addr::canonical;
use crate::defaults;
use crate::protocol::tunnel::{self, ErrorCode, Frame, Role, Transport};
use crate::tunnel::error::TunnelError;
use crate::tunnel::framing::{refuse, write_frame, FrameReader};
use crate::tunnel::pump::{open, pump, pump_io, Header, PumpEnd, PumpMode, Transferred};
use crate::tunnel::tls::AgentConn;

/// Starts a [`slot`] task of control session `session`; `slots` is
/// cancelled when that session ends. With a `gate`, the slot opens its
/// connection only once the gate is told (or dropped).
pub(super) fn spawn_slot(
    settings: &Arc<AgentSettings>,
    stats: &Arc<AgentStats>,
    session: u64,
    slots: &CancellationToken,
    gate: Option<oneshot::Receiver<()>>,
) {
    // Boxed: the future is large (a TLS stream inline) and spawning moves
    // it by value several times; a box is moved as a pointer.
    tokio::spawn(Box::pin(slot(
        settings.clone(),
        stats.clone(),
        session,
        slots.clone(),
        gate,
    )));
}

/// Keeps one pooled connection open. When the relay starts it for a
/// client, this task goes on to serve the client and a fresh slot refills
/// the pool: spawned once the service is dialled, it connects once
/// `Started` (with the service's first bytes) has gone back, so the
/// client's path comes first. Idle or
/// serving, it ends when its control session does: connections through a
/// relay declared dead are closed on the local service's side too.
async fn slot(
    settings: Arc<AgentSettings>,
    stats: Arc<AgentStats>,
    session: u64,
    slots: CancellationToken,
    gate: Option<oneshot::Receiver<()>>,
) {
    if let Some(gate) = gate {
        tokio::select! {
            _ = gate => {}
            _ = slots.cancelled() => return,
        }
    }
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    loop {
        let opened = tokio::select! {
            r = pooled(&settings, &stats, session) => r,
            _ = slots.cancelled() => return,
        };
        match opened {
            Ok(started) => {
                let refill = Refill(Some((
                    settings.clone(),
                    stats.clone(),
                    session,
                    slots.clone(),
                )));
                return serve(settings, stats, started, slots, refill).await;
            }
            Err(e) => {
                log::debug!("tunnel agent: pooled connection: {e}");
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = slots.cancelled() => return,
                }
            }
        }
    }
}

/// Spawns the slot that replaces a taken pooled connection: explicitly once
/// the client's first steps are done (they come first), or when dropped.
struct Refill(Option<RefillArgs>);

type RefillArgs = (Arc<AgentSettings>, Arc<AgentStats>, u64, CancellationToken);

impl Refill {
    fn now(&mut self) {
        self.spawn(None);
    }

    /// Spawns the slot now, to connect once `gate` is told: after the
    /// client's first answer went back (a new connection and its TLS
    /// handshake no longer compete with that answer for the CPU).
    fn after(&mut self, gate: oneshot::Receiver<()>) {
        self.spawn(Some(gate));
    }

    fn spawn(&mut self, gate: Option<oneshot::Receiver<()>>) {
        if let Some((settings, stats, session, slots)) = self.0.take() {
            if !slots.is_cancelled() {
                spawn_slot(&settings, &stats, session, &slots, gate);
            }
        }
    }
}

impl Drop for Refill {
    fn drop(&mut self) {
        self.now();
    }
}

/// A pooled connection that the relay started for a client.
struct Started {
    /// The heartbeat that came with the start, not answered yet: `Started`
    /// answers it, or a `Pong` if the service is slow to dial ([`answering`]).
    owed_pong: Option<u64>,
    stream: AgentConn,
    reader: FrameReader,
    conn: u64,
    client: std::net::SocketAddr,
    /// Where the client connected on the relay (PROXY v2 destination).
    server: std::net::SocketAddr,
    /// Started with `StartUdp`: a UDP session, datagram records follow.
    transport: Transport,
}

/// Decrements the idle count when a pooled connection stops being idle.
struct IdleGuard<'a>(&'a AtomicUsize);

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Opens a pooled connection and waits (answering heartbeats) until the relay starts it.
async fn pooled(
    settings: &AgentSettings,
    stats: &AgentStats,
    session: u64,
) -> Result<Started, TunnelError> {
    let (mut stream, mut reader, _) = connect(settings, Role::Data, session).await?;
    stats.idle.fetch_add(1, Ordering::AcqRel);
    let _idle = IdleGuard(&stats.idle);
    let mut tick = tokio::time::interval(settings.heartbeat_interval);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            frame = reader.next(&mut stream) => {
                last_heard = Instant::now();
                let mut frame = frame?;
                let mut owed_pong = None;
                loop {
                    let (conn, client, server, transport) = match frame {
                        // The relay sends a heartbeat with each start: when the
                        // start is already here, `Started` answers both (one
                        // write and one relay wake-up fewer per client).
                        Frame::Ping { seq } => match reader.buffered()? {
                            Some(next @ (Frame::Start { .. } | Frame::StartUdp { .. })) => {
                                owed_pong = Some(seq);
                                frame = next;
                                continue;
                            }
                            next => {
                                write_frame(&mut stream, &Frame::Pong { seq }).await?;
                                match next {
                                    Some(next) => {
                                        frame = next;
                                        continue;
                                    }
                                    None => break,
                                }
                            }
                        },
                        Frame::Start { conn, client, server } => (conn, client, server, Transport::Tcp),
                        Frame::StartUdp { conn, client, server } => (conn, client, server, Transport::Udp),
                        Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
                        other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
                    };
                    return Ok(Started { owed_pong, stream, reader, conn, client, server, transport });
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > settings.heartbeat_timeout {
                    return Err(TunnelError::Timeout("relay silent on a pooled connection"));
                }
            }
        }
    }
}

/// Serves one client: dial the local service, answer `Started` (with the
/// service's first bytes when they come soon), pump.
async fn serve(
    settings: Arc<AgentSettings>,
    stats: Arc<AgentStats>,
    started: Started,
    cancel: CancellationToken,
    mut refill: Refill,
) {
    let Started {
        owed_pong,
        mut stream,
        reader,
        conn,
        client,
        server,
        transport,
    } = started;
    // As the relay should already report them: IPv4 clients as IPv4.
    let (client, server) = (canonical(client), canonical(server));
    let leftover = reader.into_leftover();
    if transport != settings.local.transport() {
        return wrong_transport(&mut stream, conn, transport).await;
    }
    let address = match &settings.local {
        LocalService::Echo => {
            stats.served.fetch_add(1, Ordering::Relaxed);
            refill.now();
            return echo(stream, leftover, conn, &cancel).await;
        }
        LocalService::Udp(address) => {
            let local = match super::udp::open(address).await {
                Ok(local) => local,
                Err(why) => {
                    return refuse_client(&stats, &mut stream, conn, client, address, why).await
                }
            };
            stats.served.fetch_add(1, Ordering::Relaxed);
            refill.now();
            log::debug!("tunnel agent: conn {conn}: UDP session of {client} → {address}");
            return super::udp::serve(stream, local, leftover, conn, &stats, &cancel).await;
        }
        LocalService::Addr(address) => address,
    };
    let dialled = answering(
        &mut stream,
        owed_pong,
        dial(&settings, address, client, server),
    );
    let local = match dialled.await {
        Ok(local) => local,
        Err(why) => return refuse_client(&stats, &mut stream, conn, client, address, why).await,
    };
    stats.served.fetch_add(1, Ordering::Relaxed);
    log::debug!("tunnel agent: conn {conn}: client {client} → {address}");
    let (written, gate) = oneshot::channel();
    refill.after(gate);
    let counts = Transferred::default();
    let end = relay_to_local(
        &settings, stream, local, leftover, conn, written, &counts, &cancel,
    );
    let end = end.await;
    let (up, down) = (&counts.a_to_b, &counts.b_to_a);
    let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    match end {
        PumpEnd::Cancelled => log::info!(
            "tunnel agent: conn {conn}: closing client {client}: its relay session ended \
             ({up} bytes in, {down} out)"
        ),
        end => log::debug!("tunnel agent: conn {conn} ended ({end:?}); {up} bytes in, {down} out"),
    }
}

/// Answers `Started` and pumps the pooled connection ↔ the local service,
/// `Started` riding on the service's first bytes (one write, one TLS
/// record): with splice over plain TCP, by copying over TLS. `written` is
/// told once `Started` is written.
#[allow(clippy::too_many_arguments)]
async fn relay_to_local(
    settings: &AgentSettings,
    stream: AgentConn,
    local: TcpStream,
    leftover: Vec<u8>,
    conn: u64,
    written: oneshot::Sender<()>,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> PumpEnd {
    let mode = PumpMode {
        max_buffer: settings.copy_buffer,
        splice: settings.splice,
    };
    let header = Header {
        bytes: tunnel::encode(&Frame::Started { conn }),
        wait: Duration::from_millis(defaults::AGENT_STARTED_WAIT_MS),
        written: Some(written),
    };
    match stream {
        Either::Left(tcp) => {
            let gate = open(Vec::new());
            let header = Some(header);
            pump(&tcp, &local, leftover, gate, header, mode, counts, cancel).await
        }
        Either::Right(tls) => {
            let (max, header) = (mode.max_buffer, Some(header));
            pump_io(
                tls,
                local,
                leftover,
                Vec::new(),
                header,
                max,
                counts,
                cancel,
            )
            .await
        }
    }
}

/// Runs `work` (dialling the local service); answers the relay's heartbeat
/// `owed` with a `Pong` once [`defaults::AGENT_PONG_GRACE_MS`] pass before
/// it is done, so a slow service does not make the relay take this agent
/// for dead. Done sooner, `Started` will answer it instead.
async fn answering<T>(
    stream: &mut AgentConn,
    owed: Option<u64>,
    work: impl std::future::Future<Output = T>,
) -> T {
    let Some(seq) = owed else {
        return work.await;
    };
    tokio::pin!(work);
    let grace = Duration::from_millis(defaults::AGENT_PONG_GRACE_MS);
    if let Ok(done) = tokio::time::timeout(grace, &mut work).await {
        return done;
    }
    if let Err(e) = write_frame(stream, &Frame::Pong { seq }).await {
        // The relay is gone: the start fails when `Started` is written.
        log::debug!("tunnel agent: answering a heartbeat: {e}");
    }
    work.await
}

/// Connects to the local service (and sends the PROXY header if asked to).
async fn dial(
    settings: &AgentSettings,
    address: &str,
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
) -> Result<TcpStream, String> {
    let dialled = tokio::time::timeout(settings.local_connect_timeout, TcpStream::connect(address));
    let local = match dialled.await {
        Ok(Ok(local)) => local,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".into()),
    };
    let _ = local.set_nodelay(true);
    if settings.proxy_protocol {
        // The connection as the client made it: its address to the relay's public port.
        let header = crate::protocol::proxy_v2::header(client, server);
        crate::tunnel::pump::write_all(&local, &header)
            .await
            .map_err(|e| format!("writing the PROXY header: {e}"))?;
    }
    Ok(local)
}

async fn refuse_client(
    stats: &AgentStats,
    stream: &mut AgentConn,
    conn: u64,
    client: std::net::SocketAddr,
    address: &str,
    why: String,
) {
    stats.local_failures.fetch_add(1, Ordering::Relaxed);
    log::warn!(
        "tunnel agent: conn {conn}: local service {address} unavailable for client {client}: {why}"
    );
    let reason = format!("local service unavailable: {why}");
    refuse(
        stream,
        &Frame::Error {
            code: ErrorCode::LocalUnavailable,
            reason,
        },
    )
    .await;
}

/// Refuses a start of the other transport than this agent serves (the
/// relay checks it at the handshake; this keeps TCP bytes and datagrams
/// apart even so).
async fn wrong_transport(stream: &mut AgentConn, conn: u64, started: Transport) {
    let reason = match started {
        Transport::Udp => "this agent serves TCP; it cannot carry a UDP session",
        Transport::Tcp => "this agent serves UDP (--local-udp); it cannot carry a TCP client",
    };
    log::error!("tunnel agent: conn {conn}: refused: {reason}");
    let frame = Frame::Error {
        code: ErrorCode::WrongTransport,
        reason: reason.into(),
    };
    refuse(stream, &frame).await;
}

/// The built-in echo service on a started pooled connection.
async fn echo(mut stream: AgentConn, leftover: Vec<u8>, conn: u64, cancel: &CancellationToken) {
    let run = async {
        write_frame(&mut stream, &Frame::Started { conn }).await?;
        let (mut r, mut w) = tokio::io::split(stream);
        w.write_all(&leftover).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut r, &mut buf).await?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).await?;
            w.flush().await?;
        }
        w.shutdown().await
    };
    tokio::select! {
        result = run => if let Err(e) = result {
            log::debug!("tunnel agent: echo conn {conn}: {e}");
        },
        _ = cancel.cancelled() => {}
    }
}
