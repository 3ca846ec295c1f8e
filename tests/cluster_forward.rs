//! Proves a forward to a peer on another node is one round trip to Redis, and that the receiving node applies the one-node user rule itself: the engine's forward script reports sent / unknown / dead node / other user as the relay needs for its echo, a node's cross-node forward issues exactly one command to Redis (seen with `MONITOR`), a node whose script Redis forgot loads it again after one failed forward, and an envelope published on a node's channel that names another user than the target peer's, or whose text is no peer_connection between the envelope's two UUIDs (not JSON, empty, 5 000 levels deep, a registration, other UUIDs), is not delivered while one naming the right user is; a forged takeover notice for a session that does not hold the UUID closes nothing and is not counted.
//!
//! Real redis-server on a free 127.0.0.1 port (tests/cluster_common);
//! without it the tests fail saying so, unless SWITCHBOARD_SKIP_REDIS=1.

mod cluster_common;
mod common;
#[path = "cluster_common/nodes.rs"]
mod nodes;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_common::engine::{forward, Node, LIMIT};
use cluster_common::{redis_available, Redis};
use common::fixtures::token_settings;
use common::*;
use futures_util::StreamExt;
use nodes::Nodes;
use switchboard::cluster::{Delivery, Envelope, Routed};
use switchboard::config::Settings;
use uuid::Uuid;

