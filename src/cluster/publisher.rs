//! Forwards to other nodes: one queue, one task, one connection, so a
//! node's messages to another keep the order in which they were queued.
//!
//! The task takes what is queued (up to [`defaults::CLUSTER_PUBLISH_BATCH`]
//! envelopes or [`defaults::CLUSTER_PUBLISH_BATCH_BYTES`]) and sends it as
//! one pipeline: a `PUBLISH` for an envelope to a known node, the forward
//! script (look up, check, publish: see [`super::scripts`]) for one to a
//! peer wherever it is. While Redis answers one batch the next gathers, so
//! a flood costs one round trip per batch, not per message. The script is
//! sent with `EVALSHA`; the first batch, and the first after a failed
//! batch or a failed link (a restarted Redis has forgotten it), loads it
//! first in the same pipeline, so no forward waits for a second round trip.

use std::sync::Arc;

use redis::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::envelope::Unaddressed;
use super::shared::Shared;
use super::{ClusterError, Routed};
use crate::defaults;

/// Where an envelope goes.
pub(crate) enum Target {
    /// A `PUBLISH` on this node's channel.
    Node(String, Vec<u8>),
    /// The forward script: to the node holding `peer`, if it is alive and
    /// of `user`.
    Peer {
        peer: Uuid,
        user: String,
        envelope: Unaddressed,
    },
}

impl Target {
    fn len(&self) -> usize {
        match self {
            Target::Node(_, payload) => payload.len(),
            Target::Peer { envelope, .. } => envelope.tail.len(),
        }
    }
}

/// One envelope waiting to be published, and who waits for the outcome.
pub(crate) struct Outgoing {
    pub target: Target,
    pub done: oneshot::Sender<Result<Routed, ClusterError>>,
}

/// The publishing task: batches from the queue, one pipeline each.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(defaults::CLUSTER_PUBLISH_BATCH);
    // The link failure count when the script was last loaded.
    let mut loaded: Option<u64> = None;
    loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => return,
            },
        };
        let mut bytes = first.target.len();
        batch.push(first);
        while batch.len() < defaults::CLUSTER_PUBLISH_BATCH
            && bytes < defaults::CLUSTER_PUBLISH_BATCH_BYTES
        {
            match queue.try_recv() {
                Ok(outgoing) => {
                    bytes += outgoing.target.len();
                    batch.push(outgoing);
                }
                Err(_) => break,
            }
        }
        loaded = publish(&shared, &mut batch, loaded).await;
    }
}

/// Sends `batch` as one pipeline and tells each sender its outcome;
/// returns since which link failure count the forward script is loaded.
async fn publish(shared: &Shared, batch: &mut Vec<Outgoing>, loaded: Option<u64>) -> Option<u64> {
    let scripted = batch
        .iter()
        .any(|o| matches!(o.target, Target::Peer { .. }));
    let failures = shared.health.link_failures();
    let load = scripted && loaded != Some(failures);
    let mut pipe = redis::pipe();
    if load {
        pipe.load_script(&shared.scripts.forward).ignore();
    }
    for outgoing in batch.iter() {
        match &outgoing.target {
            Target::Node(node, payload) => {
                pipe.cmd("PUBLISH")
                    .arg(shared.keys.channel(node))
                    .arg(payload);
            }
            Target::Peer {
                peer,
                user,
                envelope,
            } => {
                let mut invocation = shared.scripts.forward.key(shared.keys.reg(peer));
                invocation
                    .arg(&shared.keys.prefix)
                    .arg(&shared.keys.node)
                    .arg(user)
                    .arg(envelope.head)
                    .arg(&envelope.tail);
                pipe.invoke_script(&invocation);
            }
        }
    }
    let mut conn = shared.conn.clone();
    let result: Result<Vec<Value>, ClusterError> =
        shared.command("publish", pipe.query_async(&mut conn)).await;
    match result {
        Ok(answers) if answers.len() == batch.len() => {
            for (outgoing, answer) in batch.drain(..).zip(answers) {
                let _ = outgoing.done.send(outcome(&outgoing.target, answer));
            }
            if load {
                Some(failures)
            } else {
                loaded
            }
        }
        Ok(answers) => {
            let text = format!("{} answers to {} publishes", answers.len(), batch.len());
            for outgoing in batch.drain(..) {
                let _ = outgoing.done.send(Err(ClusterError::BadData(text.clone())));
            }
            None
        }
        // An error answer fails the whole pipeline (the crate's default):
        // a NOSCRIPT after a Redis restart shows here, and the next batch
        // loads the script again.
        Err(e) => {
            log::warn!(
                "cluster node {}: {} forwards not published: {e}",
                shared.keys.node,
                batch.len()
            );
            for outgoing in batch.drain(..) {
                let _ = outgoing.done.send(Err(copy_error(&e)));
            }
            None
        }
    }
}

/// What Redis's answer to one command of the pipeline means.
fn outcome(target: &Target, answer: Value) -> Result<Routed, ClusterError> {
    let bad = |answer: &Value| ClusterError::BadData(format!("publish answered {answer:?}"));
    match target {
        Target::Node(node, _) => match answer {
            Value::Int(n) if n > 0 => Ok(Routed::Sent { node: node.clone() }),
            Value::Int(_) => Err(ClusterError::NotDelivered(node.clone())),
            other => Err(bad(&other)),
        },
        Target::Peer { .. } => {
            let (what, node): (String, String) =
                redis::from_redis_value_ref(&answer).map_err(|_| bad(&answer))?;
            match what.as_str() {
                "sent" => Ok(Routed::Sent { node }),
                "unknown" => Ok(Routed::Unknown),
                "dead" => Ok(Routed::DeadNode { node }),
                "other_user" => Ok(Routed::OtherUser { node }),
                "not_delivered" => Err(ClusterError::NotDelivered(node)),
                _ => Err(bad(&answer)),
            }
        }
    }
}

/// The same error for every sender of a failed batch.
fn copy_error(e: &ClusterError) -> ClusterError {
    match e {
        ClusterError::Timeout { op, ms } => ClusterError::Timeout { op, ms: *ms },
        ClusterError::Redis { op, source } => ClusterError::Redis {
            op,
            source: source.clone(),
        },
        ClusterError::Unavailable => ClusterError::Unavailable,
        other => ClusterError::BadData(other.to_string()),
    }
}
