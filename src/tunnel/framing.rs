//! Reading and writing tunnel frames on sockets.
//!
//! [`FrameReader`] is cancel-safe (it can sit in a `select!`): what it has
//! read stays in its buffer. Bytes that arrive after the last frame (raw
//! tunnel data after `Start` / `Started`) are handed back by
//! [`FrameReader::into_leftover`] so they can be forwarded first.
//!
//! [`RecordReader`] reads a UDP session's `u16 length | datagram` records
//! (relay and agent share it), a batch of complete records at a time.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TunnelError;
use crate::defaults;
use crate::protocol::tunnel::{
    self, DatagramRecords, Frame, OversizedDatagram, LEN_BYTES, MAX_DATAGRAM, MAX_FRAME_BYTES,
};

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
            // Straight into the buffer: no zeroed stack array in the future
            // (BENCHMARKS.md, instruction counts).
            self.buf.reserve(2 * (LEN_BYTES + MAX_FRAME_BYTES));
            if reader.read_buf(&mut self.buf).await? == 0 {
                return Err(TunnelError::Closed);
            }
        }
    }

    /// The next frame if it is already buffered in full; reads nothing.
    pub fn buffered(&mut self) -> Result<Option<Frame>, TunnelError> {
        self.parse()
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

/// Why a UDP session's record stream ended.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The other side closed the connection (end of stream).
    #[error("closed")]
    Closed,
    /// Reading the connection failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// A record announced more than [`MAX_DATAGRAM`] bytes.
    #[error("bad record: {0}")]
    Oversized(#[from] OversizedDatagram),
}

/// A buffered reader of datagram records (`u16 length | datagram`,
/// [`tunnel::encode_datagram`]) from a tunnel connection.
///
/// Memory: the buffer holds at most one batch read plus one partial record,
/// about [`defaults::TUNNEL_UDP_BATCH`] + [`MAX_DATAGRAM`] bytes. Not
/// cancel-safe across a returned batch: records handed out are consumed.
#[derive(Debug)]
pub struct RecordReader {
    buf: Vec<u8>,
    /// Bytes of the last batch handed out, dropped at the next call.
    handed: usize,
}

impl RecordReader {
    /// A reader that starts with `leftover`, bytes already read past the
    /// session's `Start` / `Started` frame.
    pub fn new(leftover: Vec<u8>) -> Self {
        let mut buf = leftover;
        buf.reserve(defaults::TUNNEL_UDP_BATCH + MAX_DATAGRAM);
        RecordReader { buf, handed: 0 }
    }

    /// The next batch of complete records, in order, reading from `reader`
    /// until there is at least one.
    ///
    /// Errors: [`RecordError::Closed`] at end of stream (a partial record is
    /// dropped), [`RecordError::Io`], and [`RecordError::Oversized`] once
    /// every record before the bad one has been handed out.
    pub async fn next_batch<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<impl Iterator<Item = &[u8]>, RecordError> {
        self.buf.drain(..self.handed);
        self.handed = 0;
        loop {
            let mut records = DatagramRecords::new(&self.buf);
            let bad = records.by_ref().find_map(Result::err);
            let complete = records.consumed();
            if complete > 0 {
                self.handed = complete;
                let batch = DatagramRecords::new(&self.buf[..complete]);
                return Ok(batch.map_while(Result::ok));
            }
            if let Some(bad) = bad {
                return Err(bad.into());
            }
            if reader.read_buf(&mut self.buf).await? == 0 {
                return Err(RecordError::Closed);
            }
        }
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
