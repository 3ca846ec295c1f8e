//! Moves bytes both ways between two TCP sockets until both directions end.
//!
//! Half-close is honoured: when one side stops sending (FIN), the other
//! side's write half is shut down and the opposite direction keeps flowing.
//! An error in either direction (a reset) ends both, so drops propagate.
//!
//! Each direction starts by copying through a small buffer, which is what
//! short request/response connections need. When a read fills the buffer
//! (a bulk transfer) the direction switches to zero-copy `splice(2)` through
//! a kernel pipe on Linux ([`super::splice`]), or doubles its buffer up to
//! the configured size elsewhere, when splice is off, or when no pipe can be had.
//!
//! The `b → a` direction can be gated: it starts only once a future
//! resolves (the relay waits for the agent's `Started` frame while client
//! bytes already flow towards the agent). It can also lead with a
//! [`Header`] that travels in the same write as the first bytes read from
//! `b` (the agent's `Started` rides with its service's first bytes, which
//! spares the relay a wake-up and the agent a write per client).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::error::TunnelError;
use super::net::shutdown_write;

/// First buffer size of a direction, in bytes.
const START_BUFFER: usize = 16 * 1024;

/// Bytes moved by a pump, readable while it runs. A byte counts once it has
/// been read from its source.
#[derive(Debug, Default)]
pub struct Transferred {
    /// Bytes read from `a` (to be written to `b`).
    pub a_to_b: AtomicU64,
    /// Bytes read from `b` (to be written to `a`).
    pub b_to_a: AtomicU64,
}

/// How a pump ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// A socket failed (usually a reset): both were dropped.
    Failed(String),
    /// The pump was cancelled (shutdown).
    Cancelled,
    /// The gate of the `b → a` direction failed; nothing was written to `a`.
    GateFailed(TunnelError),
}

/// How a pump moves bytes.
#[derive(Debug, Clone, Copy)]
pub struct PumpMode {
    /// Largest buffer (or pipe) per direction, in bytes.
    pub max_buffer: usize,
    /// Switch bulk transfers to `splice(2)` where the platform has it.
    pub splice: bool,
}

