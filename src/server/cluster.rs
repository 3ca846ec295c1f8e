//! The relay's side of the cluster: what the [`Registry`](super::registry::Registry) does across nodes.
//!
//! With `[cluster] enabled`, the node starts a [`Cluster`] engine and
//! [`attach`]es it to the relay's state; until then (and with the cluster
//! off) the registry works alone, as on one node. Once attached:
//!
//! - registrations go to Redis after the local rules (the registry's
//!   `Register` handler waits for the engine's answer; Redis away →
//!   registered locally, re-asserted by the engine when Redis is back);
//! - a closed session's registrations are unregistered (compare and
//!   delete: a newer holder elsewhere stays);
//! - a forward whose target is not registered here goes to the `Remote`
//!   queue: ONE task hands each to the engine's forward script (look up,
//!   check, publish: one round trip), in the order the registry queued
//!   them, so one sender's messages keep their order across nodes; an
//!   unknown target, another user's, a dead node's or a failed publish
//!   gets the same error echo as on one node;
//! - what other nodes send (the engine's [`Inbox`]) is handed to the
//!   registry in arrival order: forwards to deliver (only to a target still
//!   registered here and of the user the envelope names), takeovers to
//!   close with 4004.
//!
//! The anonymous user (`auth.method = "none"`) is stored as an empty user
//! name in Redis.

use std::sync::{Arc, OnceLock, Weak};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::messages::{ClusterDelivery, Counts, LocalRegistrations, ToSession, User};
use super::state::ServerState;
use crate::admin::metrics::Metrics;
use crate::cluster::{Cluster, Delivery, Envelope, Holder, Inbox, RegistrationSource, Routed};
use crate::defaults;
use crate::protocol::relay::encode_forwarded;
use crate::protocol::relay::DescriptionLiteral;
use crate::protocol::PeerConnection;
use crate::protocol::RelayMessage;

/// The cluster as the registry sees it: the engine and the queue of
/// cross-node forwards. Set once per process ([`ClusterSlot`]).
pub struct ClusterLink {
    /// The engine.
    pub cluster: Cluster,
    remote: mpsc::Sender<Remote>,
}

/// Where the relay keeps its [`ClusterLink`] once the engine has started.
pub type ClusterSlot = Arc<OnceLock<ClusterLink>>;

/// A forward whose target is not registered on this node.
pub(super) struct Remote {
    /// The sender's user.
    pub user: User,
    /// The decoded request (for the error echo).
    pub request: PeerConnection<DescriptionLiteral>,
    /// The request as delivered.
    pub text: ByteString,
    /// The sending session, for the error echo.
    pub reply: Recipient<ToSession>,
}

impl ClusterLink {
    /// Queues a cross-node forward; `Err` gives it back when the queue is
    /// full or its task has stopped.
    pub(super) fn forward(&self, remote: Remote) -> Result<(), Box<Remote>> {
        self.remote.try_send(remote).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => {
                Box::new(r)
            }
        })
    }
}

/// The user as stored in Redis.
pub(super) fn user_name(user: &User) -> String {
    user.as_deref().unwrap_or("").to_owned()
}

/// The echo ProxyStore sends for an unknown peer.
pub(super) fn unknown_peer(peer: Uuid) -> String {
    format!(
        "Cannot forward peer connection message to peer {peer} because this peer is not registered this relay server."
    )
}

/// The echo for a peer of another user.
pub(super) fn other_user(peer: Uuid) -> String {
    format!("The requested peer {peer} is owned by a different user.")
}

/// `request` sent back with `error` set.
pub(super) fn echo_text(
    mut request: PeerConnection<DescriptionLiteral>,
    error: String,
) -> ByteString {
    request.error = Some(error);
    ByteString::from(encode_forwarded(&request))
}

