//! Proves the PeerManager against a real relay with real WebRTC on loopback:
//! two and three peers exchange bytes and text in both directions, glare is
//! resolved, unknown peers and timeouts give typed errors, close notifications
//! arrive, and a relay restart keeps old connections working while new peers
//! can still connect.

mod common;

use std::time::Duration;

use actix::Actor;
use bytes::Bytes;
use common::peers::{events, manager, peer_config, recv, wait_event, wait_registered};
use common::{test_settings, TestRelay};
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{
    Close, CloseConnection, Connect, PeerError, PeerEvent, PeerManager, PeerManagerConfig, Recv,
    Send,
};
use switchboard::client::relay_client::RelayClientError;
use switchboard::protocol::chunk::Payload;
use uuid::Uuid;

#[actix_rt::test]
async fn two_peers_exchange_bytes_and_text_both_ways() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;

    a.send(Send::bytes(uuid_b, &b"\x00\x01binary\xff"[..]))
        .await
        .unwrap()
        .unwrap();
    let got = recv(&b).await;
    assert_eq!(got.peer, uuid_a);
    assert_eq!(
        got.payload,
        Payload::Bytes(Bytes::from_static(b"\x00\x01binary\xff"))
    );

    a.send(Send::text(uuid_b, "zażółć gęślą jaźń ✓"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recv(&b).await.payload,
        Payload::Text("zażółć gęślą jaźń ✓".into())
    );

    // The answerer sends back on the same connection.
    b.send(Send::text(uuid_a, "pong")).await.unwrap().unwrap();
    let back = recv(&a).await;
    assert_eq!(
        (back.peer, back.payload),
        (uuid_b, Payload::Text("pong".into()))
    );

    a.send(Close).await.unwrap().unwrap();
    b.send(Close).await.unwrap().unwrap();
}

#[actix_rt::test]
async fn three_peers_with_four_channels() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 4)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 4)).await;
    let (c, uuid_c) = manager(peer_config(&relay.url, 4)).await;
    let big: Bytes = (0..3 * 1024 * 1024 + 7)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();

    a.send(Send::bytes(uuid_b, big.clone()))
        .await
        .unwrap()
        .unwrap();
    a.send(Send::text(uuid_c, "to c")).await.unwrap().unwrap();
    c.send(Send::text(uuid_b, "c to b")).await.unwrap().unwrap();

    assert_eq!(recv(&c).await.payload, Payload::Text("to c".into()));
    let mut at_b = [recv(&b).await, recv(&b).await];
    at_b.sort_by_key(|m| m.peer != uuid_a);
    assert_eq!(
        (at_b[0].peer, &at_b[0].payload),
        (uuid_a, &Payload::Bytes(big))
    );
    assert_eq!(
        (at_b[1].peer, &at_b[1].payload),
        (uuid_c, &Payload::Text("c to b".into()))
    );
}

#[actix_rt::test]
async fn glare_is_resolved_and_both_messages_arrive() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 2)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 2)).await;
    // Both offer at the same time.
    let (ra, rb) = tokio::join!(
        a.send(Send::text(uuid_b, "from a")),
        b.send(Send::text(uuid_a, "from b"))
    );
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("from a".into()));
    assert_eq!(recv(&a).await.payload, Payload::Text("from b".into()));
    // One connection each way remains and keeps working.
    a.send(Send::text(uuid_b, "again")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("again".into()));
}

#[actix_rt::test]
async fn unknown_peer_self_send_and_recv_timeout_are_typed_errors() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    let nobody = Uuid::new_v4();
    match a.send(Send::text(nobody, "hello?")).await.unwrap() {
        Err(PeerError::Connection {
            peer,
            error: ConnectionError::Relay(reason),
        }) => {
            assert_eq!(peer, nobody);
            assert!(reason.contains("not registered"), "{reason}");
        }
        other => panic!("expected a relay error, got {other:?}"),
    }
    assert_eq!(
        a.send(Send::text(uuid_a, "me")).await.unwrap(),
        Err(PeerError::SelfSend(uuid_a))
    );
    assert_eq!(
        a.send(Recv(Some(Duration::from_millis(100))))
            .await
            .unwrap(),
        Err(PeerError::RecvTimeout(Duration::from_millis(100)))
    );
    // The failed connection was cleaned up: the manager still works.
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;
    a.send(Send::text(uuid_b, "still here"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&b).await.peer, uuid_a);
}