/// Bytes that must reach the other side before any data of a direction:
/// written together with the first bytes read, or alone once `wait` passes
/// without any (or the source ends or fails first). Not counted as data.
#[derive(Debug)]
pub struct Header {
    /// The bytes (an encoded frame).
    pub bytes: Vec<u8>,
    /// Longest wait for data to ride with.
    pub wait: Duration,
    /// Told once the header is written (or dropped when it cannot be).
    pub written: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Header {
    fn done(self) {
        if let Some(tx) = self.written {
            let _ = tx.send(());
        }
    }
}

/// Pumps `a` ↔ `b`, writing `a_prefix` to `b` first (bytes already read
/// past a handshake). The `b → a` direction starts when `b_gate` resolves,
/// with the bytes it returns written to `a` first, then `b_header` if any.
/// Returns when both directions have ended, one failed, the gate failed,
/// or `cancel` fired.
#[allow(clippy::too_many_arguments)]
pub async fn pump<G>(
    a: &TcpStream,
    b: &TcpStream,
    a_prefix: Vec<u8>,
    b_gate: G,
    b_header: Option<Header>,
    mode: PumpMode,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> PumpEnd
where
    G: Future<Output = Result<Vec<u8>, TunnelError>>,
{
    let forward = async {
        direction(a, b, &a_prefix, None, mode, &counts.a_to_b)
            .await
            .map_err(|e| PumpEnd::Failed(e.to_string()))
    };
    let backward = async {
        let prefix = b_gate.await.map_err(PumpEnd::GateFailed)?;
        direction(b, a, &prefix, b_header, mode, &counts.b_to_a)
            .await
            .map_err(|e| PumpEnd::Failed(e.to_string()))
    };
    tokio::select! {
        result = async { tokio::try_join!(forward, backward) } => match result {
            Ok(_) => PumpEnd::Closed,
            Err(end) => end,
        },
        _ = cancel.cancelled() => PumpEnd::Cancelled,
    }
}

/// A gate that is open at once, with `prefix` to write first.
pub async fn open(prefix: Vec<u8>) -> Result<Vec<u8>, TunnelError> {
    Ok(prefix)
}

/// Writes all of `bytes` to `to`.
pub(super) async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads some bytes into `buf`; 0 means EOF.
pub(super) async fn read(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `header` to `to` with the first bytes read from `from`, or alone
/// after `header.wait`; `Ok(false)` if `from` ended first (its FIN passed on).
async fn lead(
    from: &TcpStream,
    to: &TcpStream,
    header: &Header,
    buf: &mut [u8],
    counter: &AtomicU64,
) -> io::Result<bool> {
    match tokio::time::timeout(header.wait, read(from, buf)).await {
        Err(_) => write_all(to, &header.bytes).await.map(|()| true),
        Ok(Ok(0)) => {
            write_all(to, &header.bytes).await?;
            shutdown_write(to).map(|()| false)
        }
        Ok(Ok(n)) => {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let joined = [header.bytes.as_slice(), &buf[..n]].concat();
            write_all(to, &joined).await.map(|()| true)
        }
        Ok(Err(e)) => {
            // The header still goes first, so the far side learns the
            // connection had started before it sees the failure.
            let _ = write_all(to, &header.bytes).await;
            Err(e)
        }
    }
}

/// One direction: prefix, header, then copy; bulk transfers move on to splice.
async fn direction(
    from: &TcpStream,
    to: &TcpStream,
    prefix: &[u8],
    header: Option<Header>,
    mode: PumpMode,
    counter: &AtomicU64,
) -> io::Result<()> {
    write_all(to, prefix).await?;
    counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0u8; START_BUFFER.min(mode.max_buffer)];
    if let Some(header) = header {
        let go_on = lead(from, to, &header, &mut buf, counter).await?;
        header.done();
        if !go_on {
            return Ok(());
        }
    }
    #[cfg(target_os = "linux")]
    let mut try_splice = mode.splice;
    loop {
        let n = read(from, &mut buf).await?;
        if n == 0 {
            return shutdown_write(to);
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        write_all(to, &buf[..n]).await?;
        if n < buf.len() {
            continue;
        }
        #[cfg(target_os = "linux")]
        if try_splice {
            match super::splice::Pipe::new(mode.max_buffer) {
                Ok(pipe) => return super::splice::copy(from, to, pipe, counter).await,
                Err(e) => {
                    log::debug!("splice unavailable ({e}); copying");
                    try_splice = false;
                }
            }
        }
        if buf.len() < mode.max_buffer {
            buf.resize((buf.len() * 2).min(mode.max_buffer), 0);
        }
    }
}

/// Pumps two streams of any kind (TLS) both ways with half-close, by
/// copying; `a_prefix` goes to `b` and `b_prefix` to `a` first, then
/// `b_header` (with the first bytes read from `b`, in one write: one TLS
/// record).
#[allow(clippy::too_many_arguments)]
pub async fn pump_io<A, B>(
    a: A,
    b: B,
    a_prefix: Vec<u8>,
    b_prefix: Vec<u8>,
    b_header: Option<Header>,
    max_buffer: usize,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> PumpEnd
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let forward = copy_io(ar, bw, a_prefix, None, max_buffer, &counts.a_to_b);
    let backward = copy_io(br, aw, b_prefix, b_header, max_buffer, &counts.b_to_a);
    tokio::select! {
        result = async { tokio::try_join!(forward, backward) } => match result {
            Ok(_) => PumpEnd::Closed,
            Err(e) => PumpEnd::Failed(e.to_string()),
        },
        _ = cancel.cancelled() => PumpEnd::Cancelled,
    }
}

async fn copy_io<R, W>(
    mut from: R,
    mut to: W,
    prefix: Vec<u8>,
    header: Option<Header>,
    max_buffer: usize,
    counter: &AtomicU64,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !prefix.is_empty() {
        to.write_all(&prefix).await?;
        to.flush().await?;
        counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    let mut buf = vec![0u8; START_BUFFER.min(max_buffer)];
    if let Some(header) = header {
        // As `lead`: the header rides with the first bytes, or goes alone.
        let first = match tokio::time::timeout(header.wait, from.read(&mut buf)).await {
            Err(_) => Ok(None),
            Ok(Ok(n)) => Ok(Some(n)),
            Ok(Err(e)) => Err(e),
        };
        let n = match &first {
            Ok(Some(n)) => *n,
            _ => 0,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let written = async {
            to.write_all(&[header.bytes.as_slice(), &buf[..n]].concat())
                .await?;
            to.flush().await
        };
        let written = written.await;
        header.done();
        match first {
            Ok(Some(0)) => {
                written?;
                return finish(&mut to).await;
            }
            Ok(_) => written?,
            Err(e) => return Err(e),
        }
    }
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return finish(&mut to).await;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        if n == buf.len() && buf.len() < max_buffer {
            buf.resize((buf.len() * 2).min(max_buffer), 0);
        }
    }
}

/// Shuts `to`'s write half down (passes a FIN, or TLS close, on).
async fn finish<W: tokio::io::AsyncWrite + Unpin>(to: &mut W) -> io::Result<()> {
    match tokio::io::AsyncWriteExt::shutdown(to).await {
        // The peer is already gone (or the FIN was passed on before).
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}
