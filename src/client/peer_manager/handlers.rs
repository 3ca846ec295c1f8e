//! The [`PeerManager`]'s handlers of the application's requests.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::actor::PeerManager;
use super::{
    Close, CloseConnection, Connect, Flush, ManagerStatus, PeerError, PeerEvent, PeerMessage, Recv,
    Send, Status, Subscribe, SubscribeEvents,
};
use crate::client::connection::{self, Connection, ConnectionError, SendMessage, WaitReady};
use crate::client::relay_client::{RelayClientError, Shutdown};
use crate::defaults;

/// Runs `request` unless the relay gives its final verdict first, which then
/// is the result ([`PeerError::Relay`]): a request waiting for a connection
/// that can no longer be made ends at once instead of at its timeout. A
/// connection error that comes with the verdict (the verdict closes every
/// connection) is reported as the verdict too.
async fn unless_verdict<T>(
    verdict: watch::Receiver<Option<RelayClientError>>,
    request: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    let mut watching = verdict.clone();
    let decided = async move {
        if let Ok(value) = watching.wait_for(Option::is_some).await {
            if let Some(error) = value.clone() {
                return error;
            }
        }
        // The manager is gone; the request ends on its own.
        std::future::pending().await
    };
    let result = tokio::select! {
        biased;
        result = request => result,
        error = decided => return Err(PeerError::Relay(error)),
    };
    let current = verdict.borrow().clone();
    match (result, current) {
        (Err(PeerError::Connection { .. }), Some(error)) => Err(PeerError::Relay(error)),
        (result, _) => result,
    }
}

/// The current connection to a peer, opened if needed (used to retry a send
/// whose connection was replaced while it waited).
#[derive(Message)]
#[rtype(result = "Result<Addr<Connection>, PeerError>")]
struct ConnectionFor(Uuid);

impl Handler<ConnectionFor> for PeerManager {
    type Result = Result<Addr<Connection>, PeerError>;

    fn handle(&mut self, msg: ConnectionFor, ctx: &mut Context<Self>) -> Self::Result {
        self.connection_for(msg.0, ctx)
    }
}

impl Handler<Send> for PeerManager {
    type Result = ResponseFuture<Result<(), PeerError>>;

    fn handle(&mut self, msg: Send, ctx: &mut Context<Self>) -> Self::Result {
        let first = self.connection_for(msg.peer, ctx);
        let manager = ctx.address();
        let peer = msg.peer;
        let verdict = self.verdict.subscribe();
        Box::pin(unless_verdict(verdict, async move {
            let mut addr = first?;
            let mut retried = false;
            loop {
                let error = match addr.send(SendMessage(msg.payload.clone())).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(error)) => error,
                    Err(_) => ConnectionError::Closed("connection stopped".into()),
                };
                // A connection replaced while we waited (glare, a new offer): one retry
                // on its successor.
                if !retried && matches!(error, ConnectionError::Closed(_)) {
                    if let Ok(Ok(next)) = manager.send(ConnectionFor(peer)).await {
                        if next != addr {
                            retried = true;
                            addr = next;
                            continue;
                        }
                    }
                }
                return Err(PeerError::Connection { peer, error });
            }
        }))
    }
}

impl Handler<Connect> for PeerManager {
    type Result = ResponseFuture<Result<(), PeerError>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.connection_for(msg.0, ctx);
        let timeout = self.connection_config.connect_timeout;
        let peer = msg.0;
        let verdict = self.verdict.subscribe();
        Box::pin(unless_verdict(verdict, async move {
            let result = addr?.send(WaitReady(timeout)).await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(PeerError::Connection { peer, error }),
                Err(_) => Err(PeerError::Connection {
                    peer,
                    error: ConnectionError::Closed("connection stopped".into()),
                }),
            }
        }))
    }
}

impl Handler<Recv> for PeerManager {
    type Result = ResponseFuture<Result<PeerMessage, PeerError>>;

