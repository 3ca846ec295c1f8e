//! Proves a cluster outlives a node killed with SIGKILL (no shutdown, no
//! goodbye): within the node TTL the survivor counts one live node, the
//! PeerManager that was on the killed node re-registers on the survivor
//! under the same UUID and is reached there, and a host agent with a pool on
//! both nodes keeps serving the tunnel through the survivor. And forged,
//! oversized or malformed payloads published on a node's Redis channel are
//! counted and dropped: the node keeps forwarding across nodes. A node
//! started while Redis refuses connections logs that once, and nothing
//! about re-asserting when it holds no registration.
//!
//! Both nodes are `switchboard` processes on one real redis-server (free
//! loopback ports); without redis-server the test fails saying so, unless
//! SWITCHBOARD_SKIP_REDIS=1.

mod cluster_common;
mod common;
mod tunnel_common;

use std::time::{Duration, Instant};

use cluster_common::{redis_available, Redis};
use common::peers::{manager, peer_config, recv};
use common::procs::{after, http_get, write_temp, Proc, RelayProc};
use common::refusing::Refusing;
use common::{client, offer, recv_text, send, UUID_A, UUID_B};
use switchboard::client::peer_manager::Send;
use switchboard::protocol::chunk::Payload;
use tunnel_common::exchange;

const TOKEN: &str = "cluster-failover-token";

fn node_config(redis: &str, id: &str) -> String {
    format!(
        r#"{}
[cluster]
enabled = true
redis_url = "{redis}"
node_id = "{id}"
key_prefix = "sbfailover:"
heartbeat_ms = 200
node_ttl_ms = 1500
command_timeout_ms = 400
self_check_ms = 500
"#,
        tunnel_common::echo_relay_config(TOKEN)
    )
}

/// The node's WebSocket URL, from its startup line.
fn ws_url(node: &mut RelayProc) -> String {
    let line = node.proc.wait_line("relay listening on");
    after(&line, "listening on ")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// Polls `path` on `node`'s admin listener until `want` holds (≤ `limit`).
async fn admin_until(node: &RelayProc, path: &str, limit: Duration, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let body = http_get(node.admin, path).await;
        if want(&body) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never matched: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nodes `node-a` and `node-b` on `redis`, each up and seeing two live
/// nodes; with their WebSocket URLs.
async fn two_nodes(redis: &Redis) -> (RelayProc, RelayProc, String, String) {
    let mut a = RelayProc::start(&node_config(&redis.url(), "node-a"));
    let mut b = RelayProc::start(&node_config(&redis.url(), "node-b"));
    let (url_a, url_b) = (ws_url(&mut a), ws_url(&mut b));
    for node in [&a, &b] {
        admin_until(node, "/health", Duration::from_secs(10), |body| {
            body.contains("\"cluster\":\"up\"") && body.contains("\"cluster_nodes\":2")
        })
        .await;
    }
    (a, b, url_a, url_b)
}

#[actix_rt::test]
async fn a_killed_node_is_forgotten_and_its_peers_and_agents_carry_on() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (mut a, mut b, url_a, url_b) = two_nodes(&redis).await;

    let mut moving = peer_config(&url_a, 1);
    moving.relay.fallback_urls = vec![url_b.clone()];
    let (moving, moving_uuid) = manager(moving).await;
    let (staying, _) = manager(peer_config(&url_b, 1)).await;
    let token = write_temp(&format!("{TOKEN}\n"));
    let mut host = Proc::start(&[
        "host",
        "--relay",
        &a.agents,
        "--relay",
        &b.agents,
        "--service",
        "echo",
        "--token-file",
        token.path().to_str().unwrap(),
        "--echo",
        "--pool",
        "2",
    ]);
    for node in [&a, &b] {
        admin_until(node, "/tunnels", Duration::from_secs(10), |body| {
            body.contains("\"pool_idle\":2")
        })
        .await;
    }
    assert_eq!(
        exchange(a.service("echo"), b"on node A").await,
        b"on node A"
    );

    a.proc.signal("KILL");
    a.proc.wait_exit();
    let killed = Instant::now();
    // The survivor counts one live node within the TTL (1.5 s) plus margin.
    admin_until(&b, "/health", Duration::from_secs(5), |body| {
        body.contains("\"cluster_nodes\":1")
    })
    .await;
    eprintln!(
        "node-a gone from node-b's view {:?} after SIGKILL",
        killed.elapsed()
    );
    // The PeerManager of the killed node is registered on the survivor.
    let listed = moving_uuid.to_string();
    admin_until(&b, "/clients?scope=local", Duration::from_secs(5), |body| {
        body.contains(&listed)
    })
    .await;
    let text = Payload::Text("reached on the survivor".into());
    staying
        .send(Send {
            peer: moving_uuid,
            payload: text.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&moving).await.payload, text);
    // The agent's pool on the survivor serves the tunnel; the agent lives on.
    assert_eq!(
        exchange(b.service("echo"), b"on node B").await,
        b"on node B"
    );
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the agent exited when one node was killed"
    );
    assert!(host.terminate().success());
    assert!(b.proc.terminate().success());
}

#[actix_rt::test]
async fn forged_payloads_on_a_nodes_channel_are_dropped_and_counted() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (mut a, mut b, url_a, url_b) = two_nodes(&redis).await;
    let channel = "sbfailover:node:node-b";
    let oversized = "x".repeat(3 << 20);
    let forged = [
        "not an envelope at all",
        "{\"v\":99,\"kind\":\"forward\"}\n{}",
        "{\"v\":1,\"kind\":\"forward\",\"from\":\"nope\",\"to\":\"nope\"}\nhi",
        "",
        oversized.as_str(),
    ];
    let mut raw = redis.raw();
    for payload in forged {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut raw)
            .expect("PUBLISH");
        assert_eq!(receivers, 1, "node-b is not subscribed to {channel}");
    }
    admin_until(&b, "/metrics", Duration::from_secs(5), |body| {
        body.lines().any(|line| {
            line.strip_prefix("switchboard_cluster_decode_failures_total ")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= forged.len() as u64)
        })
    })
    .await;
    // Node B still serves and still takes forwards from node A.
    let mut on_a = client(&url_a, "peer-A", UUID_A).await;
    let mut on_b = client(&url_b, "peer-B", UUID_B).await;
    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut on_a, frame.clone()).await;
    assert_eq!(recv_text(&mut on_b).await, frame);
    assert!(b.proc.terminate().success());
    assert!(a.proc.terminate().success());
}

#[actix_rt::test]
async fn redis_away_at_start_with_nothing_registered_warns_only_once() {
    // Redis refuses connections: the node starts degraded and says so once;
    // with no registration yet there is nothing to re-assert to warn about.
    let refusing = Refusing::new();
    let url = format!("redis://{}", refusing.addr());
    let mut node = RelayProc::start(&node_config(&url, "node-a"));
    node.proc.wait_line("cannot reach Redis");
    node.proc.wait_line("cluster node node-a started");
    let url_a = ws_url(&mut node);
    let _peer = client(&url_a, "peer-A", UUID_A).await;
    node.proc.wait_line("registered on this node only");
    let seen = node.proc.log.seen().join("\n");
    assert!(!seen.contains("made before the engine started"), "{seen}");
    assert!(node.proc.terminate().success());
}
