//! Proves Switchboard peers and a web browser talk to each other: headless
//! Chromium (Debian's `/usr/bin/chromium`, driven by playwright-core) runs
//! `tests/browser/peer.html`, a peer in plain JavaScript that speaks the relay
//! protocol and the chunk format on `p2p-{i}-{N}` data channels, against a real
//! relay on 127.0.0.1. In both offer roles (Switchboard offers, then Chromium
//! offers) and in both directions on each connection, ASCII and non-ASCII
//! text, an empty text and an empty binary message, 200 KiB and 1 MiB of
//! binary arrive whole (kind, length, SHA-256), ICE selects host candidates on
//! loopback, and the page sees the channel count the offerer chose. The
//! `switchboard peer` command does the same with a 1 MiB file: `send --file`
//! to the page (checked by hash in the page), and `listen --echo` returning
//! what the page sends (the page checks the echo's hash).
//!
//! The test fails when Chromium or the npm driver is missing (scripts/test
//! installs both), unless `SWITCHBOARD_SKIP_BROWSER=1`.

mod browser_common;
mod cli_peer_common;
mod common;

use std::process::Stdio;

use actix::Addr;
use browser_common::{assert_ready, assert_received, chromium, pattern, sha256, Browser};
use browser_common::{PageMessage, EVENT_TIMEOUT};
use cli_peer_common::peer_within;
use common::peers::{manager, peer_config, recv};
use common::{test_settings, TestRelay};
use serde_json::Value;
use switchboard::client::peer_manager::{PeerManager, Send};
use switchboard::protocol::chunk::Payload;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;
use uuid::Uuid;

const NON_ASCII: &str = "zażółć gęślą jaźń ✓ 猫 🚀";
const KIB_200: usize = 200 * 1024;
const MIB: usize = 1 << 20;

/// What Switchboard sends to the page, in order.
fn switchboard_messages() -> Vec<Payload> {
    let file: Vec<u8> = (0..MIB).map(|_| rand::random::<u8>()).collect();
    vec![
        Payload::Text("hello from switchboard".into()),
        Payload::Text(NON_ASCII.into()),
        Payload::Bytes(pattern(KIB_200, 5)),
        Payload::Bytes(Default::default()),
        Payload::Text(String::new()),
        Payload::Bytes(file.into()),
    ]
}

/// What the page sends to Switchboard, in order.
fn page_messages() -> Vec<PageMessage> {
    vec![
        PageMessage::text("hello from chromium"),
        PageMessage::text(NON_ASCII),
        PageMessage::bytes(KIB_200, 9),
        PageMessage::bytes(0, 0),
        PageMessage::text(""),
        PageMessage::bytes(MIB, 11),
    ]
}

/// Switchboard sends each message and the page reports it whole, one at a time.
async fn switchboard_to_page(sb: &Addr<PeerManager>, sb_uuid: Uuid, page: &mut Browser, to: Uuid) {
    for payload in switchboard_messages() {
        sb.send(Send {
            peer: to,
            payload: payload.clone(),
        })
        .await
        .unwrap()
        .unwrap();
        let event = page.recv_from(sb_uuid).await;
        assert_received(&event, sb_uuid, &payload);
    }
}

/// The page sends each message and Switchboard receives it whole.
async fn page_to_switchboard(
    page: &mut Browser,
    page_uuid: Uuid,
    sb: &Addr<PeerManager>,
    to: Uuid,
    channels: usize,
) {
    for message in page_messages() {
        let sent = page.send(to, channels, &message).await;
        assert_eq!(sent["sha256"], sha256(message.payload.as_bytes()), "{sent}");
        let got = recv(sb).await;
        assert_eq!(got.peer, page_uuid);
        assert_eq!(got.payload, message.payload);
    }
}

#[actix_rt::test]
async fn switchboard_offers_and_chromium_answers() {
    let Some(chromium) = chromium() else { return };
    let relay = TestRelay::start(test_settings());
    let mut page = Browser::launch(&chromium).await;
    let page_uuid = page.register(&relay.url).await;
    let (sb, sb_uuid) = manager(peer_config(&relay.url, 2)).await;

    // Switchboard's first send opens the connection: it offers two channels.
    switchboard_to_page(&sb, sb_uuid, &mut page, page_uuid).await;
    let ready = page.ready_with(sb_uuid).await;
    assert_ready(&ready, sb_uuid, "answerer", 2);

    // The page answers on the same connection.
    page_to_switchboard(&mut page, page_uuid, &sb, sb_uuid, 2).await;
    page.quit().await;
}

