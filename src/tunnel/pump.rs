//! Moves bytes both ways between two TCP sockets until both directions end.
//!
//! Half-close is honoured: when one side stops sending (FIN), the other
//! side's write half is shut down and the opposite direction keeps flowing.
//! An error in either direction (a reset) ends both, so drops propagate.
//! Each direction's buffer starts small and doubles while reads fill it, up
//! to the configured size, so idle connections cost little. On Linux, with
//! `splice` on, bytes move through a kernel pipe instead ([`super::splice`]);
//! if pipes cannot be had (file descriptor limit) the pump falls back to copying.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// First buffer size of a direction, in bytes.
const START_BUFFER: usize = 16 * 1024;

/// Bytes moved by a pump, readable while it runs.
#[derive(Debug, Default)]
pub struct Transferred {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: AtomicU64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: AtomicU64,
}

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PumpEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// A socket failed (usually a reset): both were dropped.
    Failed(String),
    /// The pump was cancelled (shutdown).
    Cancelled,
}

/// How a pump moves bytes.
#[derive(Debug, Clone, Copy)]
pub struct PumpMode {
    /// Largest buffer (or pipe) per direction, in bytes.
    pub max_buffer: usize,
    /// Use `splice(2)` where the platform has it.
    pub splice: bool,
}

/// Pumps `a` ↔ `b`, writing `a_prefix` to `b` and `b_prefix` to `a` first
/// (bytes already read past a handshake). Returns when both directions have
/// ended, one failed, or `cancel` fired.
pub async fn pump(
    a: TcpStream,
    b: TcpStream,
    a_prefix: Vec<u8>,
    b_prefix: Vec<u8>,
    mode: PumpMode,
    counts: &Transferred,
    cancel: &CancellationToken,
) -> PumpEnd {
    #[cfg(target_os = "linux")]
    if mode.splice {
        use super::splice::{copy, Pipe};
        match (Pipe::new(mode.max_buffer), Pipe::new(mode.max_buffer)) {
            (Ok(forward), Ok(backward)) => {
                let forward = copy(&a, &b, forward, &a_prefix, &counts.a_to_b);
                let backward = copy(&b, &a, backward, &b_prefix, &counts.b_to_a);
                return finish(async { tokio::try_join!(forward, backward) }, cancel).await;
            }
            (Err(e), _) | (_, Err(e)) => log::debug!("splice unavailable ({e}); copying"),
        }
    }
    let max_buffer = mode.max_buffer;
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let forward = copy_half(ar, bw, a_prefix, max_buffer, &counts.a_to_b);
    let backward = copy_half(br, aw, b_prefix, max_buffer, &counts.b_to_a);
    finish(async { tokio::try_join!(forward, backward) }, cancel).await
}

async fn finish<T>(
    both: impl std::future::Future<Output = std::io::Result<T>>,
    cancel: &CancellationToken,
) -> PumpEnd {
    tokio::select! {
        result = both => match result {
            Ok(_) => PumpEnd::Closed,
            Err(error) => PumpEnd::Failed(error.to_string()),
        },
        _ = cancel.cancelled() => PumpEnd::Cancelled,
    }
}

async fn copy_half(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    prefix: Vec<u8>,
    max_buffer: usize,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    if !prefix.is_empty() {
        to.write_all(&prefix).await?;
        counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    let mut buf = vec![0u8; START_BUFFER.min(max_buffer)];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close: pass the FIN on; the other direction goes on.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if n == buf.len() && buf.len() < max_buffer {
            buf.resize((buf.len() * 2).min(max_buffer), 0);
        }
    }
}
