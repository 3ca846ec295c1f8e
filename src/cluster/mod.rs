//! Scale-out: several relay nodes share one registry through Redis.
//!
//! This is the engine a node drives: plain tokio tasks and the `redis`
//! crate, no actix. The node keeps its own sessions and its own local
//! registry; the engine tells it what other nodes send
//! ([`Inbox`]), and answers who holds a UUID elsewhere.
//!
//! # Redis data model
//!
//! Every name starts with `cluster.key_prefix` (`{p}`, `switchboard:` by default):
//!
//! - `{p}node:{id}:alive`: a string with an expiry (PX) of
//!   `cluster.node_ttl_ms`, refreshed every `cluster.heartbeat_ms`. A node is
//!   alive while this key exists; when it lapses, the node's registrations
//!   are no longer found, and another node may take them.
//! - `{p}reg:{uuid}`: a hash `{node, session, user, name}`: the node and the
//!   session on it that hold the UUID, for whom, under which name.
//! - `{p}node:{id}:clients`: a set of the UUIDs registered on that node
//!   (for listing the cluster's clients and for cleaning up after it).
//! - `{p}nodes`: a set of node ids, alive or not, so nodes can be listed
//!   without scanning the keyspace; a node that stops removes itself (with
//!   what is left of its records); one whose liveness lapsed is removed by
//!   the others (with its records, a batch per heartbeat) once its set is
//!   empty.
//! - channel `{p}node:{id}`: messages to that node, in [`envelope`]s.
//!
//! # Operations
//!
//! - Register is one Lua script: a record that is missing or whose node is
//!   not alive is taken; on the same node too (the local registry handles a
//!   local takeover); another live node's record of another user is refused
//!   ([`RegisterOutcome::OtherUser`], the relay closes with 4002); of the
//!   same user it is taken and the script publishes a `Takeover` to the old
//!   node, which closes that session with 4004 if it still holds the UUID.
//! - Unregister compares and deletes: only the record of that node and
//!   session goes, so a late close never erases a newer holder.
//! - Lookup is one script: the holder if its node is alive.
//! - A forward to a peer not on this node ([`Cluster::route`]) is one
//!   script, one round trip: it reads the peer's record, checks that its
//!   node is alive and that its user is the sender's, and publishes the
//!   envelope on that node's channel ([`Routed`] says which happened).
//!   [`Cluster::forward`] publishes to a known node. All of a node's
//!   forwards go through one queue and one connection, in call order,
//!   pipelined: a node's messages to another keep their order.
//! - The receiving node delivers a forward only if the target is still
//!   registered there and belongs to the user the envelope names (the rule
//!   of one node); anything else is dropped and logged.
//!
//! # Failures
//!
//! A heartbeat, a subscription and a self-check keep the node's view: the
//! node publishes a `Ping` to its own channel every `cluster.self_check_ms`
//! and rebuilds the subscription when, while it waits for that echo,
//! nothing at all arrives for twice the command timeout (a subscription
//! that silently stops delivering is a known failure of Redis-backed
//! relays; behind a flood the echo is late but messages keep coming). While Redis cannot be reached the
//! state is [`ClusterState::Degraded`] and commands fail at once; when it is
//! back (or when the node's liveness key had lapsed), the node re-asserts
//! its registrations from the [`RegistrationSource`] the node gave at start,
//! before the state is `Up` again.
//!
//! Files: `engine` (the node's handle: start, forward, state, stop),
//! `shared` (what the tasks share; one command with its timeout),
//! `registry` (register, unregister, lookup, listing), `publisher`
//! (the queue of forwards), `subscriber` (the channel and the self-check), `heartbeat`
//! (liveness, re-assertion, cleaning up dead nodes), `scripts` (key names
//! and Lua), `health`, `metrics`, `envelope`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use uuid::Uuid;

mod engine;
pub mod envelope;
mod health;
mod heartbeat;
mod metrics;
mod publisher;
mod registry;
mod scripts;
mod shared;
mod subscriber;

