//! Forwards to other nodes: one queue, one task, one connection, so a
//! node's messages to another keep the order in which `forward` was called.
//!
//! The task takes what is queued (up to [`defaults::CLUSTER_PUBLISH_BATCH`]
//! envelopes or [`defaults::CLUSTER_PUBLISH_BATCH_BYTES`]) and sends it as
//! one pipeline of `PUBLISH`es; while Redis answers one batch the next
//! gathers, so a flood costs one round trip per batch, not per message.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::shared::Shared;
use super::ClusterError;
use crate::defaults;

/// One envelope waiting to be published, and who waits for the outcome.
pub(crate) struct Outgoing {
    pub node: String,
    pub payload: Vec<u8>,
    pub done: oneshot::Sender<Result<(), ClusterError>>,
}

/// The publishing task: batches from the queue, one pipeline each.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(defaults::CLUSTER_PUBLISH_BATCH);
    loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => return,
            },
        };
        let mut bytes = first.payload.len();
        batch.push(first);
        while batch.len() < defaults::CLUSTER_PUBLISH_BATCH
            && bytes < defaults::CLUSTER_PUBLISH_BATCH_BYTES
        {
            match queue.try_recv() {
                Ok(outgoing) => {
                    bytes += outgoing.payload.len();
                    batch.push(outgoing);
                }
                Err(_) => break,
            }
        }
        publish(&shared, &mut batch).await;
    }
}

/// Sends `batch` as one pipeline and tells each sender its outcome.
async fn publish(shared: &Shared, batch: &mut Vec<Outgoing>) {
    let mut pipe = redis::pipe();
    for outgoing in batch.iter() {
        pipe.cmd("PUBLISH")
            .arg(shared.keys.channel(&outgoing.node))
            .arg(&outgoing.payload);
    }
    let mut conn = shared.conn.clone();
    let result: Result<Vec<i64>, ClusterError> =
        shared.command("publish", pipe.query_async(&mut conn)).await;
    match result {
        Ok(receivers) if receivers.len() == batch.len() => {
            for (outgoing, n) in batch.drain(..).zip(receivers) {
                let outcome = if n > 0 {
                    Ok(())
                } else {
                    Err(ClusterError::NotDelivered(outgoing.node.clone()))
                };
                let _ = outgoing.done.send(outcome);
            }
        }
        Ok(receivers) => {
            let text = format!("{} answers to {} publishes", receivers.len(), batch.len());
            for outgoing in batch.drain(..) {
                let _ = outgoing.done.send(Err(ClusterError::BadData(text.clone())));
            }
        }
        Err(e) => {
            log::warn!(
                "cluster node {}: {} forwards not published: {e}",
                shared.keys.node,
                batch.len()
            );
            for outgoing in batch.drain(..) {
                let _ = outgoing.done.send(Err(copy_error(&e)));
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
