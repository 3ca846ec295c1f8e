//! Forwards to other nodes: one queue, one task, one connection, so a
//! node's messages to another keep the order in which they were queued.
//!
//! The task takes what is queued (up to [`defaults::CLUSTER_PUBLISH_BATCH`]
//! envelopes or [`defaults::CLUSTER_PUBLISH_BATCH_BYTES`]) and sends it as
//! one pipeline: a `PUBLISH` for an envelope to a known node, the forward
//! script (look up, check, publish: see [`super::scripts`]) for forwards
//! to a peer wherever it is, one call per run of consecutive forwards to
//! the same peer. While Redis answers one batch the next gathers, so
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
    let groups = commands(shared, batch, &mut pipe);
    let mut conn = shared.conn.clone();
    let result: Result<Vec<Value>, ClusterError> =
        shared.command("publish", pipe.query_async(&mut conn)).await;
    match result {
        Ok(answers) if answers.len() == groups.len() => {
            let mut items = batch.drain(..);
            for (size, answer) in groups.into_iter().zip(answers) {
                let group: Vec<Outgoing> = items.by_ref().take(size).collect();
                let mut outcomes = outcomes(&group[0].target, size, &answer).into_iter();
                for outgoing in group {
                    let outcome = outcomes.next().unwrap_or_else(|| Err(bad(&answer)));
                    let _ = outgoing.done.send(outcome);
                }
            }
            if load {
                Some(failures)
            } else {
                loaded
            }
        }
        Ok(answers) => {
            let text = format!("{} answers to {} commands", answers.len(), groups.len());
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

/// Adds `batch` to `pipe`: a `PUBLISH` per envelope to a known node, one
/// script call per run of consecutive forwards to the same peer from the
/// same user (under a flood, one per batch). Returns how many envelopes
/// each command carries, in order.
fn commands(shared: &Shared, batch: &[Outgoing], pipe: &mut redis::Pipeline) -> Vec<usize> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        match &batch[i].target {
            Target::Node(node, payload) => {
                pipe.cmd("PUBLISH")
                    .arg(shared.keys.channel(node))
                    .arg(payload);
                groups.push(1);
                i += 1;
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
                    .arg(envelope.head);
                let mut size = 0;
                while let Some(Target::Peer {
                    peer: next,
                    user: next_user,
                    envelope,
                }) = batch.get(i + size).map(|o| &o.target)
                {
                    if next != peer || next_user != user {
                        break;
                    }
                    invocation.arg(&envelope.tail);
                    size += 1;
                }
                pipe.invoke_script(&invocation);
                groups.push(size);
                i += size;
            }
        }
    }
    groups
}

fn bad(answer: &Value) -> ClusterError {
    ClusterError::BadData(format!("publish answered {answer:?}"))
}

/// What Redis's answer to one command carrying `size` envelopes means,
/// for each of them.
fn outcomes(target: &Target, size: usize, answer: &Value) -> Vec<Result<Routed, ClusterError>> {
    let received = |node: &str, n: i64| {
        if n > 0 {
            Ok(Routed::Sent {
                node: node.to_owned(),
            })
        } else {
            Err(ClusterError::NotDelivered(node.to_owned()))
        }
    };
    match (target, answer) {
        (Target::Node(node, _), Value::Int(n)) => vec![received(node, *n)],
        (Target::Peer { .. }, Value::Array(items)) if items.len() >= 2 => {
            let text = |v: &Value| redis::from_redis_value_ref::<String>(v).ok();
            let (Some(what), Some(node)) = (text(&items[0]), text(&items[1])) else {
                return vec![Err(bad(answer))];
            };
            let same = |outcome: Routed| (0..size).map(|_| Ok(outcome.clone())).collect();
            match what.as_str() {
                "sent" if items.len() == size + 2 => items[2..]
                    .iter()
                    .map(|n| match n {
                        Value::Int(n) => received(&node, *n),
                        other => Err(bad(other)),
                    })
                    .collect(),
                "unknown" => same(Routed::Unknown),
                "dead" => same(Routed::DeadNode { node }),
                "other_user" => same(Routed::OtherUser { node }),
                _ => vec![Err(bad(answer))],
            }
        }
        _ => vec![Err(bad(answer))],
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
