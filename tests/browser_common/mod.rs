//! Shared helpers of the browser tests: headless Chromium running the browser
//! peer (`tests/browser/peer.html`) through `tests/browser/driver.mjs`, one
//! JSON line per command and per event, and what the tests send through it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use switchboard::protocol::chunk::Payload;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use uuid::Uuid;

/// Longest wait for Chromium to start and show the page.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one event or command result.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The variable that skips the browser tests (they fail without Chromium otherwise).
pub const SKIP_VAR: &str = "SWITCHBOARD_SKIP_BROWSER";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium's path, or `None` when `SWITCHBOARD_SKIP_BROWSER=1` asks to skip.
/// Panics, naming the fix, when Chromium, node or the npm driver is missing.
pub fn chromium() -> Option<PathBuf> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: skipping the browser test");
        return None;
    }
    let path = std::env::var_os("SWITCHBOARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium (scripts/test does), point \
         SWITCHBOARD_CHROMIUM at it, or set {SKIP_VAR}=1",
        path.display()
    );
    let driver = browser_dir().join("node_modules/playwright-core");
    assert!(
        driver.exists(),
        "{} is missing: run `npm ci` in tests/browser (scripts/test does)",
        driver.display()
    );
    Some(path)
}

/// byte i = (131 * i + seed) mod 251: the page's `pattern(len, seed)`.
pub fn pattern(len: usize, seed: usize) -> Bytes {
    (0..len)
        .map(|i| ((131 * i + seed) % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// Lowercase hex SHA-256.
pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A message the page sends: its `send` command fields, and what arrives.
pub struct PageMessage {
    pub fields: Value,
    pub payload: Payload,
}

impl PageMessage {
    pub fn text(text: &str) -> PageMessage {
        PageMessage {
            fields: json!({"kind": "text", "text": text}),
            payload: Payload::Text(text.to_owned()),
        }
    }

    pub fn bytes(len: usize, seed: usize) -> PageMessage {
        PageMessage {
            fields: json!({"kind": "bytes", "len": len, "seed": seed}),
            payload: Payload::Bytes(pattern(len, seed)),
        }
    }
}

/// Checks a page `recv` event against the payload that was sent.
pub fn assert_received(event: &Value, from: Uuid, sent: &Payload) {
    assert_eq!(event["event"], "recv", "{event}");
    assert_eq!(event["peer"], from.to_string(), "{event}");
    let kind = match sent {
        Payload::Text(_) => "text",
        Payload::Bytes(_) => "bytes",
    };
    assert_eq!(event["kind"], kind, "{event}");
    assert_eq!(event["len"], sent.len(), "{event}");
    assert_eq!(event["sha256"], sha256(sent.as_bytes()), "{event}");
    if let Payload::Text(text) = sent {
        assert_eq!(event["text"], text.as_str(), "{event}");
    }
}

/// Checks that a page `ready` event has the role and channel count expected
/// and that ICE chose host candidates on 127.0.0.1 at both ends.
pub fn assert_ready(event: &Value, peer: Uuid, role: &str, channels: usize) {
    assert_eq!(event["peer"], peer.to_string(), "{event}");
    assert_eq!(event["role"], role, "{event}");
    assert_eq!(event["channels"], channels, "{event}");
    for end in ["local", "remote"] {
        let candidate = &event["pair"][end];
        assert_eq!(candidate["address"], "127.0.0.1", "{end}: {event}");
        assert_eq!(candidate["type"], "host", "{end}: {event}");
    }
}

/// The driver process and its page; killed on drop.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: VecDeque<Value>,
    next_id: u64,
    /// Chromium's version, as the browser reports it.
    pub version: String,
}

impl Browser {
    /// Starts the driver and waits until the page is loaded with media permission.
    pub async fn launch(chromium: &Path) -> Browser {
        let dir = browser_dir();
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .arg("--chromium")
            .arg(chromium)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/driver.mjs (is Node.js installed?)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut browser = Browser {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            backlog: VecDeque::new(),
            next_id: 0,
            version: String::new(),
        };
        let ready = browser
            .wait_for("driver-ready", LAUNCH_TIMEOUT, |e| {
                e["event"] == "driver-ready"
            })
            .await;
        browser.version = ready["chromium"].as_str().unwrap_or_default().to_owned();
        browser
    }

    /// The next line from the driver; an `error` event from the page fails the test.
    async fn next_event(&mut self, limit: Duration, what: &str) -> Value {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("browser: no {what} within {limit:?}"))
            .expect("read the driver's output")
            .unwrap_or_else(|| panic!("browser driver exited while waiting for {what}"));
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver line {line:?}: {e}"));
        assert_ne!(
            event["event"], "error",
            "the page reported an error: {event}"
        );
        event
    }

    /// The first event (kept ones first) matching `want`; others are kept.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(at) = self.backlog.iter().position(&want) {
            return self.backlog.remove(at).expect("position is in range");
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left, what).await;
            if want(&event) {
                return event;
            }
            self.backlog.push_back(event);
        }
    }

    /// Sends a command; returns its id.
    pub async fn command(&mut self, mut command: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        command["id"] = json!(id);
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the driver");
        id
    }

    /// The result of command `id`; panics if it failed.
    pub async fn result(&mut self, id: u64) -> Value {
        let what = format!("the result of command {id}");
        let event = self
            .wait_for(&what, EVENT_TIMEOUT, |e| {
                e["id"] == id && (e["event"] == "done" || e["event"] == "failed")
            })
            .await;
        assert_eq!(event["event"], "done", "command {id} failed: {event}");
        event["result"].clone()
    }

    /// Runs a command to its result.
    pub async fn call(&mut self, command: Value) -> Value {
        let id = self.command(command).await;
        self.result(id).await
    }

    /// Registers the page with the relay at `url` under a new UUID.
    pub async fn register(&mut self, url: &str) -> Uuid {
        let uuid = Uuid::new_v4();
        self.call(json!({"cmd": "register", "relay": url, "uuid": uuid, "name": "chromium"}))
            .await;
        uuid
    }

    /// The next message the page received from `peer`.
    pub async fn recv_from(&mut self, peer: Uuid) -> Value {
        let peer = peer.to_string();
        self.wait_for("a message", EVENT_TIMEOUT, |e| {
            e["event"] == "recv" && e["peer"] == peer.as_str()
        })
        .await
    }

    /// The page's `ready` event for its connection to `peer`.
    pub async fn ready_with(&mut self, peer: Uuid) -> Value {
        let peer = peer.to_string();
        self.wait_for("a ready connection", EVENT_TIMEOUT, |e| {
            e["event"] == "ready" && e["peer"] == peer.as_str()
        })
        .await
    }

    /// Sends `message` to `peer` (opening a connection with `channels` if none); returns the result.
    pub async fn send(&mut self, peer: Uuid, channels: usize, message: &PageMessage) -> Value {
        let mut command = message.fields.clone();
        command["cmd"] = json!("send");
        command["peer"] = json!(peer);
        command["channels"] = json!(channels);
        self.call(command).await
    }

    /// Closes the browser and waits for the driver to exit 0.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\": \"quit\"}\n").await;
        let status = tokio::time::timeout(LAUNCH_TIMEOUT, self.child.wait())
            .await
            .expect("the driver did not exit")
            .expect("wait for the driver");
        assert!(status.success(), "driver exited with {status}");
    }
}
