//! Proves that relay nodes sharing one real redis-server act as one relay: forwards cross nodes both ways byte-exact and a closed socket's registration leaves Redis (the echo follows), an unknown peer on a 3-node cluster and another user's peer get the one-node error echoes, another user's UUID on another node is refused with 4002, a takeover on another node closes the old socket with 4004 and leaves the new registration working, 10 000 cross-node messages of one sender keep their order, the admin endpoints show the cluster (state and node count, clients of every node, cluster counters), Redis SIGKILLed and restarted leaves local traffic working while cross-node forwards get the echo until it is back, a node that stops is gone from the others at once (well within the TTL) and from the node list, and with the cluster off nothing touches Redis.
//!
//! Each test starts its own `redis-server` on a free 127.0.0.1 port and
//! its nodes with `node::start` on 127.0.0.1:0 in one actix System
//! (`tests/cluster_common`); without redis-server installed the tests fail
//! saying so, unless `SWITCHBOARD_SKIP_REDIS=1`.

mod cluster_common;
mod common;
#[path = "cluster_common/nodes.rs"]
mod nodes;

use std::time::Instant;

use cluster_common::{redis_available, Redis};
use common::*;
use futures_util::SinkExt;
use nodes::Nodes;
use switchboard::config::Settings;
use switchboard::protocol::relay::encode_peer_connection;
use switchboard::protocol::{decode, RelayMessage};

/// Settings of a cluster node on `redis`, from `base`.
fn clustered(base: Settings, redis: &Redis) -> Settings {
    let mut settings = base;
    settings.cluster = cluster_common::engine::settings(&redis.url());
    settings
}

/// `n` nodes `node-0`, `node-1`, … on `redis` with `base` settings.
fn cluster_of(n: usize, base: fn() -> Settings, redis: &Redis) -> Nodes {
    Nodes::start(
        (0..n)
            .map(|i| {
                let mut settings = clustered(base(), redis);
                settings.cluster.node_id = format!("node-{i}");
                settings
            })
            .collect(),
    )
}

/// What the one-node path sends back for `frame` with `error` set.
fn echo_of(frame: &str, error: String) -> String {
    let Ok(RelayMessage::PeerConnection(mut request)) = decode(frame) else {
        panic!("not a peer connection message: {frame}");
    };
    request.error = Some(error);
    encode_peer_connection(&request)
}

