//! The host agent's pool: slots that keep one pooled data connection each,
//! and the service of a client once the relay starts a pooled connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
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
/// cancelled when that session ends.
pub(super) fn spawn_slot(
    settings: &Arc<AgentSettings>,
    stats: &Arc<AgentStats>,
    session: u64,
    slots: &CancellationToken,
) {
    // Boxed: the future is large (a TLS stream inline) and spawning moves
    // it by value several times; a box is moved as a pointer.
    tokio::spawn(Box::pin(slot(
        settings.clone(),
        stats.clone(),
        session,
        slots.clone(),
    )));
}

/// Keeps one pooled connection open. When the relay starts it for a
/// client, a fresh slot is spawned at once to refill the pool and this task
/// goes on to serve the client (the client's path comes first). Idle or
/// serving, it ends when its control session does: connections through a
/// relay declared dead are closed on the local service's side too.
async fn slot(
    settings: Arc<AgentSettings>,
    stats: Arc<AgentStats>,
    session: u64,
    slots: CancellationToken,
) {
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
        if let Some((settings, stats, session, slots)) = self.0.take() {
            if !slots.is_cancelled() {
                spawn_slot(&settings, &stats, session, &slots);
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
                match frame? {
                    Frame::Ping { seq } => write_frame(&mut stream, &Frame::Pong { seq }).await?,
                    Frame::Start { conn, client, server } => {
                        let transport = Transport::Tcp;
                        return Ok(Started { stream, reader, conn, client, server, transport })
                    }
                    Frame::StartUdp { conn, client, server } => {
                        let transport = Transport::Udp;
                        return Ok(Started { stream, reader, conn, client, server, transport })
                    }
                    Frame::Error { code, reason } => return Err(TunnelError::Refused { code, reason }),
                    other => return Err(TunnelError::Unexpected(format!("{other:?}"))),
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
    let local = match dial(&settings, address, client, server).await {
        Ok(local) => local,
        Err(why) => return refuse_client(&stats, &mut stream, conn, client, address, why).await,
    };
    stats.served.fetch_add(1, Ordering::Relaxed);
    log::debug!("tunnel agent: conn {conn}: client {client} → {address}");
    refill.now();
    let counts = Transferred::default();
    let Some(end) =
        relay_to_local(&settings, stream, local, leftover, conn, &counts, &cancel).await
    else {
        return;
    };
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

/// Answers `Started` and pumps the pooled connection ↔ the local service:
/// with splice and `Started` riding on the service's first bytes over
/// plain TCP, by copying after a `Started` of its own over TLS. `None` if
/// the relay was gone before the start.
async fn relay_to_local(
    settings: &AgentSettings,
    stream: AgentConn,
    local: TcpStream,
    leftover: Vec<u8>,
    conn: u64,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> Option<PumpEnd> {
    let mode = PumpMode {
        max_buffer: settings.copy_buffer,
        splice: settings.splice,
    };
    let end = match stream {
        Either::Left(tcp) => {
            let header = Header {
                bytes: tunnel::encode(&Frame::Started { conn }),
                wait: Duration::from_millis(defaults::AGENT_STARTED_WAIT_MS),
            };
            let gate = open(Vec::new());
            pump(
                &tcp,
                &local,
                leftover,
                gate,
                Some(header),
                mode,
                counts,
                cancel,
            )
            .await
        }
        Either::Right(mut tls) => {
            if let Err(e) = write_frame(&mut tls, &Frame::Started { conn }).await {
                log::debug!("tunnel agent: conn {conn}: relay gone before start: {e}");
                return None;
            }
            let max = mode.max_buffer;
            pump_io(tls, local, leftover, Vec::new(), max, counts, cancel).await
        }
    };
    Some(end)
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
