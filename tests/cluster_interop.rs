//! Proves ProxyStore's Python clients work unchanged across a Switchboard
//! cluster: ProxyStore 1.1.0's `RelayClient`s on different nodes register,
//! exchange offer and answer, get the unknown-peer echo and see a 4004
//! takeover made on a third node; and a ProxyStore (aiortc) `PeerManager` on
//! node A and a `switchboard peer` on node C open a data channel and move a
//! message whose sha256 both sides agree on.
//!
//! Needs `$SWITCHBOARD_PYTHON` (a venv with `proxystore[endpoints]==1.1.0`,
//! made by `scripts/test`; the test fails when it is unset) and redis-server.

mod cluster_common;
mod common;
#[path = "cluster_common/nodes.rs"]
mod nodes;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_common::{redis_available, Redis};
use common::*;
use nodes::Nodes;
use sha2::{Digest, Sha256};

fn python() -> String {
    match std::env::var("SWITCHBOARD_PYTHON") {
        Ok(python) if !python.trim().is_empty() => python,
        _ => panic!(
            "SWITCHBOARD_PYTHON is not set: this test needs a Python with \
             proxystore[endpoints]==1.1.0 (scripts/test makes the venv)"
        ),
    }
}

fn three_nodes(redis: &Redis) -> Nodes {
    Nodes::start(
        (0..3)
            .map(|i| {
                let mut settings = test_settings();
                settings.cluster = cluster_common::engine::settings(&redis.url());
                settings.cluster.node_id = format!("node-{i}");
                settings
            })
            .collect(),
    )
}

/// Runs `command`, killing it after `limit`; returns (exit code, stdout, stderr).
fn run_bounded(mut command: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn proxystore_relay_clients_on_three_nodes() {
    if !redis_available() {
        return;
    }
    let python = python();
    let redis = Redis::start();
    let cluster = three_nodes(&redis);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/relay_clients.py"
    );
    let mut command = Command::new(&python);
    command.arg(script);
    for node in &cluster.nodes {
        command.arg(&node.url);
    }
    let (code, stdout, stderr) = run_bounded(command, Duration::from_secs(60));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for check in [
        "A<->B: interop-peer-B received the offer",
        "relay closed A with 4004",
        "the replacement client exchanges messages with B",
    ] {
        assert!(stdout.contains(check), "missing {check:?}:\n{stdout}");
    }
}

#[test]
fn proxystore_peer_on_node_a_and_switchboard_peer_on_node_c() {
    if !redis_available() {
        return;
    }
    let python = python();
    let redis = Redis::start();
    let cluster = three_nodes(&redis);
    let listener_uuid = uuid::Uuid::new_v4().to_string();
    let peer_py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/peer.py");
    let mut listen = Command::new(&python);
    listen
        .arg(peer_py)
        .args(["--relay", &cluster.nodes[0].url, "--uuid", &listener_uuid])
        .args(["--timeout", "40", "listen", "--count", "1"]);
    let listener = std::thread::spawn(move || run_bounded(listen, Duration::from_secs(60)));
    // Wait until the ProxyStore peer is registered (on node A, seen from node C).
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    loop {
        let (_, body) = rt.block_on(http_get(cluster.nodes[2].admin, "/clients", None));
        if body.contains(&listener_uuid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ProxyStore peer never registered: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &payload).unwrap();
    let mut send = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    send.args([
        "peer",
        "--relay",
        &cluster.nodes[2].url,
        "--bind",
        "127.0.0.1",
    ])
    .args(["--timeout", "30", "send", &listener_uuid, "--file"])
    .arg(file.path());
    let (code, stdout, stderr) = run_bounded(send, Duration::from_secs(45));
    assert_eq!(code, Some(0), "switchboard peer send:\n{stdout}\n{stderr}");
    let (_, listened, listen_err) = listener.join().unwrap();
    let digest = format!("{:x}", Sha256::digest(&payload));
    assert!(
        listened.contains(&digest),
        "the ProxyStore peer did not get the bytes:\n{listened}\n{listen_err}"
    );
}
