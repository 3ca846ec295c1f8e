//! A session's outbound side: frames encoded by the session actor straight
//! into the buffer its HTTP response body hands to the connection.
//!
//! [`Outbound::new`] gives two halves that share one buffer on the worker
//! thread that runs both the session actor and its connection: the
//! [`Outbound`] the actor writes frames into (encoded at once with
//! actix-http's WebSocket codec, RFC 6455 §5) and the [`OutboundBody`] that
//! actix-http's HTTP/1 dispatcher polls as the 101 response's body. The
//! dispatcher takes everything encoded so far in one piece whenever its own
//! write buffer has room, so a client that does not read stops the taking:
//! frames then pile up here, and at `limit` untaken frames [`Outbound::push`]
//! refuses, which the caller treats as a slow consumer.
//!
//! This replaces actix-ws's `Session` (a 32-slot tokio channel and a response
//! body draining it) on the relay's outbound side: that channel's first block
//! of slots alone was ~2 KiB of heap per connection, the difference between
//! the relay's idle memory per client and ProxyStore's (issue 15,
//! BENCHMARKS.md "Idle memory at 2 000 and 19 500 clients"). Nothing is
//! allocated here while a client is idle: the buffer is handed over whole,
//! spare capacity included, and the next frame starts a new one.

use std::cell::RefCell;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder;
use actix_http::ws::{CloseReason, Codec, Message};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};

use crate::protocol::floor_char_boundary;

/// RFC 6455 §5.5: a control frame's payload is at most 125 bytes; a close
/// frame's is the 2-byte code and the reason, so the reason is at most 123.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The queue is at its limit: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// How the outbound side finished, as [`Outbound::poll_write`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterDone {
    /// The close frame is queued behind every frame queued before it.
    Closed,
    /// [`Outbound::finish`] was called and the connection is gone (its body
    /// was dropped) with frames untaken.
    SocketGone,
    /// [`Outbound::finish`] was called and the connection took every frame.
    Drained,
}

/// What the two halves share.
struct Shared {
    /// Encoded frames the connection has not taken yet.
    buf: BytesMut,
    /// How many frames `buf` holds.
    frames: usize,
    /// No frame will follow what `buf` holds: the body ends once it is taken.
    end: bool,
    /// The body was dropped: the connection is gone.
    gone: bool,
    /// Woken when `buf` gains a frame or `end` is set.
    body: Option<Waker>,
    /// Woken when the connection takes `buf` or drops the body.
    writer: Option<Waker>,
}

