//! The Registry: the one actor per process that owns "who is registered where".
//!
//! It maps every registered UUID to the session holding it, tracks every open
//! session (registered or not) so shutdown can reach them all, forwards peer
//! connection requests, and echoes forwarding errors back to the sender.
//! Sessions are held as `Recipient<ToSession>`, never as concrete types.
//! What it does across nodes (`[cluster] enabled`) is in `across.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use uuid::Uuid;

use super::cluster::{self, ClusterSlot};
use super::messages::*;
use crate::admin::metrics::Metrics;
use crate::defaults;
use crate::protocol::close;

mod across;

struct SessionEntry {
    recipient: Recipient<ToSession>,
    remote: Option<SocketAddr>,
    connected_since: SystemTime,
    uuids: Vec<Uuid>,
    /// Set once the registry has told the session to close; later deliveries are dropped.
    closing: bool,
}

struct Registration {
    session: SessionId,
    name: String,
    user: User,
    forwarded: u64,
}

/// The registry actor. Start exactly one per process, before the HTTP server.
pub struct Registry {
    sessions: HashMap<SessionId, SessionEntry>,
    registrations: HashMap<Uuid, Registration>,
    metrics: Arc<Metrics>,
    /// The cluster engine, once the node attached one.
    cluster: ClusterSlot,
}

impl Registry {
    /// A registry reporting to `metrics`, working across nodes once
    /// `cluster` holds an engine.
    pub fn new(metrics: Arc<Metrics>, cluster: ClusterSlot) -> Self {
        Registry {
            sessions: HashMap::new(),
            registrations: HashMap::new(),
            metrics,
            cluster,
        }
    }

    fn update_gauges(&self) {
        self.metrics.connected.set(self.sessions.len() as i64);
        self.metrics.registered.set(self.registrations.len() as i64);
    }

    /// Sends `message` to a session. Deliveries respect the session's bounded
    /// mailbox: a session that cannot even take them into its mailbox is a slow
    /// consumer and is told to close (control messages bypass the bound).
    fn tell(&mut self, session: SessionId, message: ToSession) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if entry.closing {
            return;
        }
        if let ToSession::Close { .. } = message {
            entry.closing = true;
            entry.recipient.do_send(message);
            return;
        }
        match entry.recipient.try_send(message) {
            Ok(()) | Err(SendError::Closed(_)) => {}
            Err(SendError::Full(_)) => {
                log::warn!("[session {session}] mailbox full: slow consumer, disconnecting");
                entry.closing = true;
                entry.recipient.do_send(ToSession::Close {
                    code: close::SLOW_CONSUMER,
                    reason: close::REASON_SLOW_CONSUMER,
                });
            }
        }
    }

    fn echo_error(&mut self, msg: Forward, error: String) {
        self.metrics.forward_errors.inc();
        let text = cluster::echo_text(msg.request, error);
        self.tell(msg.session, ToSession::Deliver(text));
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded: sessions that find it full wait (and stop reading their sockets).
        ctx.set_mailbox_capacity(defaults::REGISTRY_MAILBOX);
        log::debug!("registry started");
    }
}

impl Handler<Connect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.sessions.insert(
            msg.session,
            SessionEntry {
                recipient: msg.recipient,
                remote: msg.remote,
                connected_since: SystemTime::now(),
                uuids: Vec::new(),
                closing: false,
            },
        );
        self.update_gauges();
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        if let Some(entry) = self.sessions.remove(&msg.session) {
            let mut gone = Vec::new();
            for uuid in entry.uuids {
                // Only remove registrations this session still holds: a takeover
                // may already have moved the UUID to a newer session.
                if self
                    .registrations
                    .get(&uuid)
                    .is_some_and(|r| r.session == msg.session)
                {
                    self.registrations.remove(&uuid);
                    log::info!("[{uuid}] unregistered (session {} closed)", msg.session);
                    gone.push(uuid);
                }
            }
            if let Some(link) = self.cluster.get() {
                if !gone.is_empty() {
                    cluster::unregister(link, msg.session, gone);
                }
            }
        }
        self.update_gauges();
    }
}