pub use engine::Cluster;
pub use envelope::Envelope;
pub use health::ClusterState;
pub use heartbeat::Reasserted;
pub use metrics::{ClusterMetrics, RttHistogram, RttSnapshot};

/// Who holds a UUID on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The session (WebSocket) on this node; a node's session ids grow.
    pub session: u64,
    /// The authenticated user.
    pub user: String,
    /// The name the peer registered with.
    pub name: String,
}

/// Who holds a UUID in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The node.
    pub node: String,
    /// The session on that node.
    pub session: u64,
    /// The user.
    pub user: String,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// The UUID was free, on a dead node, or already on this node: it is ours.
    Registered,
    /// Another live node held it for the same user: it is ours, and that
    /// node was told to close its session (4004).
    TakenOver {
        /// The node that held it.
        node: String,
    },
    /// Another live node holds it for another user: refused (4002).
    OtherUser {
        /// The node that holds it.
        node: String,
    },
}

/// What became of a forward to a peer on another node ([`Cluster::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Published to the node holding the peer, and its subscription received it.
    Sent {
        /// That node.
        node: String,
    },
    /// No record of the peer, or one naming this node (which does not hold it).
    Unknown,
    /// The peer's node is not alive.
    DeadNode {
        /// That node.
        node: String,
    },
    /// The peer belongs to another user: not published.
    OtherUser {
        /// The node holding it.
        node: String,
    },
}

/// One registration of the cluster (for `/clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterClient {
    /// The registered UUID.
    pub uuid: Uuid,
    /// The node holding it.
    pub node: String,
    /// The user.
    pub user: String,
    /// The registered name.
    pub name: String,
}

/// What other nodes send this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A relay message for `to`, registered here, from `from` elsewhere.
    Forward {
        /// The sending peer.
        from: Uuid,
        /// The peer it is for.
        to: Uuid,
        /// The sending peer's user as the sending node saw it (`""`: the
        /// anonymous user); deliver only to a peer of that user.
        user: String,
        /// The relay message (a WebSocket text frame).
        text: String,
    },
    /// Close `session` with 4004 if it still holds `uuid`: the UUID was
    /// registered on another node.
    Takeover {
        /// The UUID.
        uuid: Uuid,
        /// The session that held it here.
        session: u64,
    },
}

/// The node's registrations, asked for when they must be re-written: a
/// function returning a future of every `(uuid, holder)` of this node.
pub type RegistrationSource =
    Arc<dyn Fn() -> BoxFuture<'static, Vec<(Uuid, Holder)>> + Send + Sync>;

/// The deliveries for this node, in the order they arrived (bounded:
/// [`crate::defaults::CLUSTER_INBOX`]).
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<Delivery>);

impl Inbox {
    /// The next delivery; `None` once the engine has stopped and every
    /// [`Cluster`] handle is dropped.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.0.recv().await
    }

    /// A delivery if one is waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.0.try_recv().ok()
    }
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The settings or the node id cannot be used.
    #[error("cluster settings: {0}")]
    Config(String),
    /// Redis cannot be reached now (the node is degraded): failed at once.
    #[error("Redis is unreachable (cluster degraded)")]
    Unavailable,
    /// Redis did not answer in time.
    #[error("Redis did not answer {op} within {ms} ms")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("Redis {op}: {source}")]
    Redis {
        /// The operation.
        op: &'static str,
        /// The error.
        source: redis::RedisError,
    },
    /// Redis answered something this engine did not write.
    #[error("unexpected data in Redis: {0}")]
    BadData(String),
    /// Too many forwards are waiting to be published.
    #[error("the cluster's publish queue is full")]
    Busy,
    /// Nobody listens on the target node's channel (it is gone, or
    /// re-subscribing): the message was not delivered.
    #[error("node {0} did not receive the message")]
    NotDelivered(String),
    /// The envelope is too large.
    #[error(transparent)]
    Encode(#[from] envelope::EncodeError),
    /// The engine has stopped.
    #[error("the cluster engine has stopped")]
    Stopped,
}
