//! An actor that forwards every message of one type to a channel the test
//! reads: the events of a `RelayClient`, `PeerManager` or `Connection`.

use actix::prelude::*;
use tokio::sync::mpsc;

/// Forwards every `M` it gets to its channel (dropped once the test stops reading).
pub struct Forwarder<M>(pub mpsc::UnboundedSender<M>);

impl<M: Unpin + 'static> Actor for Forwarder<M> {
    type Context = Context<Self>;
}

impl<M> Handler<M> for Forwarder<M>
where
    M: Message<Result = ()> + Unpin + 'static,
{
    type Result = ();
    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}