impl Registry {
    /// Registers on this node alone (the rules of one node).
    fn register_local(&mut self, msg: Register) -> Result<(), RegisterError> {
        if !self.sessions.contains_key(&msg.session) {
            return Err(RegisterError::SessionGone);
        }
        if let Some(existing) = self.registrations.get(&msg.uuid) {
            if existing.user != msg.user {
                return Err(RegisterError::OwnedByAnotherUser(msg.uuid));
            }
            if existing.session != msg.session {
                let old = existing.session;
                log::info!(
                    "[{}] registered again on session {}; closing older session {old} with 4004",
                    msg.uuid,
                    msg.session
                );
                if let Some(entry) = self.sessions.get_mut(&old) {
                    entry.uuids.retain(|u| *u != msg.uuid);
                }
                self.metrics.takeovers.inc();
                self.tell(
                    old,
                    ToSession::Close {
                        code: close::REPLACED,
                        reason: close::REASON_REPLACED,
                    },
                );
            }
        }
        if let Some(entry) = self.sessions.get_mut(&msg.session) {
            if !entry.uuids.contains(&msg.uuid) {
                entry.uuids.push(msg.uuid);
            }
        }
        let forwarded = self
            .registrations
            .get(&msg.uuid)
            .filter(|r| r.session == msg.session)
            .map_or(0, |r| r.forwarded);
        self.registrations.insert(
            msg.uuid,
            Registration {
                session: msg.session,
                name: msg.name,
                user: msg.user,
                forwarded,
            },
        );
        self.metrics.registrations.inc();
        self.update_gauges();
        Ok(())
    }
}

impl Handler<Forward> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Forward, _: &mut Self::Context) {
        let source = msg.request.source_uuid;
        let peer = msg.request.peer_uuid;
        let user = match self.registrations.get(&source) {
            Some(reg) if reg.session == msg.session => reg.user.clone(),
            // The source registration moved to another session (takeover) and
            // this session is being closed; drop the message.
            _ => return,
        };
        let target = match self.registrations.get(&peer) {
            None if self.cluster.get().is_some() => return self.forward_remote(msg, user),
            None => {
                log::warn!("[{source}] cannot forward to unknown peer {peer}");
                return self.echo_error(msg, cluster::unknown_peer(peer));
            }
            Some(target) if target.user != user => {
                log::warn!("[{source}] refused forward to peer {peer} owned by another user");
                return self.echo_error(msg, cluster::other_user(peer));
            }
            Some(target) => target.session,
        };
        log::debug!(
            "[{source}] forwarding {} to {peer}",
            msg.request.description_type.as_str()
        );
        self.tell(target, ToSession::Deliver(msg.text));
        self.metrics.forwarded.inc();
        if let Some(reg) = self.registrations.get_mut(&source) {
            reg.forwarded += 1;
        }
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) -> usize {
        for entry in self.sessions.values() {
            entry.recipient.do_send(ToSession::Close {
                code: msg.code,
                reason: msg.reason,
            });
        }
        self.sessions.len()
    }
}

impl Handler<ListClients> for Registry {
    type Result = MessageResult<ListClients>;

    fn handle(&mut self, _: ListClients, _: &mut Self::Context) -> Self::Result {
        let mut clients: Vec<ClientInfo> = self
            .registrations
            .iter()
            .map(|(uuid, reg)| {
                let session = self.sessions.get(&reg.session);
                ClientInfo {
                    uuid: *uuid,
                    name: reg.name.clone(),
                    user: reg.user.as_deref().map(str::to_owned),
                    remote_address: session.and_then(|s| s.remote).map(|a| a.to_string()),
                    connected_since: session
                        .map(|s| rfc3339(s.connected_since))
                        .unwrap_or_default(),
                    messages_forwarded: reg.forwarded,
                }
            })
            .collect();
        clients.sort_by(|a, b| {
            a.connected_since
                .cmp(&b.connected_since)
                .then(a.uuid.cmp(&b.uuid))
        });
        MessageResult(clients)
    }
}

impl Handler<Counts> for Registry {
    type Result = CountsReply;

    fn handle(&mut self, _: Counts, _: &mut Self::Context) -> CountsReply {
        CountsReply {
            connected: self.sessions.len(),
            registered: self.registrations.len(),
        }
    }
}