fn cluster_of(n: usize, base: fn() -> Settings, redis: &Redis) -> Nodes {
    Nodes::start(
        (0..n)
            .map(|i| {
                let mut settings = base();
                settings.cluster = cluster_common::engine::settings(&redis.url());
                settings.cluster.node_id = format!("node-{i}");
                settings
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_script_finds_checks_and_publishes() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a").await;
    let mut b = Node::start(&redis.url(), "node-b").await;
    let (from, alices, bobs, mine) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    b.register(alices, 1, "alice").await;
    b.register(bobs, 2, "bob").await;
    a.register(mine, 3, "alice").await;
    // A peer of the sender's user on node-b: published there, delivered.
    let sent = a.cluster.route(&forward(from, alices, "hi")).await.unwrap();
    assert_eq!(
        sent,
        Routed::Sent {
            node: "node-b".into()
        }
    );
    assert_eq!(
        b.next().await,
        Delivery::Forward {
            from,
            to: alices,
            user: "alice".into(),
            text: "hi".into()
        }
    );
    // Another user's peer, an unknown one, one "held" by this very node:
    // nothing published.
    let other = a.cluster.route(&forward(from, bobs, "no")).await.unwrap();
    assert_eq!(
        other,
        Routed::OtherUser {
            node: "node-b".into()
        }
    );
    let unknown = forward(from, Uuid::new_v4(), "no");
    assert_eq!(a.cluster.route(&unknown).await.unwrap(), Routed::Unknown);
    let here = forward(from, mine, "no");
    assert_eq!(a.cluster.route(&here).await.unwrap(), Routed::Unknown);
    // A record of a node whose liveness key is gone.
    let ghost = Uuid::new_v4();
    redis.cli(&[
        "HSET",
        &format!("sbtest:reg:{ghost}"),
        "node",
        "node-z",
        "session",
        "1",
        "user",
        "alice",
        "name",
        "ghost",
    ]);
    let dead = a.cluster.route(&forward(from, ghost, "no")).await.unwrap();
    assert_eq!(
        dead,
        Routed::DeadNode {
            node: "node-z".into()
        }
    );
    // Only the first was published: node-b received nothing else.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.inbox.try_recv(), None);
    // Not a forward: refused without touching Redis.
    let takeover = Envelope::Takeover {
        uuid: ghost,
        session: 1,
    };
    assert!(a.cluster.route(&takeover).await.is_err());
}

/// `redis-cli MONITOR` on `redis`: the commands Redis runs, one a line.
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(redis: &Redis) -> Monitor {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "MONITOR"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli MONITOR starts");
        let stdout = child.stdout.take().expect("MONITOR output");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // MONITOR answers OK once it watches.
        let ok = lines.recv_timeout(LIMIT).expect("MONITOR answers");
        assert_eq!(ok, "OK");
        Monitor { child, lines }
    }

    /// Stops it and returns every line it printed.
    fn finish(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.try_iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_node_forward_is_one_command_to_redis() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(2, test_settings, &redis);
    let mut a = client(&cluster.node(0).url, "peer-A", UUID_A).await;
    let mut b = client(&cluster.node(1).url, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_B, "offer");
    // Once before watching (the node loads its script with its first forward).
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    let monitor = Monitor::start(&redis);
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = monitor.finish();
    // Commands a client sent (not those a script ran: `[0 lua]`) that
    // concern B: the forward's one script call.
    let sent: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(UUID_B) && !l.contains(" lua]"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].contains("\"EVALSHA\""), "{}", sent[0]);
    // Redis forgets its scripts (as after a restart the node did not see):
    // the next forward fails (the error echo) and loads the script again;
    // the one after is delivered.
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    send(&mut a, frame.clone()).await;
    let unknown = format!(
        "Cannot forward peer connection message to peer {UUID_B} because this peer is not registered this relay server."
    );
    let echoed = recv_text(&mut a).await;
    assert!(echoed.contains(&unknown), "{echoed}");
    let again = offer(UUID_A, UUID_B, "answer");
    send(&mut a, again.clone()).await;
    assert_eq!(recv_text(&mut b).await, again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_envelopes_are_not_delivered_and_a_forged_takeover_changes_nothing() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(2, token_settings, &redis);
    let mut alice = connect_with(
        &cluster.node(1).url,
        &[("Authorization", "Bearer alice-token")],
    )
    .await;
    register(&mut alice, "alice-B", UUID_B).await;
    let publish_text = |user: &str, text: &str| {
        let envelope = format!(
            "{{\"v\":1,\"node\":\"node-1\",\"kind\":\"forward\",\"from\":\"{UUID_A}\",\"to\":\"{UUID_B}\",\"user\":\"{user}\"}}\n{text}"
        );
        redis.cli(&["PUBLISH", "sbtest:node:node-1", &envelope])
    };
    let publish = |user: &str, kind: &str| publish_text(user, &offer(UUID_A, UUID_B, kind));
    // Bob's (forged) and the anonymous user's are dropped; so are texts that
    // are no peer_connection from A to B (a node checks what a client's
    // forward must be); Alice's arrives, and is the first thing her socket gets.
    assert_eq!(publish("bob", "offer"), "1");
    assert_eq!(publish("", "offer"), "1");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let registration = format!(
        "{{\"uuid\": \"{UUID_B}\", \"name\": \"x\", \"message_type\": \"relay_registration\"}}"
    );
    for text in [
        "not json",
        "",
        &deep,
        &registration,
        &offer(UUID_A, UUID_C, "offer"),
        &offer(UUID_C, UUID_B, "offer"),
    ] {
        assert_eq!(publish_text("alice", text), "1");
    }
    // A takeover notice for a session that does not hold B: nothing closes.
    let takeover = format!(
        "{{\"v\":1,\"node\":\"node-1\",\"kind\":\"takeover\",\"uuid\":\"{UUID_B}\",\"session\":999999}}"
    );
    assert_eq!(
        redis.cli(&["PUBLISH", "sbtest:node:node-1", &takeover]),
        "1"
    );
    assert_eq!(publish("alice", "answer"), "1");
    assert_eq!(recv_text(&mut alice).await, offer(UUID_A, UUID_B, "answer"));
    let more = tokio::time::timeout(Duration::from_millis(300), alice.next()).await;
    assert!(more.is_err(), "something else arrived: {more:?}");
    let (_, metrics) = http_get(cluster.node(1).admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_cluster_takeovers_in_total 0"),
        "{metrics}"
    );
}
