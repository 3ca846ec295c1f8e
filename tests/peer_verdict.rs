//! Proves that a final verdict of the relay (4004 takeover of our UUID, 4002
//! a refused token, at the first registration or at a re-registration long
//! after) reaches a PeerManager's users at once: subscribers get
//! `PeerEvent::RelayFailed` with the close code and reason, pending `Send`,
//! `Connect` and `Recv` requests end with `PeerError::Relay` instead of
//! waiting for their timeouts, later ones fail the same way (also to a peer
//! that had a ready connection), and nothing is retried. A registration the
//! relay answers with `success: false` is such a verdict too.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::peers::{events, manager, peer_config, recv, wait_event};
use common::{test_settings, token_settings, TestRelay};
use futures_util::{SinkExt, StreamExt};
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{
    Connect, PeerError, PeerEvent, PeerManager, PeerManagerConfig, Recv, Send, Status,
};
use switchboard::client::relay_client::RelayClientError;
use switchboard::protocol::chunk::Payload;
use uuid::Uuid;

/// Connections that would wait this long if nothing ended them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How soon after the verdict pending requests must have ended.
const AT_ONCE: Duration = Duration::from_secs(3);

fn config(url: &str) -> PeerManagerConfig {
    let mut config = peer_config(url, 1);
    config.connection.connect_timeout = CONNECT_TIMEOUT;
    config
}

fn with_token(mut config: PeerManagerConfig, token: &str) -> PeerManagerConfig {
    config
        .relay
        .headers
        .push(("Authorization".into(), format!("Bearer {token}")));
    config
}

