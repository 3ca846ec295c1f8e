//! How a [`Connection`] winds down: [`Flush`] (wait until the peer
//! acknowledged what was queued) and [`Close`] (flush, linger for the peer's
//! last acknowledgement, then end with the flush's result).

use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::channels::Outgoing;
use super::{Close, Connection, ConnectionError, Flush};
use crate::defaults;

impl Connection {
    /// A future that waits until the messages queued so far are handed over
    /// and the peer acknowledged them (see [`Flush`]).
    fn flushed(
        &self,
        stall: Duration,
    ) -> impl std::future::Future<Output = Result<(), ConnectionError>> {
        let queue = self.sender.clone();
        let channels: Vec<_> = self
            .channels
            .iter()
            .enumerate()
            .filter_map(|(index, channel)| Some((index, channel.clone()?)))
            .collect();
        let acks = self.acks.clone();
        let handed_over = async move {
            if let Some(queue) = queue {
                let (reached, barrier) = oneshot::channel();
                // A closed queue or a dropped barrier: the sender stopped, and
                // what it had not handed over failed its own `SendMessage`.
                if queue.send(Outgoing::Barrier(reached)).await.is_ok() {
                    let _ = barrier.await;
                }
            }
        };
        async move { acks.flush(channels, stall, handed_over).await }
    }
}

impl Handler<Flush> for Connection {
    type Result = ResponseFuture<Result<(), ConnectionError>>;

    fn handle(&mut self, msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.flushed(msg.0))
    }
}

/// Ends a closing connection with its flush's result.
#[derive(Message)]
#[rtype(result = "()")]
struct Closed(Result<(), ConnectionError>);

impl Handler<Closed> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Closed, ctx: &mut Context<Self>) {
        self.end(msg.0.err(), ctx);
    }
}

impl Handler<Close> for Connection {
    type Result = ResponseFuture<Result<(), ConnectionError>>;

    /// Flushes (bounded by progress), then ends the connection; the flush
    /// runs apart from the actor so that its result survives the connection
    /// failing meanwhile.
    fn handle(&mut self, _msg: Close, ctx: &mut Context<Self>) -> Self::Result {
        let flushed = self.flushed(Duration::from_millis(defaults::PEER_FLUSH_STALL_MS));
        self.closing = true;
        self.sender = None;
        let linger = self.last_received.map(|at| {
            let until = at + Duration::from_millis(defaults::PEER_CLOSE_ACK_LINGER_MS);
            until.saturating_duration_since(Instant::now())
        });
        let addr = ctx.address();
        Box::pin(async move {
            let (result, ()) = tokio::join!(flushed, async {
                if let Some(linger) = linger {
                    tokio::time::sleep(linger).await;
                }
            });
            let _ = addr.send(Closed(result.clone())).await;
            result
        })
    }
}
