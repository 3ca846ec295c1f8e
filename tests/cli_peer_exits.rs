//! Proves how `switchboard peer` exits. `send` exits 0 only once the peer acknowledged every
//! chunk; to a listener frozen with SIGSTOP once its connection is ready (its
//! SCTP stack stops acknowledging), `send` exits 1 within the stall limit,
//! long before ICE would notice, saying how many of the file's bytes were
//! acknowledged, whether the whole file fit the send buffers (the flush
//! gives up) or not (the hand-over gives up). Every exit of `switchboard peer` (send done, `listen
//! --count` reached, an error, SIGTERM, SIGINT, the failed send above) ends
//! its relay WebSocket with a close handshake: the relay's `/metrics` count
//! one normal client close per process and no abnormal closure.

mod cli_peer_common;
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard::defaults::PEER_FLUSH_STALL_MS;

use common::{test_settings, TestRelay};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};
use uuid::Uuid;

use cli_peer_common::*;

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
