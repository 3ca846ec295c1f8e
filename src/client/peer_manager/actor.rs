//! The [`PeerManager`] actor: relay supervision, connections by peer, delivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::{PeerError, PeerEvent, PeerManagerConfig, PeerMessage};
use crate::client::connection::{
    self, Connection, ConnectionConfig, ConnectionError, ConnectionEvent, ConnectionEventKind,
    RelayFailed, Role, SetAnswer,
};
use crate::client::relay_client::{
    RelayClient, RelayClientError, RelayEvent, SendPeerConnection, Shutdown,
};
use crate::defaults;
use crate::protocol::{DescriptionType, PeerConnection};

/// One connection we hold.
pub(super) struct Peer {
    pub(super) addr: Addr<Connection>,
    pub(super) id: u64,
    offerer: bool,
    ready: bool,
}

/// Supervises a relay session and one [`Connection`] per peer; see the module docs.
pub struct PeerManager {
    pub(super) uuid: Uuid,
    pub(super) name: String,
    pub(super) config: PeerManagerConfig,
    pub(super) connection_config: Arc<ConnectionConfig>,
    pub(super) relay: Option<Addr<RelayClient>>,
    pub(super) registered: bool,
    /// The relay's final verdict once there is one (see `fail_for_good`);
    /// pending requests watch it so that they end at once.
    pub(super) verdict: watch::Sender<Option<RelayClientError>>,
    pub(super) relay_sessions: u64,
    /// Registrations the relay accepted (every `RelayEvent::Registered`).
    pub(super) registrations: u64,
    pub(super) peers: HashMap<Uuid, Peer>,
    /// Per peer, the first connection since the last `Flush`/`Close` of that
    /// peer that ended with unacknowledged data (one entry per peer at most).
    pub(super) lost: HashMap<Uuid, ConnectionError>,
    /// Connections being closed by `CloseConnection`, whose caller gets the
    /// flush's result (so their loss is not recorded in `lost` as well).
    pub(super) closing_ids: HashSet<u64>,
    pub(super) next_id: u64,
    pub(super) subscribers: Vec<Recipient<PeerMessage>>,
    pub(super) event_subscribers: Vec<Recipient<PeerEvent>>,
    pub(super) inbox: VecDeque<PeerMessage>,
    pub(super) waiters: VecDeque<oneshot::Sender<Result<PeerMessage, PeerError>>>,
    /// Descriptions made while the relay session is (re)connecting; sent on
    /// registration. Bounded by the connections' own connect timeouts.
    pub(super) unsent: Vec<PeerConnection>,
    pub(super) closing: bool,
    pub(super) log: String,
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
        config.relay.validate().map_err(PeerError::Relay)?;
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
            verdict: watch::Sender::new(None),
            relay_sessions: 0,
            registrations: 0,
            peers: HashMap::new(),
            lost: HashMap::new(),
            closing_ids: HashSet::new(),
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
            Err(error) => self.fail_for_good(error, ctx),
        }
    }

    /// The relay's final verdict, if it has given one.
    pub(super) fn relay_failed(&self) -> Option<RelayClientError> {
        self.verdict.borrow().clone()
    }

    /// Acts on a final verdict of the relay (4001, 4002, 4004, a refused
    /// registration): we are no longer registered and never will be again, so
    /// every connection ends (a ready one after flushing what was sent, see
    /// [`connection::Close`]), pending `Send`/`Connect`/`Recv` requests get
    /// [`PeerError::Relay`] at once (they watch `verdict`), and so does every
    /// later one. Subscribers get [`PeerEvent::RelayFailed`], then a
    /// [`PeerEvent::Disconnected`] per connection (for a ready one once its
    /// flush is over, with [`ConnectionError::Unacknowledged`] if it failed).
    pub(super) fn fail_for_good(&mut self, error: RelayClientError, ctx: &mut Context<Self>) {
        log::error!("{} relay session failed for good: {error}", self.log);
        self.registered = false;
        self.relay = None;
        self.unsent.clear();
        self.verdict.send_replace(Some(error.clone()));
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(PeerError::Relay(error.clone())));
        }
        self.emit(PeerEvent::RelayFailed(error.clone()));
        let reason = error.to_string();
        for (peer, entry) in self.peers.drain().collect::<Vec<_>>() {
            let relay_error = ConnectionError::Relay(reason.clone());
            if !entry.ready {
                entry.addr.do_send(RelayFailed(reason.clone()));
                self.emit(PeerEvent::Disconnected {
                    peer,
                    error: Some(relay_error),
                });
                continue;
            }
            // Its `Closed` event records a loss in `lost` for the next Flush.
            let closed = entry.addr.send(connection::Close);
            ctx.spawn(closed.into_actor(self).map(move |result, act, _ctx| {
                let error = match result {
                    Ok(Err(error @ ConnectionError::Unacknowledged { .. })) => error,
                    _ => relay_error,
                };
                act.emit(PeerEvent::Disconnected {
                    peer,
                    error: Some(error),
                });
            }));
        }
    }

    pub(super) fn emit(&mut self, event: PeerEvent) {
        self.event_subscribers.retain(|s| s.connected());
        for subscriber in &self.event_subscribers {
            subscriber.do_send(event.clone());
        }
    }

    pub(super) fn deliver(&mut self, message: PeerMessage) {
        self.subscribers.retain(|s| s.connected());
        if !self.subscribers.is_empty() {
            for subscriber in &self.subscribers {
                subscriber.do_send(message.clone());
            }
            return;
        }
        let mut message = message;
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(Ok(message)) {
                Ok(()) => return,
                Err(returned) => match returned {
                    Ok(returned) => message = returned,
                    Err(_) => return,
                },
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
    pub(super) fn connection_for(
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
        if let Some(error) = self.relay_failed() {
            return Err(PeerError::Relay(error));
        }
        if let Some(existing) = self.peers.get(&peer) {
            if existing.addr.connected() {
                return Ok(existing.addr.clone());
            }
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
        if let Some(error) = self.relay_failed() {
            self.fail_signal(&signal, error.to_string());
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

    /// Sends a description through the relay. When the session dropped
    /// meanwhile (`NotConnected`) or the relay client is gone (`Closed`: its
    /// `Failed` event follows), the description waits for the next
    /// registration like one made while reconnecting (a final verdict clears
    /// it and ends the connection); a full queue fails the connection.
    fn relay_signal(&mut self, signal: PeerConnection, ctx: &mut Context<Self>) {
        let (Some(relay), Some(entry)) = (self.relay.clone(), self.peers.get(&signal.peer_uuid))
        else {
            return;
        };
        let (id, registrations) = (entry.id, self.registrations);
        let request = relay.send(SendPeerConnection(signal.clone()));
        ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
            let error = match result {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(_) => RelayClientError::Closed,
            };
            let current = act.peers.get(&signal.peer_uuid).filter(|p| p.id == id);
            let Some(entry) = current else { return };
            match error {
                RelayClientError::NotConnected | RelayClientError::Closed => {
                    if act.registered && act.registrations != registrations {
                        // Registered again since: send on the new session.
                        act.relay_signal(signal, ctx);
                    } else {
                        log::info!("{} relay session dropped: holding a description", act.log);
                        act.unsent.push(signal);
                    }
                }
                other => entry.addr.do_send(RelayFailed(other.to_string())),
            }
        }));
    }

    pub(super) fn shut_down(&mut self) {
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
                self.registrations += 1;
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
                if error.is_final() {
                    self.fail_for_good(error, ctx);
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
        if let ConnectionEventKind::Closed(error) = &event.kind {
            let reported = self.closing_ids.remove(&event.id);
            if let Some(error @ ConnectionError::Unacknowledged { .. }) = error {
                // Whichever connection it was (replaced ones included), data
                // was lost (the connection logged it at warn).
                log::debug!("{} connection to {peer} ended: {error}", self.log);
                if !reported {
                    self.lost.entry(peer).or_insert_with(|| error.clone());
                }
            }
        }
        match event.kind {
            // Data is data, even from a connection that was just replaced.
            ConnectionEventKind::Message(payload) => self.deliver(PeerMessage { peer, payload }),
            _ if !current => {}
            ConnectionEventKind::LocalDescription {
                description_type,
                description,
            } => self.on_local_description(peer, description_type, description, ctx),
            ConnectionEventKind::Ready(route) => {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.ready = true;
                }
                self.emit(PeerEvent::Connected { peer, route });
            }
            ConnectionEventKind::Closed(error) => {
                self.peers.remove(&peer);
                self.emit(PeerEvent::Disconnected { peer, error });
            }
        }
    }
}