/// The node's registrations for the engine's re-assertions: asks the
/// registry ([`LocalRegistrations`]). Holds the state weakly, so the engine
/// does not keep the relay alive.
pub fn registration_source(state: &Arc<ServerState>) -> RegistrationSource {
    let state: Weak<ServerState> = Arc::downgrade(state);
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            let Some(registry) = state.upgrade().and_then(|s| s.registry.get()) else {
                return Vec::new();
            };
            registry.send(LocalRegistrations).await.unwrap_or_default()
        })
    })
}

/// Hands a started engine to the relay: the registry uses it from now on,
/// the forward task and the inbox pump start (on the current runtime), and
/// the registrations made before are re-asserted. Returns `false` if an
/// engine was already attached.
pub fn attach(state: &Arc<ServerState>, cluster: Cluster, inbox: Inbox) -> bool {
    let (tx, rx) = mpsc::channel(defaults::CLUSTER_PUBLISH_QUEUE);
    let link = ClusterLink {
        cluster: cluster.clone(),
        remote: tx,
    };
    if state.cluster.set(link).is_err() {
        return false;
    }
    tokio::spawn(run_remote(cluster.clone(), state.metrics.clone(), rx));
    tokio::spawn(pump_inbox(Arc::downgrade(state), inbox));
    tokio::spawn(reassert_at_attach(Arc::downgrade(state), cluster));
    true
}

/// Re-asserts the registrations made before the engine was attached; when
/// Redis cannot be reached, says so only if there are some (the engine
/// re-asserts them by itself once Redis answers: nothing is lost, so not a
/// warning; Redis being away is logged by the engine).
async fn reassert_at_attach(state: Weak<ServerState>, cluster: Cluster) {
    let Err(e) = cluster.reassert().await else {
        return;
    };
    let registry = state.upgrade().and_then(|s| s.registry.get());
    let held = match registry {
        Some(registry) => registry.send(Counts).await.map_or(0, |c| c.registered),
        None => 0,
    };
    if held > 0 {
        log::info!(
            "cluster: {held} registrations made before the engine started are re-asserted once Redis answers ({e})"
        );
    } else {
        log::debug!("cluster: nothing to re-assert at start ({e})");
    }
}

/// Hands every delivery from other nodes to the registry, in order.
async fn pump_inbox(state: Weak<ServerState>, mut inbox: Inbox) {
    while let Some(delivery) = inbox.recv().await {
        if let Delivery::Forward { from, to, text, .. } = &delivery {
            if let Err(why) = check_forward_text(from, to, text) {
                log::warn!("a forward from another node refused: {why}");
                continue;
            }
        }
        let Some(registry) = state.upgrade().and_then(|s| s.registry.get()) else {
            log::debug!("cluster delivery dropped: no registry");
            continue;
        };
        // In order, without waiting for each to be handled; when the
        // registry's mailbox is full, wait for room (the engine's inbox
        // buffers meanwhile).
        match registry.try_send(ClusterDelivery(delivery)) {
            Ok(()) => {}
            Err(SendError::Full(delivery)) => {
                if registry.send(delivery).await.is_err() {
                    log::debug!("cluster delivery dropped: the registry stopped");
                }
            }
            Err(SendError::Closed(_)) => {
                log::debug!("cluster delivery dropped: the registry stopped");
            }
        }
    }
}

/// Forwards handed to the engine and not yet answered, at most.
const MAX_IN_FLIGHT: usize = defaults::CLUSTER_PUBLISH_QUEUE - defaults::CLUSTER_PUBLISH_BATCH;

/// Forwards waiting for the engine's outcome: those that failed come back
/// with the error to echo.
type Pending = FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<(Remote, String)>> + Send>>,
>;

/// The one ordered path of cross-node forwards: each is handed to the
/// engine (one script: look up, check, publish) in queue order.
async fn run_remote(cluster: Cluster, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Remote>) {
    let mut batch = Vec::with_capacity(defaults::CLUSTER_PUBLISH_BATCH);
    let mut pending: Pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(failed) = pending.next(), if !pending.is_empty() => {
                if let Some((remote, error)) = failed {
                    echo(&metrics, remote, error);
                }
            }
            // At most a queue's worth in flight: the engine's publish
            // queue never overflows from here (a slow Redis holds the
            // forwards in this task's queue instead).
            n = rx.recv_many(&mut batch, defaults::CLUSTER_PUBLISH_BATCH),
                if pending.len() < MAX_IN_FLIGHT => {
                if n == 0 {
                    return;
                }
                for remote in batch.drain(..) {
                    pending.push(Box::pin(route(&cluster, remote)));
                }
            }
        }
    }
}

