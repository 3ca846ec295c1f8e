//! The [`PeerManager`] actor: relay supervision, connections by peer, delivery.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Close, CloseConnection, Connect, ManagerStatus, PeerError, PeerEvent, PeerManagerConfig,
    PeerMessage, Recv, Send, Status, Subscribe, SubscribeEvents,
};
use crate::client::connection::{
    self, Connection, ConnectionConfig, ConnectionError, ConnectionEvent, ConnectionEventKind,
    RelayFailed, Role, SendMessage, SetAnswer, WaitReady,
};
use crate::client::relay_client::{
    RelayClient, RelayClientError, RelayEvent, SendPeerConnection, Shutdown,
};
use crate::defaults;
use crate::protocol::{DescriptionType, PeerConnection};

/// One connection we hold.
struct Peer {
    addr: Addr<Connection>,
    id: u64,
    offerer: bool,
    ready: bool,
}

/// Supervises a relay session and one [`Connection`] per peer; see the module docs.
pub struct PeerManager {
    uuid: Uuid,
    name: String,
    config: PeerManagerConfig,
    connection_config: Arc<ConnectionConfig>,
    relay: Option<Addr<RelayClient>>,
    registered: bool,
    relay_failed: Option<RelayClientError>,
    relay_sessions: u64,
    peers: HashMap<Uuid, Peer>,
    next_id: u64,
    subscribers: Vec<Recipient<PeerMessage>>,
    event_subscribers: Vec<Recipient<PeerEvent>>,
    inbox: VecDeque<PeerMessage>,
    waiters: VecDeque<oneshot::Sender<PeerMessage>>,
    /// Descriptions made while the relay session is (re)connecting; sent on
    /// registration. Bounded by the connections' own connect timeouts.
    unsent: Vec<PeerConnection>,
    closing: bool,
    log: String,
}

