//! The node's channel: a dedicated pub/sub connection, its decoding, and
//! the self-check that rebuilds it when it stops delivering.
//!
//! On every (re)connection the node subscribes and at once publishes a
//! `Ping` to itself; the subscription counts as working only when that
//! echo arrives, and again every `self_check_ms`. A subscription that
//! delivers nothing at all for twice the command timeout while an echo is
//! awaited (any message resets that wait: behind a flood the echo comes
//! late, and the subscription is fine), or whose connection ends, is
//! rebuilt (the wait between attempts doubles from
//! [`defaults::CLUSTER_RETRY_MS`] up to [`defaults::CLUSTER_RESUBSCRIBE_MAX_MS`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::time::{sleep, Instant};

use super::envelope::{decode, encode, Envelope};
use super::shared::{millis, Shared};
use super::{ClusterMetrics, Delivery};
use crate::defaults;

/// Runs until the engine stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut wait = Duration::from_millis(defaults::CLUSTER_RETRY_MS);
    let mut first = true;
    while !shared.cancel.is_cancelled() {
        match connect(&shared).await {
            Ok(pubsub) => {
                let first_time = first;
                if !first {
                    ClusterMetrics::inc(&shared.metrics.reconnects);
                }
                first = false;
                wait = Duration::from_millis(defaults::CLUSTER_RETRY_MS);
                let reason = listen(&shared, pubsub, !first_time).await;
                if shared.cancel.is_cancelled() {
                    return;
                }
                log::warn!(
                    "cluster node {}: rebuilding the subscription: {reason}",
                    shared.keys.node
                );
                shared.health.subscription_failed(reason);
            }
            Err(reason) => {
                shared.health.subscription_failed(reason);
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = sleep(wait) => {}
                }
                let max = Duration::from_millis(defaults::CLUSTER_RESUBSCRIBE_MAX_MS);
                wait = (wait * 2).min(max);
            }
        }
    }
}

/// A new pub/sub connection subscribed to the node's channel.
async fn connect(shared: &Shared) -> Result<PubSub, String> {
    let channel = shared.keys.channel(&shared.keys.node);
    let attempt = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(shared.timing.connect, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(format!("cannot subscribe to {channel}: {e}")),
        Err(_) => Err(format!(
            "cannot subscribe to {channel} within {} ms",
            millis(shared.timing.connect)
        )),
    }
}

/// Delivers what arrives and checks the subscription; returns why it must
/// be rebuilt (or anything once the engine stops).
async fn listen(shared: &Arc<Shared>, pubsub: PubSub, rebuilt: bool) -> String {
    let mut messages = pubsub.into_on_message();
    let mut nonce: u64 = rand::random();
    let echo_wait = shared.timing.command * 2;
    // The check now, then every self_check_ms after its echo.
    let mut pending = Some(send_ping(shared, nonce));
    let mut deadline = Instant::now() + echo_wait;
    let mut next_check = Instant::now() + shared.timing.self_check;
    let mut restored = !rebuilt;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return "stopped".into(),
            message = messages.next() => {
                let Some(message) = message else {
                    return "the pub/sub connection closed".into();
                };
                // Whatever arrives proves the subscription delivers: under a
                // flood the echo waits behind the backlog, which is not a fault.
                deadline = Instant::now() + echo_wait;
                if let Some(echo) = receive(shared, message.get_payload_bytes()) {
                    if pending == Some(echo) {
                        pending = None;
                        if restored {
                            shared.health.subscription_ok();
                        } else {
                            restored = true;
                            shared.health.subscription_restored();
                        }
                        next_check = Instant::now() + shared.timing.self_check;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if pending.is_some() => {
                ClusterMetrics::inc(&shared.metrics.self_check_failures);
                return format!(
                    "self-check: nothing arrived for {} ms, not even the node's own ping",
                    millis(echo_wait)
                );
            }
            _ = tokio::time::sleep_until(next_check), if pending.is_none() => {
                nonce = nonce.wrapping_add(1);
                pending = Some(send_ping(shared, nonce));
                deadline = Instant::now() + echo_wait;
            }
        }
    }
}

/// Publishes a `Ping` with `nonce` to the node's own channel (in the
/// background: its echo, not its reply, is what counts).
fn send_ping(shared: &Arc<Shared>, nonce: u64) -> u64 {
    let node = shared.keys.node.clone();
    let ping = Envelope::Ping {
        node: node.clone(),
        nonce,
    };
    // A ping is far below any limit.
    if let Ok(payload) = encode(&node, &ping, shared.limit) {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut conn = shared.conn.clone();
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(shared.keys.channel(&node)).arg(payload);
            let _ = shared
                .probe("self-check", publish.query_async::<i64>(&mut conn))
                .await;
        });
    }
    nonce
}

/// Decodes one payload and hands it on; returns a ping's nonce.
fn receive(shared: &Shared, payload: &[u8]) -> Option<u64> {
    let node = &shared.keys.node;
    let envelope = match decode(payload, node, shared.limit) {
        Ok(envelope) => envelope,
        Err(e) => {
            ClusterMetrics::inc(&shared.metrics.decode_failures);
            log::warn!("cluster node {node}: dropped a message on its channel: {e}");
            return None;
        }
    };
    match envelope {
        Envelope::Ping {
            node: sender,
            nonce,
        } if sender == *node => Some(nonce),
        Envelope::Ping { node: sender, .. } => {
            log::debug!("cluster node {node}: ignored a ping of node {sender}");
            None
        }
        Envelope::Forward {
            from,
            to,
            user,
            text,
        } => {
            if shared.hand_over(Delivery::Forward {
                from,
                to,
                user,
                text,
            }) {
                ClusterMetrics::inc(&shared.metrics.forwards_in);
            }
            None
        }
        Envelope::Takeover { uuid, session } => {
            // Counted and logged by the registry, only when `session`
            // still holds `uuid` there (a forged or late notice changes nothing).
            log::debug!("[cluster {uuid}] takeover notice for session {session}");
            shared.hand_over(Delivery::Takeover { uuid, session });
            None
        }
    }
}
