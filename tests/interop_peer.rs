//! Proves Switchboard's peers talk to ProxyStore 1.1.0's own Python peers
//! (PeerManager + aiortc), in both directions, through the Switchboard relay
//! and through ProxyStore's `proxystore-relay`: bytes, ASCII and non-ASCII
//! text, a multi-chunk message over 1 MiB, with 1 and 4 channels. Also Rust
//! peers talking to each other through ProxyStore's relay.
//!
//! The Python side is `tests/interop/peer.py`, run with `$SWITCHBOARD_PYTHON`
//! (the venv `scripts/test` creates). The tests fail, never skip, when it is unset.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use common::peers::{manager, peer_config, recv};
use common::{test_settings, TestRelay};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard::client::peer_manager::{PeerManager, Send};
use switchboard::protocol::chunk::Payload;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

/// Longest wait for one line from a Python peer.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    let python = std::env::var_os("SWITCHBOARD_PYTHON").expect(
        "SWITCHBOARD_PYTHON is not set: run scripts/test, which creates the ProxyStore venv",
    );
    PathBuf::from(python)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/peer.py")
}

/// A running `peer.py`, killed on drop.
struct PyPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PyPeer {
    fn spawn(relay: &str, uuid: Uuid, channels: usize, action: &[&str]) -> PyPeer {
        let mut child = Command::new(python())
            .arg(script())
            .args(["--relay", relay, "--uuid", &uuid.to_string()])
            .args(["--channels", &channels.to_string(), "--timeout", "90"])
            .args(action)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start peer.py");
        let stdout = child.stdout.take().unwrap();
        PyPeer {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next event line, skipping "connected" (which the NAT lab reads).
    async fn event(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line())
                .await
                .expect("peer.py printed nothing for 60 s")
                .expect("read peer.py output")
                .expect("peer.py exited early");
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
            if value["event"] != "connected" {
                return value;
            }
        }
    }

    async fn expect(&mut self, event: &str) -> Value {
        let value = self.event().await;
        assert_eq!(value["event"], event, "{value}");
        value
    }

    async fn success(mut self) {
        let status = tokio::time::timeout(LINE_TIMEOUT, self.child.wait())
            .await
            .expect("peer.py did not exit")
            .unwrap();
        assert!(status.success(), "peer.py failed: {status}");
    }
}

