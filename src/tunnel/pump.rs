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
//! bytes already flow towards the agent).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::TunnelError;

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

/// Pumps `a` ↔ `b`, writing `a_prefix` to `b` first (bytes already read
/// past a handshake). The `b → a` direction starts when `b_gate` resolves,
/// with the bytes it returns written to `a` first. Returns when both
/// directions have ended, one failed, the gate failed, or `cancel` fired.
pub async fn pump<G>(
    a: &TcpStream,
    b: &TcpStream,
    a_prefix: Vec<u8>,
    b_gate: G,
    mode: PumpMode,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> PumpEnd
where
    G: Future<Output = Result<Vec<u8>, TunnelError>>,
{
    let forward = async {
        direction(a, b, &a_prefix, mode, &counts.a_to_b)
            .await
            .map_err(|e| PumpEnd::Failed(e.to_string()))
    };
    let backward = async {
        let prefix = b_gate.await.map_err(PumpEnd::GateFailed)?;
        direction(b, a, &prefix, mode, &counts.b_to_a)
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

/// Shuts `to`'s write half down (passes a FIN on).
pub(super) fn shutdown_write(to: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write) {
        // The peer is already gone: nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// One direction: prefix, then copy; bulk transfers move on to splice.
async fn direction(
    from: &TcpStream,
    to: &TcpStream,
    prefix: &[u8],
    mode: PumpMode,
    counter: &AtomicU64,
) -> io::Result<()> {
    write_all(to, prefix).await?;
    counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0u8; START_BUFFER.min(mode.max_buffer)];
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
/// copying; `a_prefix` goes to `b` and `b_prefix` to `a` first.
pub async fn pump_io<A, B>(
    a: A,
    b: B,
    a_prefix: Vec<u8>,
    b_prefix: Vec<u8>,
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
    let forward = copy_io(ar, bw, a_prefix, max_buffer, &counts.a_to_b);
    let backward = copy_io(br, aw, b_prefix, max_buffer, &counts.b_to_a);
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
    max_buffer: usize,
    counter: &AtomicU64,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    to.write_all(&prefix).await?;
    to.flush().await?;
    counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0u8; START_BUFFER.min(max_buffer)];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        if n == buf.len() && buf.len() < max_buffer {
            buf.resize((buf.len() * 2).min(max_buffer), 0);
        }
    }
}