impl PeerManager {
    /// Checks the settings and fixes our UUID and name (so that a restarted
    /// relay session registers under the same identity). Nothing connects
    /// until the actor is started.
    pub fn new(mut config: PeerManagerConfig) -> Result<Self, PeerError> {
        config
            .connection
            .validate()
            .map_err(|e| PeerError::Config(e.to_string()))?;
        let url = config.relay.url.as_str();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(PeerError::Relay(RelayClientError::InvalidUrl {
                url: url.to_owned(),
                reason: "the scheme must be ws:// or wss://".into(),
            }));
        }
        let uuid = *config.relay.uuid.get_or_insert_with(Uuid::new_v4);
        let name = config
            .relay
            .name
            .get_or_insert_with(|| {
                hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "switchboard".into())
            })
            .clone();
        Ok(PeerManager {
            uuid,
            name,
            connection_config: Arc::new(config.connection.clone()),
            config,
            relay: None,
            registered: false,
            relay_failed: None,
            relay_sessions: 0,
            peers: HashMap::new(),
            next_id: 0,
            subscribers: Vec::new(),
            event_subscribers: Vec::new(),
            inbox: VecDeque::new(),
            waiters: VecDeque::new(),
            unsent: Vec::new(),
            closing: false,
            log: format!("[peer-manager {uuid}]"),
        })
    }

    /// The UUID this manager registers under.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    fn start_relay(&mut self, ctx: &mut Context<Self>) {
        match RelayClient::new(self.config.relay.clone(), ctx.address().recipient()) {
            Ok(client) => {
                self.relay_sessions += 1;
                self.relay = Some(client.start());
            }
            Err(error) => {
                log::error!("{} relay client: {error}", self.log);
                self.relay_failed = Some(error);
            }
        }
    }

    fn emit(&mut self, event: PeerEvent) {
        self.event_subscribers.retain(|s| s.connected());
        for subscriber in &self.event_subscribers {
            subscriber.do_send(event.clone());
        }
    }

    fn deliver(&mut self, message: PeerMessage) {
        self.subscribers.retain(|s| s.connected());
        if !self.subscribers.is_empty() {
            for subscriber in &self.subscribers {
                subscriber.do_send(message.clone());
            }
            return;
        }
        let mut message = message;
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(message) {
                Ok(()) => return,
                Err(returned) => message = returned,
            }
        }
        if self.inbox.len() >= self.config.recv_queue {
            if let Some(dropped) = self.inbox.pop_front() {
                log::warn!(
                    "{} inbox full ({}): dropped the oldest message, from {}",
                    self.log,
                    self.config.recv_queue,
                    dropped.peer
                );
            }
        }
        self.inbox.push_back(message);
    }

    /// The connection to `peer`, opening one as offerer if there is none.
    fn connection_for(
        &mut self,
        peer: Uuid,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<Connection>, PeerError> {
        if self.closing {
            return Err(PeerError::Closed);
        }
        if peer == self.uuid {
            return Err(PeerError::SelfSend(peer));
        }
        if let Some(existing) = self.peers.get(&peer) {
            if existing.addr.connected() {
                return Ok(existing.addr.clone());
            }
        }
        if let Some(error) = &self.relay_failed {
            return Err(PeerError::Relay(error.clone()));
        }
        log::info!("{} connecting to {peer}", self.log);
        Ok(self.open(peer, Role::Offerer, ctx))
    }

    fn open(&mut self, peer: Uuid, role: Role, ctx: &mut Context<Self>) -> Addr<Connection> {
        self.next_id += 1;
        let id = self.next_id;
        let offerer = matches!(role, Role::Offerer);
        let addr = Connection::new(
            peer,
            id,
            role,
            self.connection_config.clone(),
            ctx.address().recipient(),
        )
        .start();
        let old = self.peers.insert(
            peer,
            Peer {
                addr: addr.clone(),
                id,
                offerer,
                ready: false,
            },
        );
        if let Some(old) = old {
            old.addr.do_send(connection::Close);
        }
        addr
    }

    fn on_signal(&mut self, message: PeerConnection, ctx: &mut Context<Self>) {
        if let Some(error) = message.error {
            // The relay bounced one of our descriptions (unknown peer, ...).
            let target = if message.source_uuid == self.uuid {
                message.peer_uuid
            } else {
                message.source_uuid
            };
            log::warn!("{} relay could not reach {target}: {error}", self.log);
            if let Some(peer) = self.peers.get(&target) {
                peer.addr.do_send(RelayFailed(error));
            }
            return;
        }
        let source = message.source_uuid;
        if message.peer_uuid != self.uuid {
            log::warn!(
                "{} ignored a description addressed to {}",
                self.log,
                message.peer_uuid
            );
            return;
        }
        match message.description_type {
            DescriptionType::Offer => self.on_offer(source, message.description, ctx),
            DescriptionType::Answer => match self.peers.get(&source) {
                Some(peer) if peer.offerer && !peer.ready => {
                    peer.addr.do_send(SetAnswer(message.description));
                }
                _ => log::warn!("{} ignored an unexpected answer from {source}", self.log),
            },
        }
    }

    fn on_offer(&mut self, source: Uuid, offer: String, ctx: &mut Context<Self>) {
        if let Some(existing) = self.peers.get(&source) {
            if existing.offerer && !existing.ready && self.uuid < source {
                log::info!(
                    "{} glare with {source}: our offer stands (lower UUID)",
                    self.log
                );
                return;
            }
            log::info!(
                "{} offer from {source} replaces the current connection",
                self.log
            );
        } else {
            log::info!("{} offer from {source}", self.log);
        }
        self.open(source, Role::Answerer { offer }, ctx);
    }

    fn on_local_description(
        &mut self,
        peer: Uuid,
        description_type: DescriptionType,
        description: String,
        ctx: &mut Context<Self>,
    ) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        let signal = PeerConnection {
            source_uuid: self.uuid,
            source_name: self.name.clone(),
            peer_uuid: peer,
            description_type,
            description,
            error: None,
        };
        if let Some(error) = &self.relay_failed {
            let reason = error.to_string();
            self.fail_signal(&signal, reason);
        } else if self.registered {
            self.relay_signal(signal, ctx);
        } else {
            log::info!(
                "{} relay not registered yet: holding the description for {peer}",
                self.log
            );
            self.unsent.push(signal);
        }
    }

    /// Fails the connection a description belonged to.
    fn fail_signal(&self, signal: &PeerConnection, reason: String) {
        if let Some(entry) = self.peers.get(&signal.peer_uuid) {
            entry.addr.do_send(RelayFailed(reason));
        }
    }

    /// Sends a description through the relay; a refusal fails its connection.
    fn relay_signal(&mut self, signal: PeerConnection, ctx: &mut Context<Self>) {
        let (Some(relay), Some(entry)) = (self.relay.clone(), self.peers.get(&signal.peer_uuid))
        else {
            return;
        };
        let connection = entry.addr.clone();
        ctx.spawn(
            async move {
                let result = match relay.send(SendPeerConnection(signal)).await {
                    Ok(result) => result,
                    Err(_) => Err(RelayClientError::Closed),
                };
                if let Err(error) = result {
                    connection.do_send(RelayFailed(error.to_string()));
                }
            }
            .into_actor(self),
        );
    }

    fn shut_down(&mut self) {
        self.closing = true;
        for (_, peer) in self.peers.drain() {
            peer.addr.do_send(connection::Close);
        }
        if let Some(relay) = self.relay.take() {
            relay.do_send(Shutdown);
        }
        self.waiters.clear();
    }
}

