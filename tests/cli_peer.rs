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

mod cli_peer_common;
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::peers::{manager, peer_config, recv};
use common::{test_settings, token_settings, TestRelay};
use serde_json::json;
use switchboard::client::peer_manager::{Close, Send};
use switchboard::protocol::chunk::Payload;
use uuid::Uuid;

use cli_peer_common::*;

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