async fn authed(url: &str, token: &str) -> Ws {
    connect_with(url, &[("Authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_cross_nodes_both_ways_byte_exact() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(2, test_settings, &redis);
    let mut a = client(&cluster.node(0).url, "peer-A", UUID_A).await;
    let mut b = client(&cluster.node(1).url, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    let answer = offer(UUID_B, UUID_A, "answer");
    send(&mut b, answer.clone()).await;
    assert_eq!(recv_text(&mut a).await, answer);
    // Local traffic on a clustered node is as before.
    let mut c = client(&cluster.node(0).url, "peer-C", UUID_C).await;
    let local = offer(UUID_C, UUID_A, "offer");
    send(&mut c, local.clone()).await;
    assert_eq!(recv_text(&mut a).await, local);
    // Round trips, one in flight: cross-node (A and B) and same-node (A and C).
    const ROUNDS: u32 = 200;
    for (name, peer, there, back) in [
        ("cross-node", &mut b, frame.clone(), answer.clone()),
        (
            "same-node",
            &mut c,
            offer(UUID_A, UUID_C, "offer"),
            local.clone(),
        ),
    ] {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            send(&mut a, there.clone()).await;
            assert_eq!(recv_text(peer).await, there);
            send(peer, back.clone()).await;
            assert_eq!(recv_text(&mut a).await, back);
        }
        eprintln!(
            "{name} round trip (2 forwards), one in flight: {:?} on average",
            started.elapsed() / ROUNDS
        );
    }
    // B's socket closes: its record goes from Redis, and A gets the echo.
    b.close(None).await.expect("close B");
    let record = format!("sbtest:reg:{UUID_B}");
    let deadline = Instant::now() + cluster_common::engine::LIMIT;
    while redis.cli(&["EXISTS", &record]) != "0" {
        assert!(Instant::now() < deadline, "B's record stayed in Redis");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    send(&mut a, frame.clone()).await;
    let unknown = format!(
        "Cannot forward peer connection message to peer {UUID_B} because this peer is not registered this relay server."
    );
    assert_eq!(recv_text(&mut a).await, echo_of(&frame, unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_on_three_nodes_gets_the_one_node_echo() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(3, test_settings, &redis);
    let mut a = client(&cluster.node(0).url, "peer-A", UUID_A).await;
    let _b = client(&cluster.node(1).url, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_C, "offer");
    send(&mut a, frame.clone()).await;
    let error = format!(
        "Cannot forward peer connection message to peer {UUID_C} because this peer is not registered this relay server."
    );
    assert_eq!(recv_text(&mut a).await, echo_of(&frame, error));
    // The socket stays usable: a known peer on another node is reached.
    let mut c = client(&cluster.node(2).url, "peer-C", UUID_C).await;
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut c).await, frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_uuid_across_nodes_is_refused() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(2, token_settings, &redis);
    let mut alice = authed(&cluster.node(0).url, "alice-token").await;
    register(&mut alice, "alice-A", UUID_A).await;
    // Bob asks for Alice's UUID on the other node: 4002.
    let mut bob = authed(&cluster.node(1).url, "bob-token").await;
    send(&mut bob, registration("bob-A", UUID_A)).await;
    let (code, reason) = expect_close(&mut bob).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(reason.contains(UUID_A), "{reason}");
    // Bob's own peer on node 1 cannot reach Alice's peer on node 0.
    let mut bob = authed(&cluster.node(1).url, "bob-token").await;
    register(&mut bob, "bob-B", UUID_B).await;
    let frame = offer(UUID_B, UUID_A, "offer");
    send(&mut bob, frame.clone()).await;
    let error = format!("The requested peer {UUID_A} is owned by a different user.");
    assert_eq!(recv_text(&mut bob).await, echo_of(&frame, error));
    // Alice's registration is untouched: her own peer elsewhere reaches it.
    let mut alice_c = authed(&cluster.node(1).url, "alice-token").await;
    register(&mut alice_c, "alice-C", UUID_C).await;
    let frame = offer(UUID_C, UUID_A, "offer");
    send(&mut alice_c, frame.clone()).await;
    assert_eq!(recv_text(&mut alice).await, frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_across_nodes_closes_the_old_socket_with_4004() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(3, test_settings, &redis);
    let mut old = client(&cluster.node(0).url, "peer-A", UUID_A).await;
    let mut new = client(&cluster.node(1).url, "peer-A", UUID_A).await;
    let (code, _) = expect_close(&mut old).await;
    assert_eq!(code, 4004);
    for (node, name, count) in [(0, "in", 1), (1, "out", 1), (1, "in", 0)] {
        let (_, metrics) = http_get(cluster.node(node).admin, "/metrics", None).await;
        let line = format!("switchboard_cluster_takeovers_{name}_total {count}\n");
        assert!(metrics.contains(&line), "node {node}: {line} {metrics}");
    }
    // The old socket's late close does not erase the new registration.
    let _ = old.close(None).await;
    drop(old);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A peer on the old node, and one on a third node, still reach it.
    for i in [0, 2] {
        let source = uuid::Uuid::new_v4().to_string();
        let mut c = client(&cluster.node(i).url, "peer-C", &source).await;
        let frame = offer(&source, UUID_A, "offer");
        send(&mut c, frame.clone()).await;
        assert_eq!(recv_text(&mut new).await, frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_messages_of_one_sender_keep_their_order() {
    if !redis_available() {
        return;
    }
    const COUNT: usize = 10_000;
    let redis = Redis::start();
    // The receiving test client may read slower than a flood arrives:
    // room for all of it, so it is not closed as a slow consumer.
    fn roomy() -> Settings {
        let mut settings = test_settings();
        settings.server.outbound_queue = 2 * COUNT;
        settings
    }
    let cluster = cluster_of(2, roomy, &redis);
    let mut a = client(&cluster.node(0).url, "peer-A", UUID_A).await;
    let mut b = client(&cluster.node(1).url, "peer-B", UUID_B).await;
    let frames: Vec<String> = (0..COUNT)
        .map(|i| offer(UUID_A, UUID_B, "offer").replace("peer-A", &format!("peer-A-{i}")))
        .collect();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for frame in frames {
            a.feed(tokio_tungstenite::tungstenite::Message::text(frame))
                .await
                .expect("send");
        }
        a.flush().await.expect("flush");
        a
    });
    for i in 0..COUNT {
        let text = recv_text(&mut b).await;
        assert!(
            text.contains(&format!("\"peer-A-{i}\"")),
            "message {i} out of order: {text}"
        );
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{COUNT} cross-node messages in {elapsed:?} ({:.0} msg/s)",
        COUNT as f64 / elapsed.as_secs_f64()
    );
    let _a = sender.await.expect("sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cluster_off_nothing_touches_redis() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut settings = clustered(test_settings(), &redis);
    settings.cluster.enabled = false;
    let node = Nodes::start(vec![settings]);
    let mut a = client(&node.node(0).url, "peer-A", UUID_A).await;
    let mut b = client(&node.node(0).url, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    let frame = offer(UUID_A, UUID_C, "offer");
    send(&mut a, frame.clone()).await;
    let error = format!(
        "Cannot forward peer connection message to peer {UUID_C} because this peer is not registered this relay server."
    );
    assert_eq!(recv_text(&mut a).await, echo_of(&frame, error));
    let (status, body) = http_get(node.node(0).admin, "/health", None).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["cluster"], "off", "{health}");
    assert_eq!(health["cluster_nodes"], serde_json::Value::Null, "{health}");
    let (_, metrics) = http_get(node.node(0).admin, "/metrics", None).await;
    assert!(!metrics.contains("switchboard_cluster_"), "{metrics}");
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    let clients = redis.cli(&["CLIENT", "LIST"]);
    assert_eq!(
        clients.lines().count(),
        1,
        "only redis-cli connected: {clients}"
    );
}

/// `/health` of `admin` as JSON (asserting 200).
async fn health(admin: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/health` of `admin` until its cluster state is `state`.
async fn wait_cluster_state(admin: std::net::SocketAddr, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + cluster_common::engine::LIMIT;
    loop {
        let json = health(admin).await;
        if json["cluster"] == state {
            return json;
        }
        assert!(Instant::now() < deadline, "never {state}: {json}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shows_the_cluster() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let cluster = cluster_of(2, test_settings, &redis);
    let (n0, n1) = (cluster.node(0), cluster.node(1));
    let mut a = client(&n0.url, "peer-A", UUID_A).await;
    let mut b = client(&n1.url, "peer-B", UUID_B).await;
    let json = health(n0.admin).await;
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["cluster"], "up", "{json}");
    assert_eq!(json["cluster_nodes"], 2, "{json}");
    assert_eq!(
        json["cluster_node_ids"],
        serde_json::json!(["node-0", "node-1"]),
        "{json}"
    );
    assert_eq!(json["registered"], 1, "{json}");
    // The whole cluster, each entry naming its node.
    let (status, body) = http_get(n0.admin, "/clients", None).await;
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = all.as_array().unwrap();
    assert_eq!(list.len(), 2, "{all}");
    let here = list.iter().find(|c| c["uuid"] == UUID_A).expect("A listed");
    assert_eq!(here["node"], "node-0");
    assert_eq!(here["name"], "peer-A");
    assert!(here["remote_address"].is_string(), "{here}");
    let there = list.iter().find(|c| c["uuid"] == UUID_B).expect("B listed");
    assert_eq!(there["node"], "node-1");
    assert_eq!(there["name"], "peer-B");
    let (_, body) = http_get(n1.admin, "/clients?scope=local", None).await;
    let local: serde_json::Value = serde_json::from_str(&body).unwrap();
    let local = local.as_array().unwrap();
    assert_eq!(local.len(), 1, "{local:?}");
    assert_eq!(local[0]["uuid"], UUID_B);
    assert_eq!(local[0]["node"], "node-1");
    // One cross-node forward, counted on both sides.
    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    // The sender counts the forward when Redis answers, which may be just
    // after B has it.
    let deadline = Instant::now() + cluster_common::engine::LIMIT;
    let out = loop {
        let (_, out) = http_get(n0.admin, "/metrics", None).await;
        if out.contains("switchboard_cluster_forwards_out_total 1\n") {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(out.contains("switchboard_cluster_up 1\n"), "{out}");
    assert!(out.contains("switchboard_cluster_redis_rtt_seconds_bucket{le=\"+Inf\"}"));
    assert!(out.ends_with("# EOF\n") && out.matches("# EOF").count() == 1);
    let (_, inn) = http_get(n1.admin, "/metrics", None).await;
    assert!(
        inn.contains("switchboard_cluster_forwards_in_total 1\n"),
        "{inn}"
    );
    assert!(
        inn.contains("switchboard_forwarded_messages_total 1\n"),
        "{inn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_local_traffic_goes_on_cross_node_comes_back() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let cluster = cluster_of(2, test_settings, &redis);
    let (n0, n1) = (cluster.node(0), cluster.node(1));
    let mut a = client(&n0.url, "peer-A", UUID_A).await;
    let mut c = client(&n0.url, "peer-C", UUID_C).await;
    let mut b = client(&n1.url, "peer-B", UUID_B).await;
    let cross = offer(UUID_A, UUID_B, "offer");
    let local = offer(UUID_C, UUID_A, "offer");
    send(&mut a, cross.clone()).await;
    assert_eq!(recv_text(&mut b).await, cross);

    redis.kill();
    let json = wait_cluster_state(n0.admin, "degraded").await;
    assert_eq!(json["registered"], 2, "{json}");
    let unknown = format!(
        "Cannot forward peer connection message to peer {UUID_B} because this peer is not registered this relay server."
    );
    for _ in 0..3 {
        send(&mut c, local.clone()).await;
        assert_eq!(recv_text(&mut a).await, local);
        send(&mut a, cross.clone()).await;
        assert_eq!(recv_text(&mut a).await, echo_of(&cross, unknown.clone()));
    }
    // A registration while Redis is away works locally.
    let late = uuid::Uuid::new_v4().to_string();
    let mut d = client(&n0.url, "peer-D", &late).await;
    send(&mut d, offer(&late, UUID_A, "offer")).await;
    assert_eq!(recv_text(&mut a).await, offer(&late, UUID_A, "offer"));

    let restarted = Instant::now();
    redis.restart();
    wait_cluster_state(n0.admin, "up").await;
    wait_cluster_state(n1.admin, "up").await;
    eprintln!(
        "cluster up again {:?} after the restart",
        restarted.elapsed()
    );
    send(&mut c, local.clone()).await;
    assert_eq!(recv_text(&mut a).await, local);
    send(&mut a, cross.clone()).await;
    assert_eq!(recv_text(&mut b).await, cross);
    // The registration made during the outage was re-asserted: B reaches D.
    let back = offer(UUID_B, &late, "answer");
    send(&mut b, back.clone()).await;
    assert_eq!(recv_text(&mut d).await, back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_gone_from_the_others_at_once() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let node = |id: &str| {
        let mut settings = clustered(test_settings(), &redis);
        settings.cluster.node_id = id.into();
        Nodes::start(vec![settings])
    };
    let staying = node("node-0");
    let mut leaving = node("node-1");
    let mut a = client(&staying.node(0).url, "peer-A", UUID_A).await;
    let mut b = client(&leaving.node(0).url, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
    assert_eq!(health(staying.node(0).admin).await["cluster_nodes"], 2);

    let stopped = Instant::now();
    leaving.stop();
    let (code, _) = expect_close(&mut b).await;
    assert_eq!(code, 1001);
    // Well within the node TTL: its liveness key was deleted at shutdown.
    send(&mut a, frame.clone()).await;
    let unknown = format!(
        "Cannot forward peer connection message to peer {UUID_B} because this peer is not registered this relay server."
    );
    assert_eq!(recv_text(&mut a).await, echo_of(&frame, unknown));
    assert!(
        stopped.elapsed().as_millis() < u128::from(cluster_common::engine::NODE_TTL_MS),
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(health(staying.node(0).admin).await["cluster_nodes"], 1);
    // It left the node list and kept no keys (nothing for the others to reap).
    assert_eq!(redis.cli(&["SMEMBERS", "sbtest:nodes"]), "node-0");
    assert_eq!(redis.cli(&["EXISTS", "sbtest:node:node-1:clients"]), "0");
    let (_, body) = http_get(staying.node(0).admin, "/clients", None).await;
    assert!(!body.contains(UUID_B), "{body}");
    // B comes back through the staying node and is reached there.
    let mut b = client(&staying.node(0).url, "peer-B", UUID_B).await;
    send(&mut a, frame.clone()).await;
    assert_eq!(recv_text(&mut b).await, frame);
}
