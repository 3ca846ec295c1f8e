//! Engine-level helpers of the cluster tests: one node's engine with the
//! registrations it would re-assert, fast timings, bounded waits.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::cluster::{
    Cluster, ClusterState, Delivery, Envelope, Holder, Inbox, RegisterOutcome, RegistrationSource,
};
use switchboard::config::{ClusterSettings, RedisUrl};
use uuid::Uuid;

/// Longest wait for anything in these tests.
pub const LIMIT: Duration = Duration::from_secs(10);
/// Liveness TTL of the test nodes: a few heartbeats, with room for a
/// loaded machine (a node whose heartbeat stalls this long dies).
pub const NODE_TTL_MS: u64 = 1_500;
/// Relay messages of at most this many bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Fast timings, so failures show within a second.
pub fn settings(url: &str) -> ClusterSettings {
    ClusterSettings {
        enabled: true,
        redis_url: RedisUrl::new(url),
        key_prefix: "sbtest:".into(),
        heartbeat_ms: 200,
        node_ttl_ms: NODE_TTL_MS,
        command_timeout_ms: 400,
        connect_timeout_ms: 1_000,
        self_check_ms: 500,
        ..ClusterSettings::default()
    }
}

/// One node's engine and the registrations it would re-assert.
pub struct Node {
    pub cluster: Cluster,
    pub inbox: Inbox,
    pub held: Arc<Mutex<Vec<(Uuid, Holder)>>>,
}

impl Node {
    pub async fn start(url: &str, id: &str) -> Node {
        let held: Arc<Mutex<Vec<(Uuid, Holder)>>> = Arc::default();
        let source_held = held.clone();
        let source: RegistrationSource = Arc::new(move || {
            let held = source_held.clone();
            Box::pin(async move { held.lock().unwrap().clone() })
        });
        let (cluster, inbox) = Cluster::start(&settings(url), id.into(), MAX_MESSAGE, source)
            .await
            .expect("engine starts");
        let node = Node {
            cluster,
            inbox,
            held,
        };
        node.wait_state(true).await;
        node
    }

    /// Registers in Redis and keeps it as held here (for re-assertion).
    pub async fn register(&self, uuid: Uuid, session: u64, user: &str) -> RegisterOutcome {
        let holder = holder(session, user);
        let outcome = self
            .cluster
            .register(uuid, &holder)
            .await
            .expect("register");
        if outcome == RegisterOutcome::Registered
            || matches!(outcome, RegisterOutcome::TakenOver { .. })
        {
            self.held.lock().unwrap().push((uuid, holder));
        }
        outcome
    }

    pub async fn wait_state(&self, up: bool) -> ClusterState {
        let mut watch = self.cluster.state();
        let found = tokio::time::timeout(LIMIT, watch.wait_for(|s| s.is_up() == up)).await;
        let found = found.unwrap_or_else(|_| panic!("state never became up={up}"));
        let state: ClusterState = found.expect("engine running").clone();
        state
    }

    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(LIMIT, self.inbox.recv())
            .await
            .expect("a delivery within the limit")
            .expect("engine running")
    }
}

pub fn holder(session: u64, user: &str) -> Holder {
    Holder {
        session,
        user: user.into(),
        name: format!("peer-{session}"),
    }
}

pub fn forward(from: Uuid, to: Uuid, text: &str) -> Envelope {
    Envelope::Forward {
        from,
        to,
        user: "alice".into(),
        text: text.into(),
    }
}

/// `a` forwards `text` from `from` to `to` on node-b; `b` (node-b) must
/// deliver exactly that next.
pub async fn forward_arrives(a: &Node, b: &mut Node, from: Uuid, to: Uuid, text: &str) {
    a.cluster
        .forward("node-b", &forward(from, to, text))
        .await
        .unwrap_or_else(|e| panic!("forward {text:?}: {e}"));
    assert_eq!(
        b.next().await,
        Delivery::Forward {
            from,
            to,
            user: "alice".into(),
            text: text.into()
        }
    );
}

/// Polls `check` until it is true, at most [`LIMIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {LIMIT:?}");
}