/// Stores `waker` in `slot` unless it already holds one that wakes the same task.
fn remember(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// The 101 response's body: the frames the session encoded since the last
/// poll, in one chunk. Ends after the close frame, after
/// [`Outbound::finish`], or when the session is dropped.
pub struct OutboundBody(Rc<RefCell<Shared>>);

impl MessageBody for OutboundBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        task: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut shared = self.0.borrow_mut();
        if !shared.buf.is_empty() {
            shared.frames = 0;
            let chunk = std::mem::take(&mut shared.buf).freeze();
            if let Some(writer) = &shared.writer {
                writer.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if shared.end {
            return Poll::Ready(None);
        }
        remember(&mut shared.body, task.waker());
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut shared = self.0.borrow_mut();
        shared.gone = true;
        if let Some(writer) = shared.writer.take() {
            writer.wake();
        }
    }
}

/// The session actor's half: a bounded queue of encoded frames.
pub struct Outbound {
    shared: Rc<RefCell<Shared>>,
    codec: Codec,
    limit: usize,
    closing: bool,
    finishing: bool,
}

impl Outbound {
    /// An outbound side that refuses frames once `limit` are queued and not
    /// yet taken by the connection, and the response body to answer the
    /// WebSocket handshake with. Both must stay on the thread that made them.
    pub fn new(limit: usize) -> (Self, OutboundBody) {
        let shared = Rc::new(RefCell::new(Shared {
            buf: BytesMut::new(),
            frames: 0,
            end: false,
            gone: false,
            body: None,
            writer: None,
        }));
        let outbound = Outbound {
            shared: Rc::clone(&shared),
            codec: Codec::new(),
            limit,
            closing: false,
            finishing: false,
        };
        (outbound, OutboundBody(shared))
    }

    /// Whether a close or finish has been requested.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Encodes `message` behind what is queued; dropped when the connection is gone.
    fn write(&mut self, message: Message) {
        let mut shared = self.shared.borrow_mut();
        if shared.gone {
            return;
        }
        // Encoding a server frame cannot fail (the codec's size limit applies
        // to decoding only); a frame it refused would be dropped, not half-written.
        if self.codec.encode(message, &mut shared.buf).is_ok() {
            shared.frames += 1;
        }
        if let Some(body) = &shared.body {
            body.wake_by_ref();
        }
    }

    /// Queues a frame; refuses when `limit` frames are queued and untaken.
    /// After a close or finish, frames are dropped silently.
    pub fn push(&mut self, message: Message) -> Result<(), QueueFull> {
        if self.closing {
            return Ok(());
        }
        if self.shared.borrow().frames >= self.limit {
            return Err(QueueFull);
        }
        self.write(message);
        Ok(())
    }

    /// Queues a control frame (ping, pong) only if there is room; they are best effort.
    pub fn push_control(&mut self, message: Message) {
        let _ = self.push(message);
    }

    /// Queues the close frame behind everything already queued (so an error
    /// answer sent just before still arrives) and ends the body after it.
    /// A reason longer than 123 bytes is cut at a character boundary
    /// (RFC 6455 §5.5); later frames are dropped.
    pub fn close(&mut self, mut reason: CloseReason) {
        if self.closing {
            return;
        }
        self.closing = true;
        if let Some(description) = reason.description.as_mut() {
            description.truncate(floor_char_boundary(description, MAX_CLOSE_REASON_BYTES));
        }
        self.write(Message::Close(Some(reason)));
        self.end();
    }

    /// Closes a client that is not reading (a slow consumer): the frames it
    /// has not taken are dropped, so the close frame goes next and the memory
    /// they held is freed at once instead of waiting on the client.
    pub fn abandon(&mut self, reason: CloseReason) {
        if self.closing {
            return;
        }
        {
            let mut shared = self.shared.borrow_mut();
            shared.buf = BytesMut::new();
            shared.frames = 0;
        }
        self.close(reason);
    }

    /// Ends the outbound side without a close frame (the client's stream
    /// ended: RFC 6455 §7.1.5, code 1006 is never sent): frames already
    /// queued are still handed over, later ones are dropped, and
    /// [`Outbound::poll_write`] reports [`WriterDone::Drained`] once the
    /// connection has taken them all.
    pub fn finish(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.finishing = true;
        self.end();
    }

    /// Marks the end of the frames and wakes both halves.
    fn end(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.end = true;
        if let Some(body) = &shared.body {
            body.wake_by_ref();
        }
        if let Some(writer) = &shared.writer {
            writer.wake_by_ref();
        }
    }

    /// Ready once the outbound side is done: the close frame is queued, or
    /// after [`Outbound::finish`] the connection took every frame or is
    /// gone. Pending otherwise, with the caller's waker kept to be woken when
    /// that changes.
    ///
    /// A connection that goes away before then is not reported: its input
    /// ends too, and the frames the client sent before are still handled
    /// (`tests/relay_stream_end.rs`); the session finishes then.
    pub fn poll_write(&mut self, task: &mut Context<'_>) -> Poll<WriterDone> {
        let mut shared = self.shared.borrow_mut();
        remember(&mut shared.writer, task.waker());
        if self.closing && !self.finishing {
            Poll::Ready(WriterDone::Closed)
        } else if self.finishing && shared.gone {
            Poll::Ready(WriterDone::SocketGone)
        } else if self.finishing && shared.buf.is_empty() {
            Poll::Ready(WriterDone::Drained)
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Outbound {
    /// The session is gone: the body ends once the connection has taken
    /// what is queued.
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests;
