//! Targets for the tunnel frames (`protocol::tunnel`), the frame reader
//! on sockets and the UDP sessions' datagram record reader (`tunnel::framing`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::protocol::tunnel::{self, Frame, LEN_BYTES, MAX_DATAGRAM, MAX_REASON_BYTES};
use crate::tunnel::framing::{FrameReader, RecordError, RecordReader};
use crate::tunnel::TunnelError;

/// One frame body (the bytes after the length prefix), as relay and agent decode it.
///
/// Checks: [`tunnel::decode`] never panics; a frame it accepts encodes back
/// to the same bytes (an `Error` reason longer than [`MAX_REASON_BYTES`] is
/// cut by the encoder: then the re-encoded frame decodes to the cut reason).
pub fn tunnel_frame(data: &[u8]) {
    if data.len() >= LEN_BYTES {
        let _ = tunnel::body_len([data[0], data[1]]);
    }
    if let Ok(frame) = tunnel::decode(data) {
        check_reencoding(&frame, Some(data));
    }
}

/// Encodes `frame`; the prefix must count the body, the body must decode
/// to `frame` (reason cut if long) and, when given and not cut, equal `body`.
fn check_reencoding(frame: &Frame, body: Option<&[u8]>) -> Vec<u8> {
    let wire = tunnel::encode(frame);
    let prefix = [wire[0], wire[1]];
    assert_eq!(tunnel::body_len(prefix), Ok(wire.len() - LEN_BYTES));
    let back = tunnel::decode(&wire[LEN_BYTES..]).expect("own encoding decodes");
    match frame {
        Frame::Error { code, reason } if reason.len() > MAX_REASON_BYTES => {
            let Frame::Error {
                code: back_code,
                reason: back_reason,
            } = &back
            else {
                panic!("an Error frame re-encoded as {back:?}");
            };
            assert_eq!(back_code, code);
            assert!(
                reason.starts_with(back_reason.as_str()) && back_reason.len() <= MAX_REASON_BYTES
            );
        }
        _ => {
            assert_eq!(&back, frame, "round trip changed the frame");
            if let Some(body) = body {
                assert_eq!(&wire[LEN_BYTES..], body, "re-encoding differs");
            }
        }
    }
    wire
}

/// A byte stream read by [`FrameReader`] as a socket delivers it: the first
/// input byte seeds the sizes of successive reads (1 to 256 bytes, and
/// "everything" when it is 0), the rest is the stream.
///
/// Checks: no panic; the frames and the final error are the same whatever
/// the read sizes (compared with reading all at once); frames come out in
/// order and re-encode to the stream's bytes they were read from.
pub fn tunnel_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = read_all(stream, 0);
    let split = read_all(stream, seed);
    assert_eq!(whole, split, "read sizes changed what was read");
    let (frames, _) = whole;
    let mut consumed = Vec::new();
    for frame in &frames {
        consumed.extend(check_reencoding(frame, None));
    }
    let exact = frames.iter().all(|f| match f {
        Frame::Error { reason, .. } => reason.len() <= MAX_REASON_BYTES,
        _ => true,
    });
    if exact {
        assert!(
            stream.starts_with(&consumed),
            "frames do not re-encode to the stream"
        );
    }
}

/// Every frame and the error that ended reading, as text (`TunnelError` has no `Eq`).
fn read_all(stream: &[u8], seed: u8) -> (Vec<Frame>, String) {
    let mut reader = Pieces {
        rest: stream,
        seed,
        turn: 0,
    };
    let mut frames = FrameReader::new();
    let mut out = Vec::new();
    // Each frame takes at least 3 bytes, so this bounds the loop.
    for _ in 0..=stream.len() {
        match frames.next(&mut reader).now_or_never() {
            Some(Ok(frame)) => out.push(frame),
            Some(Err(error)) => return (out, describe(&error)),
            None => panic!("FrameReader waited on a reader that is always ready"),
        }
    }
    panic!("FrameReader returned more frames than the stream can hold");
}

/// A UDP session's record stream (`u16 length | datagram`) read by
/// [`RecordReader`] as a socket delivers it; the first byte seeds the read
/// sizes as in [`tunnel_stream`].
///
/// Checks: no panic; the datagrams and the final error are the same whatever
/// the read sizes; no datagram exceeds [`MAX_DATAGRAM`]; the datagrams
/// re-encode to the start of the stream; the stream ends in `Closed` (the
/// bytes left are less than one record) or `Oversized` (the bytes left start
/// with a length over the limit), never in an I/O error.
pub fn tunnel_datagrams(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (whole, end) = read_records(stream, 0);
    assert_eq!(
        (whole.clone(), end.clone()),
        read_records(stream, seed),
        "read sizes changed what was read"
    );
    let mut encoded = Vec::new();
    for datagram in &whole {
        assert!(datagram.len() <= MAX_DATAGRAM, "a datagram over the limit");
        assert!(tunnel::encode_datagram(&mut encoded, datagram));
    }
    assert!(stream.starts_with(&encoded), "datagrams do not re-encode");
    let rest = &stream[encoded.len()..];
    let announced = rest
        .get(..2)
        .map(|prefix| usize::from(u16::from_be_bytes([prefix[0], prefix[1]])));
    match end.as_str() {
        "closed" => {
            assert!(announced.is_none_or(|len| len <= MAX_DATAGRAM && rest.len() < 2 + len))
        }
        _ => assert!(
            announced.is_some_and(|len| len > MAX_DATAGRAM),
            "ended: {end}"
        ),
    }
}

/// Every datagram and how reading ended (`closed` or the error's text).
fn read_records(stream: &[u8], seed: u8) -> (Vec<Vec<u8>>, String) {
    let mut reader = Pieces {
        rest: stream,
        seed,
        turn: 0,
    };
    let mut records = RecordReader::new(Vec::new());
    let mut out = Vec::new();
    // Each batch holds a record of at least 2 bytes, or ends reading.
    for _ in 0..=stream.len() {
        match records.next_batch(&mut reader).now_or_never() {
            Some(Ok(batch)) => out.extend(batch.map(<[u8]>::to_vec)),
            Some(Err(RecordError::Closed)) => return (out, "closed".into()),
            Some(Err(error)) => return (out, error.to_string()),
            None => panic!("RecordReader waited on a reader that is always ready"),
        }
    }
    panic!("RecordReader returned more batches than the stream can hold");
}

fn describe(error: &TunnelError) -> String {
    match error {
        TunnelError::Closed => "closed".into(),
        other => other.to_string(),
    }
}

/// An in-memory socket that is always ready and returns reads of varying size.
struct Pieces<'a> {
    rest: &'a [u8],
    seed: u8,
    turn: u8,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = match self.seed {
            0 => usize::MAX,
            seed => usize::from(seed.rotate_left(u32::from(self.turn)) | 1),
        };
        self.turn = self.turn.wrapping_add(1);
        let n = size.min(buf.remaining()).min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        buf.put_slice(head);
        self.rest = tail;
        Poll::Ready(Ok(()))
    }
}
