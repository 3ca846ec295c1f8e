//! A session's outbound side: a bounded frame queue drained into the
//! actix-ws `Session` by a writer future that runs inside the session actor.
//!
//! A frame goes straight into actix-ws's own channel when it has room (the
//! common case: no extra hop, no wake-up). Otherwise it waits in a `VecDeque`
//! (no allocation until needed) and the writer moves it on when actix-ws wakes
//! the actor. A queue at its limit means the client is not reading: the caller
//! treats that as a slow consumer. A close frame jumps the queue and ends the writer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use actix_ws::{CloseReason, Message};
use futures_util::Sink;

/// The queue is at its limit: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// How the writer finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterDone {
    /// The close frame was handed to actix-ws.
    Closed,
    /// The socket is gone; nothing more can be written.
    SocketGone,
    /// [`Outbound::finish`] was called and everything queued was handed over.
    Drained,
}

/// Bounded outbound queue plus the actix-ws session it drains into.
pub struct Outbound {
    ws: actix_ws::Session,
    queue: VecDeque<Message>,
    limit: usize,
    close: Option<CloseReason>,
    closing: bool,
    finishing: bool,
    waker: Option<Waker>,
}

impl Outbound {
    /// An empty queue of at most `limit` frames in front of `ws`.
    pub fn new(ws: actix_ws::Session, limit: usize) -> Self {
        Outbound {
            ws,
            queue: VecDeque::new(),
            limit,
            close: None,
            closing: false,
            finishing: false,
            waker: None,
        }
    }

    /// Whether a close has been requested.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Sends or queues a frame; refuses when the queue is at its limit.
    pub fn push(&mut self, message: Message) -> Result<(), QueueFull> {
        if self.closing {
            return Ok(());
        }
        if self.queue.is_empty() {
            if let Some(waker) = &self.waker {
                // Registers the actor's waker with actix-ws when it is full.
                let mut task = Context::from_waker(waker);
                match Pin::new(&mut self.ws).poll_ready(&mut task) {
                    Poll::Ready(Ok(())) => {
                        // An error means the socket is gone; the stream ends too.
                        let _ = Pin::new(&mut self.ws).start_send(message);
                        return Ok(());
                    }
                    // The socket is gone; the stream ends and stops the actor.
                    Poll::Ready(Err(_)) => return Ok(()),
                    Poll::Pending => {}
                }
            }
        }
        if self.queue.len() >= self.limit {
            return Err(QueueFull);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Queues a control frame (ping, pong) only if there is room; they are best effort.
    pub fn push_control(&mut self, message: Message) {
        let _ = self.push(message);
    }

    /// Requests a close frame, sent before anything still queued (which is dropped).
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.queue.clear();
        self.close = Some(reason);
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    /// Ends the outbound side without a close frame (the client's stream
    /// ended: RFC 6455 §7.1.5, code 1006 is never sent): frames already
    /// queued are still handed over, later ones are dropped, and the writer
    /// finishes with [`WriterDone::Drained`].
    pub fn finish(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.finishing = true;
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    /// Moves queued frames into actix-ws while it has room, and remembers the
    /// actor's waker for [`Outbound::push`]. Ready once the close
    /// frame is handed over or the socket is gone; Pending otherwise.
    pub fn poll_write(&mut self, task: &mut Context<'_>) -> Poll<WriterDone> {
        if !self
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(task.waker()))
        {
            self.waker = Some(task.waker().clone());
        }
        loop {
            if self.close.is_none() && self.queue.is_empty() {
                if self.finishing {
                    return Poll::Ready(WriterDone::Drained);
                }
                return Poll::Pending;
            }
            match Pin::new(&mut self.ws).poll_ready(task) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(WriterDone::SocketGone),
                Poll::Ready(Ok(())) => {}
            }
            let (frame, last) = match self.close.take() {
                Some(reason) => (Message::Close(Some(reason)), true),
                None => match self.queue.pop_front() {
                    Some(frame) => (frame, false),
                    None => continue,
                },
            };
            if Pin::new(&mut self.ws).start_send(frame).is_err() {
                return Poll::Ready(WriterDone::SocketGone);
            }
            if last {
                return Poll::Ready(WriterDone::Closed);
            }
        }
    }
}
