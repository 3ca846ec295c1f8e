//! The heartbeat: the node's liveness key, re-asserting its registrations
//! after an outage, and cleaning up after dead nodes.
//!
//! Every `heartbeat_ms` (every [`defaults::CLUSTER_RETRY_MS`] while Redis
//! is away) one pipeline sets `{p}node:{id}:alive` with its TTL, reading
//! the old value, and adds the node to `{p}nodes`. The heartbeat is tried
//! even while the link is down: its success is what brings the link back.
//! If the key had lapsed (Redis restarted, or the node was silent longer
//! than the TTL and the others cleaned up after it) or an outage marked
//! the registrations as stale, the node re-asserts them before it is `Up`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::shared::{millis, ReassertWindow, Shared};
use super::{ClusterError, ClusterMetrics, Delivery, Holder};
use crate::defaults;

/// What one re-assertion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasserted {
    /// Registrations the node holds and sent to Redis.
    pub registrations: usize,
    /// Of those, held by another live node: the node's sessions got a
    /// `Takeover` in the inbox.
    pub lost: usize,
    /// Records of this node that it no longer holds, deleted.
    pub stale: usize,
}

/// Runs until the engine stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let steady = shared.health.link_up() && !shared.health.reassert_pending();
        let wait = if steady {
            shared.timing.heartbeat
        } else {
            Duration::from_millis(defaults::CLUSTER_RETRY_MS)
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        beat_once(&shared).await;
    }
}

/// One heartbeat, then a re-assertion if one is due and a reaping batch.
pub(crate) async fn beat_once(shared: &Arc<Shared>) {
    let node = &shared.keys.node;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(shared.keys.alive(node))
        .arg(millis(shared.timing.node_ttl))
        .arg("PX")
        .arg(millis(shared.timing.node_ttl))
        .arg("GET")
        .cmd("SADD")
        .arg(shared.keys.nodes())
        .arg(node)
        .ignore();
    let mut conn = shared.conn.clone();
    let beat: Result<(Option<String>,), ClusterError> =
        shared.probe("heartbeat", pipe.query_async(&mut conn)).await;
    let Ok((previous,)) = beat else {
        return;
    };
    shared.health.link_ok();
    if previous.is_none() && !shared.health.reassert_pending() {
        log::warn!("cluster node {node}: its liveness key had lapsed; re-asserting registrations");
        shared.health.want_reassert();
    }
    if shared.health.reassert_pending() {
        // In its own task: a large or slow one must not hold the heartbeat
        // back, or the liveness key would lapse meanwhile.
        if let Ok(one) = shared.reassert_lock.clone().try_lock_owned() {
            let shared = shared.clone();
            tokio::spawn(async move {
                let wanted = shared.health.reassert_wanted();
                match reassert_locked(&shared).await {
                    Ok(_) => shared.health.reasserted(wanted),
                    Err(e) => log::warn!(
                        "cluster node {}: re-assertion failed: {e}",
                        shared.keys.node
                    ),
                }
                drop(one);
            });
        }
    }
    reap(shared).await;
}

/// Deletes a batch of dead nodes' records.
async fn reap(shared: &Shared) {
    let mut invocation = shared.scripts.reap.key(shared.keys.nodes());
    invocation
        .arg(&shared.keys.prefix)
        .arg(defaults::CLUSTER_REAP_BATCH);
    let mut conn = shared.conn.clone();
    match shared
        .command("reap", invocation.invoke_async::<u64>(&mut conn))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            shared
                .metrics
                .reaped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            log::info!(
                "cluster node {}: removed {n} registrations of dead nodes",
                shared.keys.node
            );
        }
        Err(e) => log::debug!("cluster node {}: reaping: {e}", shared.keys.node),
    }
}

/// Re-asserts this node's registrations now (after one that is running).
pub(crate) async fn reassert(shared: &Arc<Shared>) -> Result<Reasserted, ClusterError> {
    let _one = shared.reassert_lock.lock().await;
    let wanted = shared.health.reassert_wanted();
    let report = reassert_locked(shared).await?;
    shared.health.reasserted(wanted);
    Ok(report)
}