/// Hands `remote` to the engine now (so forwards keep queue order) and
/// returns the future of its outcome: `None` once published, else the
/// forward with the error echo it gets (the echoes of one node).
fn route(
    cluster: &Cluster,
    remote: Remote,
) -> impl std::future::Future<Output = Option<(Remote, String)>> + Send + 'static {
    let source = remote.request.source_uuid;
    let peer = remote.request.peer_uuid;
    let envelope = Envelope::Forward {
        from: source,
        to: peer,
        user: user_name(&remote.user),
        text: remote.text.to_string(),
    };
    let routed = cluster.route(&envelope);
    async move {
        let error = match routed.await {
            Ok(Routed::Sent { node }) => {
                log::debug!("[{source}] forwarded to {peer} on node {node}");
                return None;
            }
            Ok(Routed::Unknown) => {
                log::warn!("[{source}] cannot forward to unknown peer {peer}");
                unknown_peer(peer)
            }
            Ok(Routed::DeadNode { node }) => {
                log::warn!("[{source}] cannot forward to peer {peer}: its node {node} is gone");
                unknown_peer(peer)
            }
            Ok(Routed::OtherUser { .. }) => {
                log::warn!("[{source}] refused forward to peer {peer} owned by another user");
                other_user(peer)
            }
            Err(e) => {
                log::warn!("[{source}] forward to {peer} on another node failed: {e}");
                unknown_peer(peer)
            }
        };
        Some((remote, error))
    }
}

/// Sends the error echo to the sender's session (dropped if its mailbox is full).
fn echo(metrics: &Metrics, remote: Remote, error: String) {
    metrics.forward_errors.inc();
    let text = echo_text(remote.request, error);
    if remote.reply.try_send(ToSession::Deliver(text)).is_err() {
        log::debug!("error echo dropped: the sending session is full or gone");
    }
}

/// Holder of a registration as the engine stores it.
pub(super) fn holder(session: u64, user: &User, name: &str) -> Holder {
    Holder {
        session,
        user: user_name(user),
        name: name.to_owned(),
    }
}

/// Unregisters `uuids` of a closed `session` in Redis (in the background;
/// a failure is left to the engine's re-assertion, which deletes stale
/// records).
pub(super) fn unregister(link: &ClusterLink, session: u64, uuids: Vec<Uuid>) {
    let cluster = link.cluster.clone();
    actix::spawn(async move {
        for uuid in uuids {
            if let Err(e) = cluster.unregister(uuid, session).await {
                log::debug!("[{uuid}] cluster unregister of session {session} failed: {e}");
            }
        }
    });
}

/// What the sending node checked, checked again here (off the registry's
/// thread): the text of a forward from another node is a relay
/// `peer_connection` from `from` to `to`, as a client's forward on one node
/// must be. A node trusts what comes through Redis no further than a client.
fn check_forward_text(from: &Uuid, to: &Uuid, text: &str) -> Result<(), String> {
    match crate::protocol::relay::decode_relayed(text) {
        Ok(RelayMessage::PeerConnection(pc)) if pc.source_uuid == *from && pc.peer_uuid == *to => {
            Ok(())
        }
        Ok(RelayMessage::PeerConnection(pc)) => Err(format!(
            "its text goes from {} to {}, the envelope from {from} to {to}",
            pc.source_uuid, pc.peer_uuid
        )),
        Ok(_) => Err(format!(
            "its text from {from} to {to} is not a peer_connection"
        )),
        Err(e) => Err(format!(
            "its text from {from} to {to} is not a relay message ({e})"
        )),
    }
}
