//! Proves that a final verdict of the relay (4004 takeover of our UUID, 4002
//! a refused token, at the first registration or at a re-registration long
//! after) reaches a PeerManager's users at once: subscribers get
//! `PeerEvent::RelayFailed` with the close code and reason, pending `Send`,
//! `Connect` and `Recv` requests end with `PeerError::Relay` instead of
//! waiting for their timeouts, later ones fail the same way (also to a peer
//! that had a ready connection), and nothing is retried.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::peers::{events, manager, peer_config, recv, wait_event};
use common::{test_settings, token_settings, TestRelay};
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