#[actix_rt::test]
async fn chromium_offers_and_switchboard_answers() {
    let Some(chromium) = chromium() else { return };
    let relay = TestRelay::start(test_settings());
    let mut page = Browser::launch(&chromium).await;
    let page_uuid = page.register(&relay.url).await;
    let (sb, sb_uuid) = manager(peer_config(&relay.url, 1)).await;

    // The page's first send opens the connection: it offers three channels.
    page_to_switchboard(&mut page, page_uuid, &sb, sb_uuid, 3).await;
    let ready = page.ready_with(sb_uuid).await;
    assert_ready(&ready, sb_uuid, "offerer", 3);

    switchboard_to_page(&sb, sb_uuid, &mut page, page_uuid).await;
    page.quit().await;
}

/// The next JSON line `switchboard peer listen` prints.
async fn json_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
        .await
        .expect("a line from listen")
        .unwrap()
        .expect("listen exited early");
    serde_json::from_str(&line).unwrap()
}

#[actix_rt::test]
async fn switchboard_peer_command_and_chromium() {
    let Some(chromium) = chromium() else { return };
    let relay = TestRelay::start(test_settings());
    let mut page = Browser::launch(&chromium).await;
    let page_uuid = page.register(&relay.url).await;

    // `send --file`: the CLI offers, the page checks the file's hash.
    let file = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..MIB).map(|_| rand::random::<u8>()).collect();
    std::fs::write(file.path(), &data).unwrap();
    let cli_uuid = Uuid::new_v4();
    let mut send = peer_within(&relay.url, "20", &[]);
    send.args([
        "--uuid",
        &cli_uuid.to_string(),
        "send",
        &page_uuid.to_string(),
        "--file",
    ])
    .arg(file.path())
    .stderr(Stdio::piped());
    let output = tokio::time::timeout(EVENT_TIMEOUT, send.output())
        .await
        .expect("send did not exit")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "send failed: {stderr}");
    assert!(stderr.contains(&format!("sent {MIB} bytes")), "{stderr}");
    let event = page.recv_from(cli_uuid).await;
    assert_received(&event, cli_uuid, &Payload::Bytes(data.into()));

    // `listen --echo`: the page offers and checks the echo by hash.
    let listen_uuid = Uuid::new_v4();
    let mut listen = peer_within(&relay.url, "20", &[]);
    listen
        .args([
            "--uuid",
            &listen_uuid.to_string(),
            "listen",
            "--count",
            "2",
            "--echo",
        ])
        .stdout(Stdio::piped());
    let mut child = listen.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(json_line(&mut lines).await["event"], "ready");
    let messages = [PageMessage::bytes(MIB, 3), PageMessage::text(NON_ASCII)];
    for (i, message) in messages.iter().enumerate() {
        let sent = page.send(listen_uuid, 2, message).await;
        let mut printed = json_line(&mut lines).await;
        if i == 0 {
            assert_eq!(printed["event"], "connected", "{printed}");
            // The CLI names the pair ICE selected: host candidates on loopback.
            assert_eq!(printed["local_candidate"], "host", "{printed}");
            assert_eq!(printed["remote_candidate"], "host", "{printed}");
            printed = json_line(&mut lines).await;
        }
        assert_eq!(printed["peer"], page_uuid.to_string(), "{printed}");
        assert_eq!(printed["len"], message.payload.len(), "{printed}");
        if let Payload::Text(text) = &message.payload {
            assert_eq!(printed["text"], text.as_str(), "{printed}");
        }
        let echo = page.recv_from(listen_uuid).await;
        assert_eq!(echo["sha256"], sent["sha256"], "{echo}");
        assert_received(&echo, listen_uuid, &message.payload);
    }
    let status = tokio::time::timeout(EVENT_TIMEOUT, child.wait())
        .await
        .expect("listen did not exit")
        .unwrap();
    assert!(status.success(), "listen exited with {status}");
    page.quit().await;
}
