//! Proves the `switchboard peer` command as a user runs it: real processes of
//! the binary against a real relay on loopback. `listen` prints one JSON line
//! per message with the sender's UUID, kind, length, text and SHA-256, for a text and a
//! 200 KiB file sent over 4 channels by separate `send` processes; `listen
//! --echo` returns every byte to a library peer. A non-WebSocket relay URL, an
//! unknown peer, a missing token file, no token and a wrong token each fail
//! with a non-zero exit and a message naming the cause; the right token file
//! works. A relay's final verdict at any time ends the process: a second
//! `listen --uuid U` makes the first exit 1 within seconds with the 4004 reason
//! (the second keeps serving), and a `send` waiting for a peer that never
//! answers exits 1 at once when its UUID is taken over.
//!
//! Delivery and exits: `send` exits 0 only once the peer acknowledged every
//! chunk; to a listener frozen with SIGSTOP once its connection is ready (its
//! SCTP stack stops acknowledging), `send` exits 1 within the stall limit,
//! long before ICE would notice, saying how many of the file's bytes were
//! acknowledged, whether the whole file fit the send buffers (the flush
//! gives up) or not (the hand-over gives up). Every exit of `switchboard peer` (send done, `listen
//! --count` reached, an error, SIGTERM, SIGINT, the failed send above) ends
//! its relay WebSocket with a close handshake: the relay's `/metrics` count
//! one normal client close per process and no abnormal closure.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use switchboard::defaults::PEER_FLUSH_STALL_MS;

use common::peers::{manager, peer_config, recv};
use common::{test_settings, token_settings, TestRelay};
use serde_json::{json, Value};
use switchboard::client::peer_manager::{Close, Send};
use switchboard::protocol::chunk::Payload;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long any one process or line may take.
const LIMIT: Duration = Duration::from_secs(30);

