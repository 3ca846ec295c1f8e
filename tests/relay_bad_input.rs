//! Proves every bad input named by the relay issue gets the right close code
//! (or error echo), is counted in /metrics, and leaves the relay serving
//! everyone else.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Sends `frame` on a fresh (optionally registered) socket, asserts the close
/// code, and that the relay still serves two other clients.
async fn closes_with(relay: &TestRelay, registered: bool, frame: Message, code: u16) -> String {
    let mut ws = connect(&relay.url).await;
    if registered {
        register(&mut ws, "bad", &uuid::Uuid::new_v4().to_string()).await;
    }
    ws.send(frame).await.unwrap();
    let (got, reason) = expect_close(&mut ws).await;
    assert_eq!(got, code, "reason: {reason}");
    assert_still_serving(&relay.url).await;
    reason
}

async fn text_closes_4000(relay: &TestRelay, text: &str) {
    for registered in [false, true] {
        let reason = closes_with(relay, registered, Message::text(text), 4000).await;
        assert_eq!(reason, "Unknown message type.", "{text}");
    }
}

#[tokio::test]
async fn binary_frame() {
    let relay = TestRelay::start(test_settings());
    let frame = Message::binary(registration("x", UUID_A).into_bytes());
    closes_with(&relay, false, frame.clone(), 4000).await;
    closes_with(&relay, true, frame, 4000).await;
}

#[tokio::test]
async fn text_that_is_not_json() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(&relay, "hello relay").await;
    text_closes_4000(&relay, "{\"message_type\": \"relay_registration\"").await;
    text_closes_4000(&relay, "").await;
}

#[tokio::test]
async fn json_array_string_number_and_null() {
    let relay = TestRelay::start(test_settings());
    for text in ["[1, 2, 3]", "\"relay_registration\"", "42", "null", "true"] {
        text_closes_4000(&relay, text).await;
    }
}

#[tokio::test]
async fn unknown_message_type_and_class_name_spelling() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(&relay, r#"{"message_type": "hello"}"#).await;
    text_closes_4000(&relay, r#"{"name": "a"}"#).await;
    let class_name =
        registration("a", UUID_A).replace("relay_registration", "RelayRegistrationRequest");
    text_closes_4000(&relay, &class_name).await;
    let class_name =
        offer(UUID_A, UUID_B, "offer").replace("\"peer_connection\"", "\"PeerConnectionRequest\"");
    text_closes_4000(&relay, &class_name).await;
}

#[tokio::test]
async fn missing_and_extra_fields() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(
        &relay,
        &format!(r#"{{"uuid": "{UUID_A}", "message_type": "relay_registration"}}"#),
    )
    .await;
    text_closes_4000(
        &relay,
        r#"{"name": "a", "message_type": "relay_registration"}"#,
    )
    .await;
    let extra = registration("a", UUID_A).replace("\"name\"", "\"color\": \"red\", \"name\"");
    text_closes_4000(&relay, &extra).await;
    let missing_desc =
        offer(UUID_A, UUID_B, "offer").replace("\"description_type\"", "\"description_kind\"");
    text_closes_4000(&relay, &missing_desc).await;
}

#[tokio::test]
async fn invalid_or_null_uuid() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(&relay, &registration("a", "not-a-uuid")).await;
    text_closes_4000(
        &relay,
        &registration("a", "0b02e3e1-3e68-41e9-9712-6aedce7b75dbff"),
    )
    .await;
    text_closes_4000(
        &relay,
        r#"{"name": "a", "uuid": null, "message_type": "relay_registration"}"#,
    )
    .await;
    text_closes_4000(&relay, &offer(UUID_A, "zzz", "offer")).await;
}

#[tokio::test]
async fn client_sent_relay_response() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(&relay, SUCCESS).await;
}

#[tokio::test]
async fn frame_over_the_limit_gets_4003() {
    let mut settings = test_settings();
    settings.server.max_message_bytes = 4096;
    let relay = TestRelay::start(settings);
    let big = offer(UUID_A, UUID_B, "offer").replace("v=0", &"x".repeat(5000));
    let reason = closes_with(&relay, true, Message::text(big.clone()), 4003).await;
    assert_eq!(reason, "Message length exceeds limit.");
    closes_with(&relay, false, Message::binary(big.into_bytes()), 4003).await;
    // Just under the limit is fine.
    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    let fits = offer(UUID_A, UUID_B, "offer").replace("v=0", &"y".repeat(3500));
    send(&mut a, fits.clone()).await;
    assert_eq!(recv_text(&mut b).await, fits);
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_closes_total{code=\"4003\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_description_type_is_rejected() {
    let relay = TestRelay::start(test_settings());
    let bad = offer(UUID_A, UUID_B, "offer").replace(
        "\"description_type\": \"offer\"",
        "\"description_type\": \"pranswer\"",
    );
    text_closes_4000(&relay, &bad).await;
}

#[tokio::test]
async fn bad_input_is_counted_in_metrics() {
    let relay = TestRelay::start(test_settings());
    text_closes_4000(&relay, "nope").await;
    let (status, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("switchboard_closes_total{code=\"4000\"} 2"),
        "{metrics}"
    );
}
