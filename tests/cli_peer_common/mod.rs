//! Helpers for tests of the `switchboard peer` command: the command with
//! loopback candidates, bounded runs, a running `listen` process and hashes.
#![allow(dead_code)]

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long any one process or line may take.
pub const LIMIT: Duration = Duration::from_secs(30);

/// `switchboard peer --relay URL` with loopback candidates, then `args`.
pub fn peer(relay: &str, args: &[&str]) -> Command {
    peer_within(relay, "15", args)
}

/// [`peer`] with `--timeout SECS` instead of 15 s.
pub fn peer_within(relay: &str, secs: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "peer",
            "--relay",
            relay,
            "--bind",
            "127.0.0.1",
            "--timeout",
            secs,
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command to completion (bounded); returns its output.
pub async fn run(mut command: Command) -> Output {
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("process did not exit in time")
        .expect("process could not start")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running `peer ... listen` and its printed UUID.
pub struct Listener {
    pub child: Child,
    pub lines: Lines<BufReader<ChildStdout>>,
    pub uuid: Uuid,
}

impl Listener {
    /// Starts `peer <global> listen <listen>` and waits for its "ready" line.
    pub async fn start(relay: &str, global: &[&str], listen: &[&str]) -> Listener {
        Listener::spawn(peer(relay, global), listen).await
    }

    /// Starts `command listen <listen>` and waits for its "ready" line.
    pub async fn spawn(mut command: Command, listen: &[&str]) -> Listener {
        command.arg("listen").args(listen).stdout(Stdio::piped());
        let mut child = command.spawn().expect("listener could not start");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut listener = Listener {
            child,
            lines: BufReader::new(stdout).lines(),
            uuid: Uuid::nil(),
        };
        let ready = listener.next_json().await;
        assert_eq!(ready["event"], "ready", "{ready}");
        listener.uuid = ready["uuid"].as_str().unwrap().parse().unwrap();
        listener
    }

    /// The next line of stdout other than a `connected` event, parsed as
    /// JSON (bounded). The NAT lab (tests/peer_nat.rs) checks `connected`.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(LIMIT, self.lines.next_line())
                .await
                .expect("no line in time")
                .unwrap()
                .expect("listener closed its stdout");
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
            if value["event"] != "connected" {
                return value;
            }
        }
    }

    /// Waits (bounded) for the process to exit; asserts success.
    pub async fn exits_ok(mut self) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("listener did not exit in time")
            .unwrap();
        assert!(status.success(), "listener exited with {status}");
    }
}

/// Waits (at most `limit`) for `child` to exit; returns its code and stderr.
pub async fn exit_within(child: Child, limit: Duration) -> (Option<i32>, String) {
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("process still running after {limit:?}"))
        .unwrap();
    (output.status.code(), stderr(&output))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// 200 KiB of a repeating non-trivial pattern.
pub fn file_bytes() -> Vec<u8> {
    (0..200 * 1024).map(|i| (i * 7 % 251) as u8).collect()
}
