//! Proves that a `RelayClient` given several relay URLs (the nodes of a
//! cluster) fails over: a lost session moves at once to the next URL and
//! registers there under the same UUID, a relay that is down at start is
//! skipped, a whole round of failed URLs backs off before the next round,
//! `switchboard peer` takes `--relay` more than once (a relay that accepts
//! and never answers gets only its share of `--timeout`), and two PeerManagers'
//! open peer connection keeps carrying messages while both move to another
//! relay.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use actix::prelude::*;
use common::forwarder::Forwarder;
use common::peers::{events, manager, peer_config, recv};
use common::refusing::Refusing;
use common::relay_client::next;
use common::*;
use switchboard::client::peer_manager::{PeerEvent, Send};
use switchboard::client::relay_client::{GetStatus, RelayClient, RelayClientConfig, RelayEvent};
use switchboard::protocol::chunk::Payload;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A URL where connects are refused while the returned guard lives.
fn dead_url() -> (String, Refusing) {
    let refusing = Refusing::new();
    (format!("ws://{}", refusing.addr()), refusing)
}

fn start(urls: &[&str]) -> (Addr<RelayClient>, mpsc::UnboundedReceiver<RelayEvent>, Uuid) {
    let mut config = RelayClientConfig::new(urls[0]);
    config.fallback_urls = urls[1..].iter().map(|u| u.to_string()).collect();
    config.uuid = Some(Uuid::new_v4());
    config.connect_timeout = Duration::from_secs(2);
    config.backoff.initial = Duration::from_millis(300);
    config.backoff.max = Duration::from_millis(600);
    let (tx, events) = mpsc::unbounded_channel();
    let client = RelayClient::new(config, Forwarder(tx).start().recipient()).unwrap();
    let uuid = client.uuid();
    (client.start(), events, uuid)
}

/// Skips `Disconnected` events until a registration; returns its relay URL.
async fn registered_on(events: &mut mpsc::UnboundedReceiver<RelayEvent>, uuid: Uuid) -> String {
    for _ in 0..20 {
        match next(events).await {
            RelayEvent::Registered {
                uuid: got, relay, ..
            } => {
                assert_eq!(got, uuid);
                return relay;
            }
            RelayEvent::Disconnected { .. } => continue,
            other => panic!("expected Registered, got {other:?}"),
        }
    }
    panic!("no registration after 20 events");
}

#[actix_rt::test]
async fn a_lost_session_moves_at_once_to_the_next_relay_under_the_same_uuid() {
    let mut a = TestRelay::start(test_settings());
    let b = TestRelay::start(test_settings());
    let (client, mut events, uuid) = start(&[&a.url, &b.url]);
    assert_eq!(registered_on(&mut events, uuid).await, a.url);
    a.stop();
    match next(&mut events).await {
        RelayEvent::Disconnected { code, retry_in, .. } => {
            assert_eq!(code, Some(1001));
            assert_eq!(retry_in, Duration::ZERO, "the next relay is tried at once");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(registered_on(&mut events, uuid).await, b.url);
    wait_clients(b.admin, |json| lists(json, &uuid.to_string())).await;
    let status = client.send(GetStatus).await.unwrap();
    assert!(status.registered);
    assert_eq!(status.relay, b.url);
    assert_eq!(status.registrations, 2);
}

#[actix_rt::test]
async fn a_relay_that_is_down_at_start_is_skipped() {
    let b = TestRelay::start(test_settings());
    let (dead, _guard) = dead_url();
    let (_client, mut events, uuid) = start(&[&dead, &b.url]);
    match next(&mut events).await {
        RelayEvent::Disconnected { code, retry_in, .. } => {
            assert_eq!(code, None);
            assert_eq!(retry_in, Duration::ZERO);
        }
        other => panic!("expected the refused attempt first, got {other:?}"),
    }
    assert_eq!(registered_on(&mut events, uuid).await, b.url);
}

#[actix_rt::test]
async fn a_whole_round_of_failed_relays_backs_off_before_the_next_round() {
    let ((first, _g1), (second, _g2)) = (dead_url(), dead_url());
    let (_client, mut events, _uuid) = start(&[&first, &second]);
    let mut delays = Vec::new();
    for _ in 0..4 {
        match next(&mut events).await {
            RelayEvent::Disconnected { retry_in, .. } => delays.push(retry_in),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    // Round 1: first fails -> second at once; second fails -> back off.
    assert_eq!(delays[0], Duration::ZERO, "{delays:?}");
    assert!(delays[1] > Duration::ZERO, "{delays:?}");
    assert_eq!(delays[2], Duration::ZERO, "{delays:?}");
    assert!(delays[3] > Duration::ZERO, "{delays:?}");
}

/// `switchboard peer --relay R… --timeout T send <unknown peer> hello`, run to the end.
async fn send_hello_via(relays: Vec<String>, timeout: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command.arg("peer");
        for relay in &relays {
            command.args(["--relay", relay]);
        }
        command
            .args(["--timeout", timeout, "send"])
            .arg(Uuid::new_v4().to_string())
            .arg("hello")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[actix_rt::test]
async fn the_cli_peer_takes_several_relays_and_skips_a_dead_one() {
    let b = TestRelay::start(test_settings());
    let (dead, _guard) = dead_url();
    let output = send_hello_via(vec![dead, b.url.clone()], "5").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The unknown peer is reported by relay B: proof the peer registered there.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("because this peer is not registered"),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn an_open_peer_connection_keeps_working_while_both_peers_move_relays() {
    let mut a = TestRelay::start(test_settings());
    let b = TestRelay::start(test_settings());
    let config = || {
        let mut config = peer_config(&a.url, 1);
        config.relay.fallback_urls = vec![b.url.clone()];
        config
    };
    let (one, one_uuid) = manager(config()).await;
    let (two, two_uuid) = manager(config()).await;
    let mut one_events = events(&one).await;
    let text = |t: &str| Payload::Text(t.to_owned());
    one.send(Send {
        peer: two_uuid,
        payload: text("before"),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(recv(&two).await.payload, text("before"));
    a.stop();
    wait_clients(b.admin, |json| {
        lists(json, &one_uuid.to_string()) && lists(json, &two_uuid.to_string())
    })
    .await;
    one.send(Send {
        peer: two_uuid,
        payload: text("after the move"),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(recv(&two).await.payload, text("after the move"));
    two.send(Send {
        peer: one_uuid,
        payload: text("and back"),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(recv(&one).await.payload, text("and back"));
    // The same connection carried all three: opened once, never lost.
    let mut connected = 0;
    while let Ok(event) = one_events.try_recv() {
        match event {
            PeerEvent::Connected { .. } => connected += 1,
            PeerEvent::Disconnected { .. } => panic!("the peer connection ended: {event:?}"),
            _ => {}
        }
    }
    assert_eq!(connected, 1, "one peer connection for all three messages");
}

/// A first relay that accepts TCP and never answers must not use up the
/// CLI's whole `--timeout`: each relay gets its share, so the peer reaches
/// the second one (found by QA: it used to time out on the first for 30 s).
#[actix_rt::test]
async fn the_cli_peer_moves_on_from_a_relay_that_never_answers() {
    let b = TestRelay::start(test_settings());
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("ws://{}", hung.local_addr().unwrap());
    // Accept connections and hold them, silent, for the test's duration.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        hung.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline && held.len() < 8 {
            match hung.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        held
    });
    let output = send_hello_via(vec![hung_url, b.url.clone()], "6").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("because this peer is not registered"),
        "never reached the second relay: {stderr}"
    );
    drop(holder);
}