impl Actor for PeerManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        log::info!("{} starting ({})", self.log, self.config.relay.url);
        self.start_relay(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.shut_down();
    }
}

impl Handler<RelayEvent> for PeerManager {
    type Result = ();

    fn handle(&mut self, event: RelayEvent, ctx: &mut Context<Self>) {
        match event {
            RelayEvent::Registered { uuid, .. } => {
                self.registered = true;
                for signal in std::mem::take(&mut self.unsent) {
                    self.relay_signal(signal, ctx);
                }
                self.emit(PeerEvent::Registered { uuid });
            }
            RelayEvent::Peer(message) => self.on_signal(message, ctx),
            RelayEvent::Disconnected { reason, .. } => {
                self.registered = false;
                self.emit(PeerEvent::RelayLost { reason });
            }
            RelayEvent::Failed(error) => {
                self.registered = false;
                self.relay = None;
                if self.closing {
                    return;
                }
                if matches!(
                    error,
                    RelayClientError::Rejected { .. } | RelayClientError::InvalidUrl { .. }
                ) {
                    log::error!("{} relay session failed for good: {error}", self.log);
                    for signal in std::mem::take(&mut self.unsent) {
                        self.fail_signal(&signal, error.to_string());
                    }
                    self.relay_failed = Some(error.clone());
                    self.emit(PeerEvent::RelayFailed(error));
                    return;
                }
                log::warn!(
                    "{} relay session stopped ({error}); restarting it",
                    self.log
                );
                self.emit(PeerEvent::RelayLost {
                    reason: error.to_string(),
                });
                let delay = Duration::from_millis(defaults::PEER_RELAY_RESTART_MS);
                ctx.run_later(delay, |act, ctx| {
                    if !act.closing && act.relay.is_none() {
                        act.start_relay(ctx);
                    }
                });
            }
        }
    }
}

impl Handler<ConnectionEvent> for PeerManager {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, ctx: &mut Context<Self>) {
        let peer = event.peer;
        let current = self.peers.get(&peer).is_some_and(|p| p.id == event.id);
        match event.kind {
            // Data is data, even from a connection that was just replaced.
            ConnectionEventKind::Message(payload) => self.deliver(PeerMessage { peer, payload }),
            _ if !current => {}
            ConnectionEventKind::LocalDescription {
                description_type,
                description,
            } => self.on_local_description(peer, description_type, description, ctx),
            ConnectionEventKind::Ready => {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.ready = true;
                }
                self.emit(PeerEvent::Connected { peer });
            }
            ConnectionEventKind::Closed(error) => {
                self.peers.remove(&peer);
                self.emit(PeerEvent::Disconnected { peer, error });
            }
        }
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
        Box::pin(async move {
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
        })
    }
}

impl Handler<Connect> for PeerManager {
    type Result = ResponseFuture<Result<(), PeerError>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.connection_for(msg.0, ctx);
        let timeout = self.connection_config.connect_timeout;
        let peer = msg.0;
        Box::pin(async move {
            let result = addr?.send(WaitReady(timeout)).await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(PeerError::Connection { peer, error }),
                Err(_) => Err(PeerError::Connection {
                    peer,
                    error: ConnectionError::Closed("connection stopped".into()),
                }),
            }
        })
    }
}

impl Handler<Recv> for PeerManager {
    type Result = ResponseFuture<Result<PeerMessage, PeerError>>;

    fn handle(&mut self, msg: Recv, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(message) = self.inbox.pop_front() {
            return Box::pin(async move { Ok(message) });
        }
        if self.closing {
            return Box::pin(async { Err(PeerError::Closed) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(tx);
        Box::pin(async move {
            match msg.0 {
                Some(limit) => match tokio::time::timeout(limit, rx).await {
                    Ok(result) => result.map_err(|_| PeerError::Closed),
                    Err(_) => Err(PeerError::RecvTimeout(limit)),
                },
                None => rx.await.map_err(|_| PeerError::Closed),
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

impl Handler<CloseConnection> for PeerManager {
    type Result = ();

    fn handle(&mut self, msg: CloseConnection, _ctx: &mut Context<Self>) {
        if let Some(peer) = self.peers.remove(&msg.0) {
            peer.addr.do_send(connection::Close);
            self.emit(PeerEvent::Disconnected {
                peer: msg.0,
                error: None,
            });
        }
    }
}

impl Handler<Close> for PeerManager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Close, _ctx: &mut Context<Self>) -> Self::Result {
        log::info!("{} closing", self.log);
        let connections: Vec<_> = self.peers.drain().map(|(_, peer)| peer.addr).collect();
        self.shut_down();
        let closes = futures_util::future::join_all(
            connections.iter().map(|addr| addr.send(connection::Close)),
        );
        Box::pin(closes.into_actor(self).map(|_, _, ctx| ctx.stop()))
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
