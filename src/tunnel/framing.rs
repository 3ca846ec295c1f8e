//! Reading and writing tunnel frames on sockets.
//!
//! [`FrameReader`] is cancel-safe (it can sit in a `select!`): what it has
//! read stays in its buffer. Bytes that arrive after the last frame (raw
//! tunnel data after `Start` / `Started`) are handed back by
//! [`FrameReader::into_leftover`] so they can be forwarded first.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TunnelError;
use crate::protocol::tunnel::{self, Frame, LEN_BYTES, MAX_FRAME_BYTES};

/// A buffered, cancel-safe reader of frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        FrameReader {
            buf: Vec::with_capacity(LEN_BYTES + MAX_FRAME_BYTES),
        }
    }

    /// The next frame. Cancel-safe: partial input is kept for the next call.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Frame, TunnelError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 2 * (LEN_BYTES + MAX_FRAME_BYTES)];
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Err(TunnelError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Like [`FrameReader::next`], bounded by `limit`.
    pub async fn next_within<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        limit: Duration,
        what: &'static str,
    ) -> Result<Frame, TunnelError> {
        tokio::time::timeout(limit, self.next(reader))
            .await
            .map_err(|_| TunnelError::Timeout(what))?
    }

    fn parse(&mut self) -> Result<Option<Frame>, TunnelError> {
        if self.buf.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = tunnel::body_len([self.buf[0], self.buf[1]])?;
        if self.buf.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let frame = tunnel::decode(&self.buf[LEN_BYTES..LEN_BYTES + len])?;
        self.buf.drain(..LEN_BYTES + len);
        Ok(Some(frame))
    }

    /// Bytes read past the last frame.
    pub fn into_leftover(self) -> Vec<u8> {
        self.buf
    }
}

/// Writes one frame and flushes it (TLS streams buffer).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    writer.write_all(&tunnel::encode(frame)).await?;
    writer.flush().await
}

/// Writes an error frame and shuts the write side down, ignoring failures
/// (the peer may already be gone).
pub async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = write_frame(writer, frame).await;
        let _ = writer.shutdown().await;
    })
    .await;
}