#[actix_rt::test]
async fn a_peer_that_never_answers_times_out() {
    let relay = TestRelay::start(test_settings());
    // A registered relay client that ignores offers.
    let silent = Uuid::new_v4();
    let _ws = common::client(&relay.url, "silent", &silent.to_string()).await;
    let mut config = peer_config(&relay.url, 1);
    config.connection.connect_timeout = Duration::from_millis(500);
    let (a, _) = manager(config).await;
    match a.send(Connect(silent)).await.unwrap() {
        Err(PeerError::Connection {
            error: ConnectionError::Timeout(_),
            ..
        }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[actix_rt::test]
async fn invalid_relay_url_is_a_typed_error() {
    match PeerManager::new(PeerManagerConfig::new("http://127.0.0.1:1")) {
        Err(PeerError::Relay(RelayClientError::InvalidUrl { .. })) => {}
        other => panic!("expected InvalidUrl, got {:?}", other.err()),
    }
    let mut config = PeerManagerConfig::new("ws://127.0.0.1:1");
    config.connection.channels = 0;
    assert!(matches!(
        PeerManager::new(config),
        Err(PeerError::Config(_))
    ));
}

#[actix_rt::test]
async fn close_notifications_reach_both_sides() {
    let relay = TestRelay::start(test_settings());
    let (a, _) = manager(peer_config(&relay.url, 1)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;
    let mut events_a = events(&a).await;
    let mut events_b = events(&b).await;
    a.send(Connect(uuid_b)).await.unwrap().unwrap();
    wait_event(
        &mut events_a,
        |e| matches!(e, PeerEvent::Connected { peer, .. } if *peer == uuid_b),
    )
    .await;
    wait_event(&mut events_b, |e| matches!(e, PeerEvent::Connected { .. })).await;

    a.send(CloseConnection(uuid_b)).await.unwrap().unwrap();
    let closed_a = wait_event(&mut events_a, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        closed_a,
        PeerEvent::Disconnected {
            peer: uuid_b,
            error: None
        }
    );
    match wait_event(&mut events_b, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await
    {
        PeerEvent::Disconnected { error: Some(_), .. } => {}
        other => panic!("b should see the connection fail or close, got {other:?}"),
    }
    // The next send opens a new connection.
    a.send(Send::text(uuid_b, "reconnected"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("reconnected".into()));
}

#[actix_rt::test]
async fn relay_restart_keeps_connections_and_lets_new_peers_in() {
    let mut relay = TestRelay::start(test_settings());
    let addr = relay.addr;
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;
    let mut events_a = events(&a).await;
    a.send(Send::text(uuid_b, "before")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("before".into()));

    relay.stop();
    wait_event(&mut events_a, |e| matches!(e, PeerEvent::RelayLost { .. })).await;
    // The established connection does not need the relay.
    a.send(Send::text(uuid_b, "during")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("during".into()));

    let relay = TestRelay::start_at(test_settings(), addr);
    wait_event(&mut events_a, |e| matches!(e, PeerEvent::Registered { .. })).await;
    wait_registered(&b).await;
    let (c, uuid_c) = manager(peer_config(&relay.url, 1)).await;
    c.send(Send::text(uuid_a, "new peer"))
        .await
        .unwrap()
        .unwrap();
    let got = recv(&a).await;
    assert_eq!(
        (got.peer, got.payload),
        (uuid_c, Payload::Text("new peer".into()))
    );
    a.send(Send::text(uuid_b, "after")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("after".into()));
}

#[actix_rt::test]
async fn a_send_right_after_start_waits_for_the_registration() {
    let relay = TestRelay::start(test_settings());
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;
    // No wait for registration: the offer is held until the relay accepts us.
    let a = PeerManager::new(peer_config(&relay.url, 1))
        .unwrap()
        .start();
    a.send(Send::text(uuid_b, "early")).await.unwrap().unwrap();
    assert_eq!(recv(&b).await.payload, Payload::Text("early".into()));
}