/// The re-assertion, while its caller holds the lock.
async fn reassert_locked(shared: &Arc<Shared>) -> Result<Reasserted, ClusterError> {
    *shared.lock_window() = Some(ReassertWindow::default());
    let result = reassert_window(shared).await;
    let window = shared.lock_window().take().unwrap_or_default();
    for (uuid, session) in window.unregistered {
        let mut invocation = shared.scripts.unregister.key(shared.keys.reg(&uuid));
        invocation
            .key(shared.keys.clients(&shared.keys.node))
            .arg(&shared.keys.node)
            .arg(session)
            .arg(uuid.to_string());
        let mut conn = shared.conn.clone();
        shared
            .command("unregister", invocation.invoke_async::<i64>(&mut conn))
            .await?;
    }
    result
}

/// The work of [`reassert`], while changes are noted in the window.
async fn reassert_window(shared: &Arc<Shared>) -> Result<Reasserted, ClusterError> {
    let node = &shared.keys.node;
    let mut conn = shared.conn.clone();
    // The set is read before the node's registrations, so what registers
    // after is not taken for stale (and is noted in the window anyway).
    let members: Vec<String> = shared
        .command(
            "reassert",
            redis::cmd("SMEMBERS")
                .arg(shared.keys.clients(node))
                .query_async(&mut conn),
        )
        .await?;
    let snapshot = tokio::time::timeout(shared.timing.node_ttl, (shared.source)())
        .await
        .map_err(|_| ClusterError::Timeout {
            op: "registration source",
            ms: millis(shared.timing.node_ttl),
        })?;
    let held: HashSet<Uuid> = snapshot.iter().map(|(uuid, _)| *uuid).collect();
    let changed = |uuid: &Uuid| {
        shared
            .lock_window()
            .as_ref()
            .is_some_and(|w| w.registered.contains(uuid))
    };
    let stale: Vec<String> = members
        .into_iter()
        .filter(|m| Uuid::parse_str(m).map_or(true, |u| !held.contains(&u) && !changed(&u)))
        .collect();
    for chunk in stale.chunks(defaults::CLUSTER_REASSERT_CHUNK) {
        let mut invocation = shared.scripts.drop_stale.arg(&shared.keys.prefix);
        invocation.arg(node).arg(chunk);
        shared
            .command("reassert", invocation.invoke_async::<i64>(&mut conn))
            .await?;
    }
    let mut lost = Vec::new();
    for chunk in snapshot.chunks(defaults::CLUSTER_REASSERT_CHUNK) {
        let mut invocation = shared.scripts.reassert.arg(&shared.keys.prefix);
        invocation.arg(node);
        for (uuid, holder) in chunk.iter().filter(|(u, _)| !changed(u)) {
            invocation
                .arg(uuid.to_string())
                .arg(holder.session)
                .arg(&holder.user)
                .arg(&holder.name);
        }
        let taken: Vec<String> = shared
            .command("reassert", invocation.invoke_async(&mut conn))
            .await?;
        lost.extend(taken);
    }
    let report = Reasserted {
        registrations: snapshot.len(),
        lost: lost.len(),
        stale: stale.len(),
    };
    tell_lost(shared, &snapshot, &lost);
    ClusterMetrics::inc(&shared.metrics.reasserts);
    if report.registrations + report.lost + report.stale > 0 {
        log::info!("cluster node {node}: re-asserted registrations: {report:?}");
    } else {
        log::debug!("cluster node {node}: re-asserted registrations: none to re-assert");
    }
    Ok(report)
}

/// Hands a `Takeover` to the node for each of its sessions whose UUID
/// another live node holds now.
fn tell_lost(shared: &Shared, snapshot: &[(Uuid, Holder)], lost: &[String]) {
    let lost: HashSet<&str> = lost.iter().map(String::as_str).collect();
    for (uuid, holder) in snapshot {
        if lost.contains(uuid.to_string().as_str()) {
            log::info!(
                "[cluster {uuid}] held by another node after the outage: session {} loses it",
                holder.session
            );
            // Counted by the registry when the session still holds it.
            let takeover = Delivery::Takeover {
                uuid: *uuid,
                session: holder.session,
            };
            shared.hand_over(takeover);
        }
    }
}