    fn handle(&mut self, msg: Recv, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(message) = self.inbox.pop_front() {
            return Box::pin(async move { Ok(message) });
        }
        if let Some(error) = self.relay_failed() {
            // Messages that arrived before the verdict were returned above.
            return Box::pin(async { Err(PeerError::Relay(error)) });
        }
        if self.closing {
            return Box::pin(async { Err(PeerError::Closed) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(tx);
        Box::pin(async move {
            match msg.0 {
                Some(limit) => match tokio::time::timeout(limit, rx).await {
                    Ok(result) => result.unwrap_or(Err(PeerError::Closed)),
                    Err(_) => Err(PeerError::RecvTimeout(limit)),
                },
                None => rx.await.unwrap_or(Err(PeerError::Closed)),
            }
        })
    }
}

impl Handler<Subscribe> for PeerManager {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        for message in self.inbox.drain(..) {
            msg.0.do_send(message);
        }
        self.subscribers.push(msg.0);
    }
}

impl Handler<SubscribeEvents> for PeerManager {
    type Result = ();

    fn handle(&mut self, msg: SubscribeEvents, _ctx: &mut Context<Self>) {
        self.event_subscribers.push(msg.0);
    }
}

/// A connection's answer to a flush or close, as the manager reports it.
fn flush_result(
    peer: Uuid,
    result: Result<Result<(), ConnectionError>, MailboxError>,
) -> Result<(), PeerError> {
    let error = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(_) => ConnectionError::Closed("connection stopped".into()),
    };
    Err(PeerError::Connection { peer, error })
}

impl Handler<Flush> for PeerManager {
    type Result = ResponseFuture<Result<(), PeerError>>;

    fn handle(&mut self, msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        let peer = msg.0;
        if let Some(error) = self.lost.remove(&peer) {
            return Box::pin(async move { Err(PeerError::Connection { peer, error }) });
        }
        let Some(addr) = self.peers.get(&peer).map(|p| p.addr.clone()) else {
            return Box::pin(async { Ok(()) });
        };
        let stall = Duration::from_millis(defaults::PEER_FLUSH_STALL_MS);
        Box::pin(async move { flush_result(peer, addr.send(connection::Flush(stall)).await) })
    }
}

impl Handler<CloseConnection> for PeerManager {
    type Result = ResponseActFuture<Self, Result<(), PeerError>>;

    fn handle(&mut self, msg: CloseConnection, _ctx: &mut Context<Self>) -> Self::Result {
        let peer = msg.0;
        let lost = self.lost.remove(&peer);
        let Some(entry) = self.peers.remove(&peer) else {
            let result = lost.map_or(Ok(()), |error| Err(PeerError::Connection { peer, error }));
            return Box::pin(actix::fut::ready(result));
        };
        self.closing_ids.insert(entry.id);
        let closed = entry.addr.send(connection::Close);
        Box::pin(closed.into_actor(self).map(move |result, act, _ctx| {
            let result = match (lost, flush_result(peer, result)) {
                (Some(error), _) => Err(PeerError::Connection { peer, error }),
                (None, result) => result,
            };
            let error = match &result {
                Err(PeerError::Connection { error, .. }) => Some(error.clone()),
                _ => None,
            };
            act.emit(PeerEvent::Disconnected { peer, error });
            result
        }))
    }
}

impl Handler<Close> for PeerManager {
    type Result = ResponseActFuture<Self, Result<(), PeerError>>;

    fn handle(&mut self, _msg: Close, _ctx: &mut Context<Self>) -> Self::Result {
        log::info!("{} closing", self.log);
        let connections: Vec<_> = self
            .peers
            .drain()
            .map(|(peer, entry)| (peer, entry.addr))
            .collect();
        let relay = self.relay.take();
        self.shut_down();
        let closes = futures_util::future::join_all(
            connections
                .into_iter()
                .map(|(peer, addr)| async move { (peer, addr.send(connection::Close).await) }),
        );
        // Resolves once the relay client stopped: its close handshake is over.
        let relay_closed = async move {
            if let Some(relay) = relay {
                let _ = relay.send(Shutdown).await;
            }
        };
        let closed = async move { tokio::join!(closes, relay_closed).0 };
        Box::pin(closed.into_actor(self).map(|results, act, ctx| {
            ctx.stop();
            let mut failed: BTreeMap<Uuid, ConnectionError> = act.lost.drain().collect();
            for (peer, result) in results {
                // A connection that had stopped already reported any loss in
                // its `Closed` event, recorded in `lost` above.
                if let Ok(Err(error)) = result {
                    failed.entry(peer).or_insert(error);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            let errors = failed
                .into_iter()
                .map(|(peer, error)| PeerError::Connection { peer, error })
                .collect();
            Err(PeerError::Undelivered(errors))
        }))
    }
}

impl Handler<Status> for PeerManager {
    type Result = ManagerStatus;

    fn handle(&mut self, _msg: Status, _ctx: &mut Context<Self>) -> ManagerStatus {
        ManagerStatus {
            uuid: self.uuid,
            name: self.name.clone(),
            registered: self.registered,
            peers: self.peers.keys().copied().collect(),
            relay_sessions: self.relay_sessions,
        }
    }
}