/// peer.py's `--bytes-len N --seed S` pattern.
fn pattern(len: usize, seed: usize) -> Bytes {
    (0..len)
        .map(|i| ((131 * i + seed) % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn describe(payload: &Payload) -> (String, usize, String) {
    let kind = match payload {
        Payload::Bytes(_) => "bytes",
        Payload::Text(_) => "str",
    };
    (kind.into(), payload.len(), sha256(payload.as_bytes()))
}

fn messages() -> Vec<Payload> {
    vec![
        Payload::Bytes(Bytes::from_static(b"\x00\xffbinary")),
        Payload::Text("plain ASCII text".into()),
        Payload::Text("zażółć gęślą jaźń ✓ 猫".into()),
        Payload::Bytes(pattern((1 << 20) + 12_345, 7)),
    ]
}

/// Rust sends to a listening ProxyStore peer; it checks every message's hash.
async fn rust_to_python(relay: &str, channels: usize) {
    let py_uuid = Uuid::new_v4();
    let count = messages().len().to_string();
    let mut py = PyPeer::spawn(relay, py_uuid, 1, &["listen", "--count", &count]);
    py.expect("ready").await;
    let (rust, rust_uuid) = manager(peer_config(relay, channels)).await;
    let mut sent: Vec<_> = messages().iter().map(describe).collect();
    for message in messages() {
        rust.send(Send {
            peer: py_uuid,
            payload: message,
        })
        .await
        .unwrap()
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let event = py.expect("recv").await;
        assert_eq!(event["peer"], rust_uuid.to_string());
        got.push((
            event["kind"].as_str().unwrap().to_owned(),
            event["len"].as_u64().unwrap() as usize,
            event["sha256"].as_str().unwrap().to_owned(),
        ));
    }
    sent.sort();
    got.sort();
    assert_eq!(got, sent);
    py.success().await;
}

/// A ProxyStore peer offers and sends; Rust receives and echoes; the Python
/// peer checks the echo.
async fn python_to_rust(relay: &str, rust: &Addr<PeerManager>, rust_uuid: Uuid, channels: usize) {
    let cases: Vec<(Vec<String>, Payload)> = vec![
        (
            vec![
                "--bytes-len".into(),
                "1572864".into(),
                "--seed".into(),
                "3".into(),
            ],
            Payload::Bytes(pattern(1_572_864, 3)),
        ),
        (
            vec!["--text".into(), "hello from aiortc".into()],
            Payload::Text("hello from aiortc".into()),
        ),
        // ProxyStore counts characters in the length field; we still get all of it.
        (
            vec!["--text".into(), "grüß dich ✓".into()],
            Payload::Text("grüß dich ✓".into()),
        ),
    ];
    for (args, expected) in cases {
        let py_uuid = Uuid::new_v4();
        let target = rust_uuid.to_string();
        let mut action: Vec<&str> = vec!["send", &target];
        action.extend(args.iter().map(String::as_str));
        action.push("--expect-echo");
        let mut py = PyPeer::spawn(relay, py_uuid, channels, &action);
        let got = recv(rust).await;
        assert_eq!(got.peer, py_uuid);
        assert_eq!(got.payload, expected);
        rust.send(Send {
            peer: py_uuid,
            payload: got.payload,
        })
        .await
        .unwrap()
        .unwrap();
        let sent = py.expect("sent").await;
        let echo = py.expect("recv").await;
        assert_eq!(echo["sha256"], sent["sha256"], "echo differs: {echo}");
        assert_eq!(echo["sha256"], sha256(expected.as_bytes()));
        py.success().await;
    }
}

#[actix_rt::test]
async fn rust_to_proxystore_through_switchboard_one_channel() {
    let relay = TestRelay::start(test_settings());
    rust_to_python(&relay.url, 1).await;
}

#[actix_rt::test]
async fn rust_to_proxystore_through_switchboard_four_channels() {
    let relay = TestRelay::start(test_settings());
    rust_to_python(&relay.url, 4).await;
}

#[actix_rt::test]
async fn proxystore_to_rust_through_switchboard_one_and_four_channels() {
    let relay = TestRelay::start(test_settings());
    let (rust, rust_uuid) = manager(peer_config(&relay.url, 1)).await;
    python_to_rust(&relay.url, &rust, rust_uuid, 1).await;
    python_to_rust(&relay.url, &rust, rust_uuid, 4).await;
}

/// ProxyStore's own relay, on a free loopback port; killed on drop.
struct ProxyStoreRelay {
    _child: Child,
    url: String,
}

impl ProxyStoreRelay {
    async fn start() -> ProxyStoreRelay {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = python().parent().unwrap().join("proxystore-relay");
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start proxystore-relay");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return ProxyStoreRelay {
                    _child: child,
                    url: format!("ws://127.0.0.1:{port}"),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxystore-relay did not listen on {port} within 10 s");
    }
}

#[actix_rt::test]
async fn rust_peers_through_proxystore_relay() {
    let relay = ProxyStoreRelay::start().await;
    let (a, uuid_a) = manager(peer_config(&relay.url, 4)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 4)).await;
    for message in messages() {
        a.send(Send {
            peer: uuid_b,
            payload: message.clone(),
        })
        .await
        .unwrap()
        .unwrap();
        let got = recv(&b).await;
        assert_eq!((got.peer, got.payload), (uuid_a, message));
    }
    b.send(Send::text(uuid_a, "reply")).await.unwrap().unwrap();
    assert_eq!(recv(&a).await.payload, Payload::Text("reply".into()));
}

#[actix_rt::test]
async fn rust_and_proxystore_through_proxystore_relay() {
    let relay = ProxyStoreRelay::start().await;
    rust_to_python(&relay.url, 4).await;
    let (rust, rust_uuid) = manager(peer_config(&relay.url, 1)).await;
    python_to_rust(&relay.url, &rust, rust_uuid, 1).await;
}