/// Asserts `result` is the relay's rejection with `code`.
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, PeerError>, code: u16) {
    match result {
        Err(PeerError::Relay(RelayClientError::Rejected { code: got, reason })) => {
            assert_eq!(got, code, "{reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected the relay's {code} rejection, got {other:?}"),
    }
}

/// Waits for `RelayFailed` and checks its code; returns its reason.
async fn relay_failed(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    code: u16,
) -> String {
    let event = wait_event(events, |e| matches!(e, PeerEvent::RelayFailed(_))).await;
    match event {
        PeerEvent::RelayFailed(RelayClientError::Rejected { code: got, reason }) => {
            assert_eq!(got, code, "{reason}");
            reason
        }
        other => panic!("expected RelayFailed({code}), got {other:?}"),
    }
}

/// A registered relay client that never answers offers.
async fn silent_peer(url: &str, headers: &[(&str, &str)]) -> (common::Ws, Uuid) {
    let uuid = Uuid::new_v4();
    let mut ws = common::connect_with(url, headers).await;
    common::register(&mut ws, "silent", &uuid.to_string()).await;
    (ws, uuid)
}

#[actix_rt::test]
async fn a_takeover_ends_pending_and_later_requests_with_4004() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(config(&relay.url)).await;
    let (b, uuid_b) = manager(config(&relay.url)).await;
    let mut events_a = events(&a).await;
    a.send(Send::text(uuid_b, "before")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("before".into()));

    // Pending when the verdict comes: a connection whose offer is never
    // answered, and a Recv with nothing to receive.
    let (_silent, uuid_x) = silent_peer(&relay.url, &[]).await;
    let connect = tokio::spawn(a.send(Connect(uuid_x)));
    let receive = tokio::spawn(a.send(Recv(None)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connect.is_finished() && !receive.is_finished());

    // Another process registers our UUID (same user): we get 4004.
    let taken = Instant::now();
    let _thief = common::client(&relay.url, "thief", &uuid_a.to_string()).await;
    let reason = relay_failed(&mut events_a, 4004).await;
    assert!(
        reason.starts_with("Relay received a registration with the same ID"),
        "{reason}"
    );
    assert_rejected(connect.await.unwrap().unwrap(), 4004);
    assert_rejected(receive.await.unwrap().unwrap(), 4004);
    assert!(taken.elapsed() < AT_ONCE, "took {:?}", taken.elapsed());

    // Every connection ends with the reason; later requests fail at once.
    let closed = wait_event(
        &mut events_a,
        |e| matches!(e, PeerEvent::Disconnected { peer, .. } if *peer == uuid_b),
    )
    .await;
    assert!(
        matches!(closed, PeerEvent::Disconnected { error: Some(ConnectionError::Relay(ref r)), .. } if r.contains("4004")),
        "{closed:?}"
    );
    let later = Instant::now();
    assert_rejected(a.send(Send::text(uuid_b, "after")).await.unwrap(), 4004);
    assert_rejected(a.send(Connect(Uuid::new_v4())).await.unwrap(), 4004);
    assert_rejected(
        a.send(Recv(Some(Duration::from_secs(5)))).await.unwrap(),
        4004,
    );
    assert!(later.elapsed() < Duration::from_millis(500));
    let status = a.send(Status).await.unwrap();
    assert!(!status.registered && status.peers.is_empty(), "{status:?}");
    assert_eq!(status.relay_sessions, 1, "a verdict is never retried");
}

#[actix_rt::test]
async fn a_refused_token_fails_a_send_made_before_registration() {
    let relay = TestRelay::start(token_settings());
    let (_b, uuid_b) = manager(with_token(config(&relay.url), "bob-token")).await;
    let a = PeerManager::new(with_token(config(&relay.url), "mallory-token"))
        .unwrap()
        .start();
    let mut events_a = events(&a).await;
    let started = Instant::now();
    // Made before the relay answered the registration: held, then refused.
    assert_rejected(a.send(Send::text(uuid_b, "early")).await.unwrap(), 4002);
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
    relay_failed(&mut events_a, 4002).await;
    assert_rejected(a.send(Connect(uuid_b)).await.unwrap(), 4002);
}

#[actix_rt::test]
async fn a_token_refused_at_re_registration_ends_ready_connections_and_pending_requests() {
    let mut relay = TestRelay::start(token_settings());
    let addr = relay.addr;
    let (a, _) = manager(with_token(config(&relay.url), "alice-token")).await;
    let (b, uuid_b) = manager(with_token(config(&relay.url), "alice-token")).await;
    let mut events_a = events(&a).await;
    a.send(Send::text(uuid_b, "before")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("before".into()));

    // The relay comes back with alice's token revoked.
    relay.stop();
    wait_event(&mut events_a, |e| matches!(e, PeerEvent::RelayLost { .. })).await;
    // Made while the relay is away: the offer waits for a registration.
    let connect = tokio::spawn(a.send(Connect(Uuid::new_v4())));
    let mut revoked = token_settings();
    revoked.auth.tokens.remove("alice");
    let _relay = TestRelay::start_at(revoked, addr);
    relay_failed(&mut events_a, 4002).await;
    let failed = Instant::now();
    assert_rejected(connect.await.unwrap().unwrap(), 4002);
    assert!(failed.elapsed() < AT_ONCE, "took {:?}", failed.elapsed());
    // The ready connection to b does not outlive the verdict.
    assert_rejected(a.send(Send::text(uuid_b, "after")).await.unwrap(), 4002);
}

/// A scripted relay that answers every registration with `success: false`;
/// returns its URL and the count of connections it accepted.
async fn refusing_relay() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
        {
            count.fetch_add(1, Ordering::SeqCst);
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let _registration = ws.next().await;
            let refusal = r#"{"success": false, "message": "go away", "error": true, "message_type": "relay_response"}"#;
            let _ = ws
                .send(tokio_tungstenite::tungstenite::Message::text(refusal))
                .await;
            held.push(ws);
        }
    });
    (url, accepted)
}

#[actix_rt::test]
async fn a_refused_registration_is_final_too() {
    let (url, accepted) = refusing_relay().await;
    let a = PeerManager::new(config(&url)).unwrap().start();
    let mut events_a = events(&a).await;
    let event = wait_event(&mut events_a, |e| {
        matches!(e, PeerEvent::RelayFailed(_) | PeerEvent::RelayLost { .. })
    })
    .await;
    let refused = RelayClientError::Registration("go away".into());
    assert_eq!(event, PeerEvent::RelayFailed(refused.clone()));
    assert_eq!(
        a.send(Send::text(Uuid::new_v4(), "x")).await.unwrap(),
        Err(PeerError::Relay(refused))
    );
    // Never retried: one connection, one relay session, even after the restart delay.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(a.send(Status).await.unwrap().relay_sessions, 1);
}