/// `switchboard peer --relay URL` with loopback candidates, then `args`.
fn peer(relay: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "peer",
            "--relay",
            relay,
            "--bind",
            "127.0.0.1",
            "--timeout",
            "15",
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command to completion (bounded); returns its output.
async fn run(mut command: Command) -> Output {
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("process did not exit in time")
        .expect("process could not start")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running `peer ... listen` and its printed UUID.
struct Listener {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    uuid: Uuid,
}

impl Listener {
    /// Starts `peer <global> listen <listen>` and waits for its "ready" line.
    async fn start(relay: &str, global: &[&str], listen: &[&str]) -> Listener {
        Listener::spawn(peer(relay, global), listen).await
    }

    /// Starts `command listen <listen>` and waits for its "ready" line.
    async fn spawn(mut command: Command, listen: &[&str]) -> Listener {
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
    async fn next_json(&mut self) -> Value {
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
    async fn exits_ok(mut self) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("listener did not exit in time")
            .unwrap();
        assert!(status.success(), "listener exited with {status}");
    }
}

/// Waits (at most `limit`) for `child` to exit; returns its code and stderr.
async fn exit_within(child: Child, limit: Duration) -> (Option<i32>, String) {
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("process still running after {limit:?}"))
        .unwrap();
    (output.status.code(), stderr(&output))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// 200 KiB of a repeating non-trivial pattern.
fn file_bytes() -> Vec<u8> {
    (0..200 * 1024).map(|i| (i * 7 % 251) as u8).collect()
}

#[actix_rt::test]
async fn listen_prints_text_and_a_file_sent_by_other_processes() {
    let relay = TestRelay::start(test_settings());
    let mut listener = Listener::start(&relay.url, &[], &["--count", "2"]).await;
    let to = listener.uuid.to_string();

    let text = "héllo ✓ wörld";
    let sender = Uuid::new_v4();
    let output = run(peer(
        &relay.url,
        &["--uuid", &sender.to_string(), "send", &to, text],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("sent {} bytes to {to}", text.len())));
    assert_eq!(
        listener.next_json().await,
        json!({"event": "recv", "peer": sender, "kind": "text", "len": text.len(), "text": text,
               "sha256": sha256(text.as_bytes())})
    );

    let data = file_bytes();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let sender = Uuid::new_v4();
    let path = file.path().to_str().unwrap();
    let args = [
        "--uuid",
        &sender.to_string(),
        "--channels",
        "4",
        "send",
        &to,
        "--file",
        path,
    ];
    let output = run(peer(&relay.url, &args)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        listener.next_json().await,
        json!({"event": "recv", "peer": sender, "kind": "bytes", "len": data.len(),
               "hex_preview": hex(&data[..32]), "sha256": sha256(&data)})
    );
    listener.exits_ok().await;
}

#[actix_rt::test]
async fn listen_echo_returns_every_byte_to_a_library_peer() {
    let relay = TestRelay::start(test_settings());
    let listener = Listener::start(&relay.url, &[], &["--count", "2", "--echo"]).await;
    let (me, my_uuid) = manager(peer_config(&relay.url, 4)).await;
    let data = file_bytes();
    me.send(Send::bytes(listener.uuid, data.clone()))
        .await
        .unwrap()
        .unwrap();
    let back = recv(&me).await;
    assert_eq!(
        (back.peer, back.payload),
        (listener.uuid, Payload::Bytes(data.into()))
    );
    me.send(Send::text(listener.uuid, ""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&me).await.payload, Payload::Text(String::new()));
    assert_ne!(my_uuid, listener.uuid);
    listener.exits_ok().await;
    me.send(Close).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_relay_url_that_is_not_websocket_is_refused() {
    let output = run(peer("http://127.0.0.1:9", &["listen"])).await;
    assert_eq!(output.status.code(), Some(2), "settings errors exit 2");
    assert!(output.stdout.is_empty(), "no ready line expected");
    let message = stderr(&output);
    assert!(message.contains("invalid relay URL"), "{message}");
    assert!(message.contains("ws:// or wss://"), "{message}");
}

#[tokio::test]
async fn a_closed_stderr_or_stdout_does_not_turn_a_failure_into_a_panic() {
    // Both pipes' readers are gone before the process writes its error line:
    // the exit code must stay the command's (1: relay unreachable), not 101.
    let mut command = peer(
        "ws://127.0.0.1:9",
        &["send", &Uuid::new_v4().to_string(), "hi"],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("process could not start");
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("process did not exit in time")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[tokio::test]
async fn sending_to_an_unknown_peer_fails_with_the_relay_error() {
    let relay = TestRelay::start(test_settings());
    let nobody = Uuid::new_v4().to_string();
    let output = run(peer(&relay.url, &["send", &nobody, "anyone?"])).await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&nobody), "{message}");
    assert!(message.contains("is not registered"), "{message}");
}

fn token_file(token: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{token}\n")).unwrap();
    file
}

#[actix_rt::test]
async fn token_file_authenticates_and_a_wrong_token_is_refused() {
    let relay = TestRelay::start(token_settings());
    let good = token_file("alice-token");
    let good = good.path().to_str().unwrap();
    let mut listener =
        Listener::start(&relay.url, &["--token-file", good], &["--count", "1"]).await;
    let to = listener.uuid.to_string();

    let bad = token_file("mallory-token");
    let output = run(peer(
        &relay.url,
        &[
            "--token-file",
            bad.path().to_str().unwrap(),
            "send",
            &to,
            "x",
        ],
    ))
    .await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("rejected by the relay (4002)"),
        "{message}"
    );

    let output = run(peer(&relay.url, &["send", &to, "x"])).await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("rejected by the relay (4001)"),
        "{message}"
    );

    let output = run(peer(
        &relay.url,
        &["--token-file", "/nonexistent/token", "send", &to, "x"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--token-file /nonexistent/token"));

    let output = run(peer(
        &relay.url,
        &["--token-file", good, "send", &to, "authorized"],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listener.next_json().await["text"], "authorized");
    listener.exits_ok().await;
}

#[actix_rt::test]
async fn a_listener_whose_uuid_is_taken_over_exits_1_with_the_reason() {
    let relay = TestRelay::start(test_settings());
    let uuid = Uuid::new_v4().to_string();
    let mut first = peer(&relay.url, &["--uuid", &uuid]);
    first.stderr(Stdio::piped());
    let first = Listener::spawn(first, &[]).await;
    let second = Listener::start(&relay.url, &["--uuid", &uuid], &["--count", "1"]).await;
    let taken = Instant::now();
    let (code, message) = exit_within(first.child, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1), "{message}");
    assert!(
        message.contains("rejected by the relay (4004)")
            && message.contains("Relay received a registration with the same ID"),
        "{message}"
    );
    assert!(taken.elapsed() < Duration::from_secs(5));
    // The newer listener owns the UUID and is served.
    let output = run(peer(&relay.url, &["send", &uuid, "to the new one"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let mut second = second;
    assert_eq!(second.next_json().await["text"], "to the new one");
    second.exits_ok().await;
}

#[actix_rt::test]
async fn a_send_waiting_for_a_peer_exits_1_at_once_when_taken_over() {
    let relay = TestRelay::start(test_settings());
    // A registered peer that never answers: the send waits for it.
    let silent = Uuid::new_v4().to_string();
    let _silent = common::client(&relay.url, "silent", &silent).await;
    let uuid = Uuid::new_v4().to_string();
    let mut send = peer(&relay.url, &["--uuid", &uuid, "send", &silent, "hello?"]);
    send.stdout(Stdio::null()).stderr(Stdio::piped());
    let send = send.spawn().unwrap();
    common::wait_clients(relay.admin, |json| common::lists(json, &uuid)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _thief = common::client(&relay.url, "thief", &uuid).await;
    let (code, message) = exit_within(send, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1), "{message}");
    assert!(
        message.contains("rejected by the relay (4004)"),
        "{message}"
    );
}

/// Sends `signal` to a child process (at once: no `kill` process in between).
fn signal(child: &Child, signal: i32) {
    let pid = child.id().expect("the process is running") as i32;
    // SAFETY: kill(2) on the pid of a child we own; no memory is involved.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
}

/// Waits (bounded) for a line of `lines` containing `needle`.
async fn wait_line(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) {
    let found = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return;
            }
        }
        panic!("stderr ended before a line containing {needle:?}");
    };
    tokio::time::timeout(LIMIT, found)
        .await
        .unwrap_or_else(|_| panic!("no line containing {needle:?} in time"));
}

/// The value of the unlabelled-or-labelled series `name` in the relay's /metrics (0 if absent).
async fn metric(relay: &TestRelay, series: &str) -> u64 {
    let (status, body) = common::http_get(relay.admin, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until the relay counted `count` normal client closes;
/// then asserts that no connection ended without a close handshake.
async fn assert_clean_closes(relay: &TestRelay, count: u64) {
    const NORMAL: &str = r#"switchboard_client_closes_total{kind="normal"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(relay, NORMAL).await < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(relay, NORMAL).await, count, "normal client closes");
    assert_eq!(
        metric(relay, "switchboard_abnormal_closures_total").await,
        0,
        "connections that ended without a close handshake"
    );
}

/// Sends 16 MiB over `channels` to a listener frozen (SIGSTOP) as soon as
/// its connection is ready; asserts that `send` exits 1 within the stall
/// limit, saying how many of the bytes were acknowledged and why (`reason`).
async fn send_to_a_frozen_listener(channels: usize, reason: &str) {
    let relay = TestRelay::start(test_settings());
    let mut command = peer(&relay.url, &["--log-level", "info"]);
    command.stderr(Stdio::piped());
    let mut listener = Listener::spawn(command, &[]).await;
    let mut listener_log = BufReader::new(listener.child.stderr.take().unwrap()).lines();

    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let (to, path) = (listener.uuid.to_string(), file.path().to_str().unwrap());
    let channels = channels.to_string();
    let args = ["--channels", &channels, "send", &to, "--file", path];
    let send = peer(&relay.url, &args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Freeze the listener as soon as its connection is ready.
    wait_line(&mut listener_log, &format!("ready ({channels} channels)")).await;
    signal(&listener.child, libc::SIGSTOP);
    let stopped = Instant::now();
    let stall = Duration::from_millis(PEER_FLUSH_STALL_MS);
    let (code, message) = exit_within(send, stall + Duration::from_secs(10)).await;
    let took = stopped.elapsed();
    signal(&listener.child, libc::SIGCONT);

    assert_eq!(code, Some(1), "{message}");
    // The stall limit ended it, not ICE (5 + 10 s of silence).
    assert!(
        took < stall + Duration::from_secs(4),
        "exited after {took:?}"
    );
    assert!(message.contains(reason), "{message}");
    let acked: u64 = message
        .split("the peer acknowledged ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged byte count in {message:?}"));
    let expected = format!("acknowledged {acked} of {} bytes", data.len());
    assert!(message.contains(&expected), "{message}");
    assert!(acked < data.len() as u64, "{message}");
    assert!(!message.contains("sent 16777216 bytes"), "{message}");

    signal(&listener.child, libc::SIGTERM);
    listener.exits_ok().await;
    assert_clean_closes(&relay, 2).await;
}

#[actix_rt::test]
async fn send_exits_1_naming_the_bytes_acknowledged_when_the_listener_stops_acknowledging() {
    // 16 MiB over 4 channels fits the send buffers (4 MiB each): the whole
    // file is handed over and the flush waits for the acknowledgement.
    send_to_a_frozen_listener(4, "nothing more acknowledged").await;
}

#[actix_rt::test]
async fn send_of_more_than_the_send_buffer_exits_1_when_the_listener_stops_acknowledging() {
    // Over one channel the hand-over itself waits for buffer room.
    send_to_a_frozen_listener(1, "nothing acknowledged for 5 s while sending").await;
}

#[actix_rt::test]
async fn every_exit_of_the_peer_command_closes_its_relay_websocket_cleanly() {
    let relay = TestRelay::start(test_settings());
    // listen --count reached, and send done.
    let mut counted = Listener::start(&relay.url, &[], &["--count", "1"]).await;
    let to = counted.uuid.to_string();
    let output = run(peer(&relay.url, &["send", &to, "one"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(counted.next_json().await["text"], "one");
    counted.exits_ok().await;
    // An error: the peer is unknown.
    let nobody = Uuid::new_v4().to_string();
    let output = run(peer(&relay.url, &["send", &nobody, "x"])).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("acknowledged 0 of 1 bytes"));
    // SIGTERM and SIGINT end a listener with 0.
    for name in [libc::SIGTERM, libc::SIGINT] {
        let listener = Listener::start(&relay.url, &[], &[]).await;
        signal(&listener.child, name);
        listener.exits_ok().await;
    }
    // SIGINT ends a send still waiting for its peer with 1.
    let silent = Uuid::new_v4().to_string();
    let _silent = common::client(&relay.url, "silent", &silent).await;
    let mut waiting = peer(&relay.url, &["send", &silent, "hello?"]);
    let waiting = waiting.stderr(Stdio::piped()).spawn().unwrap();
    common::wait_clients(relay.admin, |json| {
        json.as_array().is_some_and(|clients| clients.len() == 2)
    })
    .await;
    signal(&waiting, libc::SIGINT);
    let (code, message) = exit_within(waiting, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1), "{message}");
    assert!(message.contains("interrupted by SIGINT"), "{message}");

    // Six processes, six close handshakes.
    assert_clean_closes(&relay, 6).await;
}
