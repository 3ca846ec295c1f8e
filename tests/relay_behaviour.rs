//! Proves the relay's behaviours against real WebSocket clients: registration,
//! forwarding offers and answers byte-for-byte, error echoes, 4004 takeover,
//! 4002 before registering, source_uuid checks, and that every UUID of a
//! socket is removed on every close path.

mod common;

use common::*;
use futures_util::SinkExt;

#[tokio::test]
async fn register_and_forward_offer_and_answer() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;

    let frame = offer(UUID_A, UUID_B, "offer");
    send(&mut a, frame.clone()).await;
    assert_eq!(
        recv_text(&mut b).await,
        frame,
        "forwarded frame must be byte-identical"
    );

    let answer = offer(UUID_B, UUID_A, "answer").replace("peer-A", "peer-B");
    send(&mut b, answer.clone()).await;
    assert_eq!(recv_text(&mut a).await, answer);
}

#[tokio::test]
async fn forwarded_frames_are_canonicalised_like_proxystore() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    // Upper-case UUIDs, other key order, no `error`, non-ASCII: ProxyStore would
    // decode and re-encode this; so does Switchboard.
    let sent = format!(
        r#"{{"message_type":"peer_connection","peer_uuid":"{}","source_uuid":"{}","source_name":"pëer","description_type":"offer","description":"{{}}"}}"#,
        UUID_B.to_uppercase(),
        UUID_A.to_uppercase()
    );
    send(&mut a, sent).await;
    let expected = format!(
        r#"{{"source_uuid": "{UUID_A}", "source_name": "p\u00eber", "peer_uuid": "{UUID_B}", "description_type": "offer", "description": "{{}}", "error": null, "message_type": "peer_connection"}}"#
    );
    assert_eq!(recv_text(&mut b).await, expected);
}

#[tokio::test]
async fn unknown_peer_gets_error_echo() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    send(&mut a, offer(UUID_A, UUID_C, "offer")).await;
    let echo: serde_json::Value = serde_json::from_str(&recv_text(&mut a).await).unwrap();
    assert_eq!(
        echo["error"],
        format!("Cannot forward peer connection message to peer {UUID_C} because this peer is not registered this relay server.")
    );
    assert_eq!(echo["peer_uuid"], UUID_C);
    assert_eq!(echo["message_type"], "peer_connection");
    // The socket stays open and usable.
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    send(&mut a, offer(UUID_A, UUID_B, "offer")).await;
    assert_eq!(recv_text(&mut b).await, offer(UUID_A, UUID_B, "offer"));
}

#[tokio::test]
async fn same_user_reregistration_takes_over_with_4004() {
    let relay = TestRelay::start(test_settings());
    let mut old = client(&relay.url, "peer-A", UUID_A).await;
    let mut new = client(&relay.url, "peer-A2", UUID_A).await;
    let (code, reason) = expect_close(&mut old).await;
    assert_eq!(code, 4004);
    assert!(
        reason.starts_with("Relay received a registration with the same ID"),
        "{reason}"
    );
    // The new socket owns the UUID: messages reach it.
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    send(&mut b, offer(UUID_B, UUID_A, "offer")).await;
    assert_eq!(recv_text(&mut new).await, offer(UUID_B, UUID_A, "offer"));
    let json = wait_clients(relay.admin, |j| j.as_array().unwrap().len() == 2).await;
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["uuid"] == UUID_A)
        .unwrap()
        .clone();
    assert_eq!(entry["name"], "peer-A2");
}

#[tokio::test]
async fn forward_before_registering_is_closed_with_4002() {
    let relay = TestRelay::start(test_settings());
    let mut ws = connect(&relay.url).await;
    send(&mut ws, offer(UUID_A, UUID_B, "offer")).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4002);
    assert!(reason.contains("has not registered"), "{reason}");
    assert_still_serving(&relay.url).await;
}

#[tokio::test]
async fn spoofed_source_uuid_gets_error_echo() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    // A claims to be C, which it never registered.
    send(&mut a, offer(UUID_C, UUID_B, "offer")).await;
    let echo: serde_json::Value = serde_json::from_str(&recv_text(&mut a).await).unwrap();
    assert!(echo["error"]
        .as_str()
        .unwrap()
        .contains("not registered on this connection"));
    // Nothing reached B: the next frame B sees is a legitimate one.
    send(&mut a, offer(UUID_A, UUID_B, "offer")).await;
    assert_eq!(recv_text(&mut b).await, offer(UUID_A, UUID_B, "offer"));
}

#[tokio::test]
async fn one_socket_may_hold_several_uuids_and_loses_all_on_close() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    register(&mut a, "peer-C", UUID_C).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    send(&mut b, offer(UUID_B, UUID_C, "offer")).await;
    assert_eq!(recv_text(&mut a).await, offer(UUID_B, UUID_C, "offer"));
    wait_clients(relay.admin, |j| lists(j, UUID_A) && lists(j, UUID_C)).await;

    a.close(None).await.unwrap();
    wait_clients(relay.admin, |j| !lists(j, UUID_A) && !lists(j, UUID_C)).await;
    send(&mut b, offer(UUID_B, UUID_C, "offer")).await;
    let echo: serde_json::Value = serde_json::from_str(&recv_text(&mut b).await).unwrap();
    assert!(echo["error"].as_str().unwrap().contains("not registered"));
}

#[tokio::test]
async fn tcp_cut_without_close_frame_unregisters() {
    let relay = TestRelay::start(test_settings());
    let a = client(&relay.url, "peer-A", UUID_A).await;
    wait_clients(relay.admin, |j| lists(j, UUID_A)).await;
    // Drop the socket: the TCP connection ends with no WebSocket close frame.
    drop(a);
    wait_clients(relay.admin, |j| !lists(j, UUID_A)).await;
    assert_still_serving(&relay.url).await;
}

#[tokio::test]
async fn client_close_is_answered_with_a_close_frame() {
    let relay = TestRelay::start(test_settings());
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    a.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    let (code, _) = expect_close(&mut a).await;
    assert_eq!(code, 1000);
}

/// After the close handshake the relay hangs up at once (RFC 6455 §7.1.1: the
/// server closes TCP first) instead of lingering until a timeout; clients such
/// as Python `websockets` wait for that before `close()` returns.
#[tokio::test]
async fn relay_hangs_up_right_after_the_close_handshake() {
    use futures_util::StreamExt;
    let relay = TestRelay::start(test_settings());
    for client_starts in [false, true] {
        let mut ws = client(&relay.url, "peer-A", UUID_A).await;
        if client_starts {
            ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
                .await
                .unwrap();
        } else {
            send(&mut ws, "not json").await;
        }
        expect_close(&mut ws).await;
        // tungstenite has answered the close; the relay must now end the TCP stream.
        let ended = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "relay kept the socket open after the close handshake (client_starts={client_starts})"
        );
    }
}
