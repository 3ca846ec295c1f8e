//! The registry across nodes: registering through the cluster engine,
//! forwards to other nodes, what other nodes send (forwards, takeovers),
//! and the registrations the engine re-asserts. See [`crate::server::cluster`].

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::Registry;
use crate::cluster::{Delivery, Holder, RegisterOutcome};
use crate::protocol::close;
use crate::server::cluster::{self, Remote};
use crate::server::messages::*;

impl Handler<Register> for Registry {
    type Result = ResponseActFuture<Self, Result<(), RegisterError>>;

    /// The local rules; with the cluster attached, then the cluster's
    /// (another user's UUID on another node is refused; Redis away →
    /// registered here, re-asserted by the engine later).
    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        let Some(link) = self.cluster.get() else {
            return Box::pin(fut::ready(self.register_local(msg)));
        };
        if !self.sessions.contains_key(&msg.session) {
            return Box::pin(fut::ready(Err(RegisterError::SessionGone)));
        }
        if let Some(existing) = self.registrations.get(&msg.uuid) {
            if existing.user != msg.user {
                return Box::pin(fut::ready(Err(RegisterError::OwnedByAnotherUser(msg.uuid))));
            }
        }
        let engine = link.cluster.clone();
        let holder = cluster::holder(msg.session, &msg.user, &msg.name);
        let uuid = msg.uuid;
        let asked = async move { engine.register(uuid, &holder).await };
        Box::pin(asked.into_actor(self).map(move |outcome, act, _| {
            let session = msg.session;
            match outcome {
                Ok(RegisterOutcome::OtherUser { node }) => {
                    log::warn!("[{uuid}] held by another user on node {node}; refusing");
                    return Err(RegisterError::OwnedByAnotherUser(uuid));
                }
                // The engine logs a takeover from another node.
                Ok(RegisterOutcome::TakenOver { .. } | RegisterOutcome::Registered) => {}
                Err(e) => log::warn!(
                    "[{uuid}] registered on this node only: cluster unavailable ({e}); re-asserted when it is back"
                ),
            }
            let done = act.register_local(msg);
            if done.is_err() {
                if let Some(link) = act.cluster.get() {
                    cluster::unregister(link, session, vec![uuid]);
                }
            }
            done
        }))
    }
}

impl Registry {
    /// A forward whose target is not here: to the cluster's ordered queue.
    pub(super) fn forward_remote(&mut self, msg: Forward, user: User) {
        let (Some(link), Some(entry)) = (self.cluster.get(), self.sessions.get(&msg.session))
        else {
            return;
        };
        let source = msg.request.source_uuid;
        let peer = msg.request.peer_uuid;
        let remote = Remote {
            user,
            request: msg.request,
            text: msg.text,
            reply: entry.recipient.clone(),
        };
        match link.forward(remote) {
            Ok(()) => {
                if let Some(reg) = self.registrations.get_mut(&source) {
                    reg.forwarded += 1;
                }
            }
            Err(remote) => {
                log::warn!("[{source}] cannot forward to {peer}: the cluster queue is full");
                let msg = Forward {
                    session: msg.session,
                    request: remote.request,
                    text: remote.text,
                };
                self.echo_error(msg, cluster::unknown_peer(peer));
            }
        }
    }

    /// Closes `session` with 4004 if it still holds `uuid` (registered on
    /// another node since), as a local takeover does.
    fn taken_over(&mut self, uuid: Uuid, session: SessionId) {
        if self
            .registrations
            .get(&uuid)
            .is_none_or(|r| r.session != session)
        {
            log::debug!("[{uuid}] takeover of session {session} ignored: no longer its holder");
            return;
        }
        self.registrations.remove(&uuid);
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.uuids.retain(|u| *u != uuid);
        }
        log::info!("[{uuid}] registered on another node; closing session {session} with 4004");
        self.metrics.takeovers.inc();
        if let Some(link) = self.cluster.get() {
            link.cluster
                .metrics()
                .takeovers_in
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.tell(
            session,
            ToSession::Close {
                code: close::REPLACED,
                reason: close::REASON_REPLACED,
            },
        );
        self.update_gauges();
    }
}

impl Handler<ClusterDelivery> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ClusterDelivery, _: &mut Self::Context) {
        match msg.0 {
            Delivery::Forward {
                from,
                to,
                user,
                text,
            } => {
                let Some(target) = self.registrations.get(&to) else {
                    // A peer that left or moved between the sender's lookup
                    // and now; or a forged envelope.
                    log::info!(
                        "[{from}] forward from another node to {to} dropped: {to} is not registered here"
                    );
                    return;
                };
                // The rule of one node: a peer is reached by its own user only.
                if cluster::user_name(&target.user) != user {
                    log::warn!(
                        "[{from}] forward from another node to {to} refused: it names user {user:?}, not the peer's"
                    );
                    return;
                }
                let session = target.session;
                self.tell(session, ToSession::Deliver(ByteString::from(text)));
                self.metrics.forwarded.inc();
            }
            Delivery::Takeover { uuid, session } => self.taken_over(uuid, session),
        }
    }
}

impl Handler<LocalRegistrations> for Registry {
    type Result = MessageResult<LocalRegistrations>;

    fn handle(&mut self, _: LocalRegistrations, _: &mut Self::Context) -> Self::Result {
        let all: Vec<(Uuid, Holder)> = self
            .registrations
            .iter()
            .map(|(uuid, r)| (*uuid, cluster::holder(r.session, &r.user, &r.name)))
            .collect();
        MessageResult(all)
    }
}
