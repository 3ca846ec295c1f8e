//! The agent's side of a UDP session: a UDP socket connected to the local
//! service per session, datagram records from the relay sent to it, and
//! every answer it sends back written to the relay as a record.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::defaults;
use crate::protocol::tunnel::{self, Frame, MAX_DATAGRAM};
use crate::tunnel::framing::{write_frame, RecordError, RecordReader};
use crate::tunnel::tls::AgentConn;

use super::settings::AgentStats;

/// A UDP socket connected to the local service at `address` (`host:port`).
pub(super) async fn open(address: &str) -> Result<UdpSocket, String> {
    let target = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    crate::tunnel::net::enlarge_udp_buffers(&socket);
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
    socket.connect(target).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Answers `Started`, then carries datagrams between the pooled connection
/// and the local service until the relay closes the session (idle expiry)
/// or the relay session ends (`cancel`).
pub(super) async fn serve(
    mut stream: AgentConn,
    local: UdpSocket,
    leftover: Vec<u8>,
    conn: u64,
    stats: &AgentStats,
    cancel: &CancellationToken,
) {
    if let Err(e) = write_frame(&mut stream, &Frame::Started { conn }).await {
        return log::debug!("tunnel agent: conn {conn}: relay gone before start: {e}");
    }
    let (mut from_relay, mut to_relay) = tokio::io::split(stream);
    let (mut sent, mut answered) = (0u64, 0u64);
    // A local service that is down shows as send/receive errors (ICMP port
    // unreachable): counted, and logged once per session at warn.
    let warned = AtomicBool::new(false);
    let local_failed = |what: &str, e: &std::io::Error| {
        stats.local_failures.fetch_add(1, Ordering::Relaxed);
        if warned.swap(true, Ordering::Relaxed) {
            log::debug!("tunnel agent: conn {conn}: local {what} failed: {e}");
        } else {
            log::warn!(
                "tunnel agent: conn {conn}: the local UDP service: {what} failed: {e} \
                 (is it running?); counted in local_failures, repeats at debug"
            );
        }
    };
    let up = async {
        let mut records = RecordReader::new(leftover);
        loop {
            let batch = match records.next_batch(&mut from_relay).await {
                Ok(batch) => batch,
                Err(RecordError::Closed) => return "the relay closed the session".to_string(),
                Err(e) => return format!("the relay's records: {e}"),
            };
            for datagram in batch {
                // The service not listening (ICMP unreachable) is no reason to stop.
                if let Err(e) = local.send(datagram).await {
                    local_failed("send", &e);
                }
                sent += 1;
                stats.datagrams_to_local.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let down = async {
        let mut datagram = vec![0u8; MAX_DATAGRAM + 1];
        let mut batch = Vec::with_capacity(defaults::TUNNEL_UDP_BATCH + MAX_DATAGRAM);
        loop {
            batch.clear();
            let before = answered;
            match local.recv(&mut datagram).await {
                Ok(n) => add(&mut batch, &datagram[..n], &mut answered, conn),
                Err(e) => {
                    local_failed("receive", &e);
                    continue;
                }
            }
            while batch.len() < defaults::TUNNEL_UDP_BATCH {
                match local.try_recv(&mut datagram) {
                    Ok(n) => add(&mut batch, &datagram[..n], &mut answered, conn),
                    Err(_) => break,
                }
            }
            if let Err(e) = async {
                to_relay.write_all(&batch).await?;
                to_relay.flush().await
            }
            .await
            {
                return format!("writing to the relay: {e}");
            }
            stats
                .datagrams_from_local
                .fetch_add(answered - before, Ordering::Relaxed);
        }
    };
    let why = tokio::select! {
        why = up => why,
        why = down => why,
        _ = cancel.cancelled() => "its relay session ended".to_string(),
    };
    log::debug!(
        "tunnel agent: conn {conn}: UDP session ended: {why} ({sent} datagrams in, {answered} out)"
    );
}

/// Adds an answer datagram to the batch (one too large to carry is dropped).
fn add(batch: &mut Vec<u8>, datagram: &[u8], answered: &mut u64, conn: u64) {
    if tunnel::encode_datagram(batch, datagram) {
        *answered += 1;
    } else {
        log::debug!(
            "tunnel agent: conn {conn}: dropped an answer of {} bytes",
            datagram.len()
        );
    }
}
