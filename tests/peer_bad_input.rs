//! Proves that a PeerManager survives bad signalling from a peer: offers and
//! answers whose description is not JSON, not `{"sdp","type"}`, of the wrong
//! type or with SDP that does not parse, and answers nobody asked for. Each
//! gives a typed error or a log line, nothing panics, and the manager keeps
//! serving other peers. Also: a message over the reassembly cap is dropped while
//! the connection keeps working, and a peer process killed mid-message is
//! noticed (ICE failure), its connection and partial message freed.

mod common;

use std::time::Duration;

use futures_util::StreamExt;

use common::peers::{manager, peer_config, recv};
use common::{client, recv_text, send, test_settings, TestRelay};
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{Connect, PeerError, PeerEvent, Recv, Send, Status};
use switchboard::protocol::chunk::Payload;
use switchboard::protocol::{self, DescriptionType, PeerConnection, RelayMessage};
use uuid::Uuid;

fn signal(from: Uuid, to: Uuid, kind: DescriptionType, description: &str) -> String {
    protocol::relay::encode_peer_connection(&PeerConnection {
        source_uuid: from,
        source_name: "raw".into(),
        peer_uuid: to,
        description_type: kind,
        description: description.into(),
        error: None,
    })
}

const BAD_DESCRIPTIONS: &[&str] = &[
    "not json at all",
    "[1, 2, 3]",
    r#"{"sdp": 5, "type": "offer"}"#,
    r#"{"sdp": "v=0 garbage", "type": "offer"}"#,
    r#"{"sdp": "", "type": "offer"}"#,
    r#"{"sdp": "v=0\r\n", "type": "answer"}"#,
];

#[actix_rt::test]
async fn bad_offers_are_refused_and_the_manager_keeps_working() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    let raw_uuid = Uuid::new_v4();
    let mut raw = client(&relay.url, "raw", &raw_uuid.to_string()).await;
    for description in BAD_DESCRIPTIONS {
        send(
            &mut raw,
            signal(raw_uuid, uuid_a, DescriptionType::Offer, description),
        )
        .await;
    }
    // Give the manager time to handle them all, then check it holds no connection.
    let mut idle = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if a.send(Status).await.unwrap().peers.is_empty() {
            idle = true;
            break;
        }
    }
    assert!(idle, "failed connections must be removed");
    // No answer went back to the raw client: every offer was refused.
    let reply = tokio::time::timeout(Duration::from_millis(300), raw.next()).await;
    assert!(reply.is_err(), "unexpected reply to a bad offer: {reply:?}");
    let (b, uuid_b) = manager(peer_config(&relay.url, 1)).await;
    a.send(Send::text(uuid_b, "still serving"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recv(&b).await.payload,
        Payload::Text("still serving".into())
    );
}

#[actix_rt::test]
async fn a_bad_answer_fails_the_connection_with_a_typed_error() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    for description in BAD_DESCRIPTIONS {
        let raw_uuid = Uuid::new_v4();
        let mut raw = client(&relay.url, "raw", &raw_uuid.to_string()).await;
        let connect = a.send(Connect(raw_uuid));
        let answer = async {
            // The raw client receives our offer and answers garbage.
            let text = recv_text(&mut raw).await;
            match protocol::decode(&text).unwrap() {
                RelayMessage::PeerConnection(offer) => {
                    assert_eq!(offer.description_type, DescriptionType::Offer);
                    assert_eq!(offer.source_uuid, uuid_a);
                }
                other => panic!("expected an offer, got {other:?}"),
            }
            send(
                &mut raw,
                signal(raw_uuid, uuid_a, DescriptionType::Answer, description),
            )
            .await;
        };
        let (result, ()) = tokio::join!(connect, answer);
        match result.unwrap() {
            Err(PeerError::Connection {
                peer,
                error: ConnectionError::InvalidSdp(_),
            }) => assert_eq!(peer, raw_uuid),
            other => panic!("{description:?}: expected InvalidSdp, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn unexpected_answers_and_misaddressed_signals_are_ignored() {
    let relay = TestRelay::start(test_settings());
    let (a, uuid_a) = manager(peer_config(&relay.url, 1)).await;
    let raw_uuid = Uuid::new_v4();
    let mut raw = client(&relay.url, "raw", &raw_uuid.to_string()).await;
    let answer = r#"{"sdp": "v=0\r\n", "type": "answer"}"#;
    send(
        &mut raw,
        signal(raw_uuid, uuid_a, DescriptionType::Answer, answer),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.send(Status).await.unwrap().peers.is_empty());
    let (b, _) = manager(peer_config(&relay.url, 1)).await;
    b.send(Send::text(uuid_a, "fine")).await.unwrap().unwrap();
    assert_eq!(recv(&a).await.payload, Payload::Text("fine".into()));
}

#[actix_rt::test]
async fn a_message_over_the_cap_is_dropped_and_the_connection_keeps_working() {
    let relay = TestRelay::start(test_settings());
    let (a, _) = manager(peer_config(&relay.url, 2)).await;
    let mut small = peer_config(&relay.url, 2);
    small.connection.max_message_bytes = 1 << 20;
    let (b, uuid_b) = manager(small).await;
    let big = bytes::Bytes::from(vec![7u8; 2 << 20]);
    a.send(Send::bytes(uuid_b, big)).await.unwrap().unwrap();
    a.send(Send::text(uuid_b, "after the big one"))
        .await
        .unwrap()
        .unwrap();
    // Only the small message arrives; the big one was dropped, not delivered cut.
    assert_eq!(
        recv(&b).await.payload,
        Payload::Text("after the big one".into())
    );
    let more = b.send(Recv(Some(Duration::from_millis(300))));
    assert!(more.await.unwrap().is_err(), "nothing else may arrive");
}

#[actix_rt::test]
async fn a_peer_that_vanishes_mid_message_is_cleaned_up() {
    let relay = TestRelay::start(test_settings());
    let mut config = peer_config(&relay.url, 4);
    config.connection.ice_disconnected_timeout = Duration::from_millis(500);
    config.connection.ice_failed_timeout = Duration::from_millis(500);
    config.connection.ice_keepalive_interval = Duration::from_millis(200);
    let (b, uuid_b) = manager(config).await;
    let mut events_b = common::peers::events(&b).await;
    // A real process sends 64 MiB and is killed (SIGKILL) mid-transfer.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![1u8; 64 << 20]).unwrap();
    let mut sender = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "peer",
            "--relay",
            &relay.url,
            "--bind",
            "127.0.0.1",
            "--channels",
            "4",
        ])
        .arg("send")
        .arg(uuid_b.to_string())
        .arg("--file")
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::peers::wait_event(&mut events_b, |e| matches!(e, PeerEvent::Connected { .. })).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sender.start_kill().unwrap();
    let _ = sender.wait().await;

    common::peers::wait_event(&mut events_b, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    assert!(b.send(Status).await.unwrap().peers.is_empty());
    let partial = b.send(Recv(Some(Duration::from_millis(200))));
    assert!(
        partial.await.unwrap().is_err(),
        "a cut message must not be delivered"
    );
    // B still serves new peers.
    let (c, uuid_c) = manager(peer_config(&relay.url, 1)).await;
    c.send(Send::text(uuid_b, "next")).await.unwrap().unwrap();
    let got = recv(&b).await;
    assert_eq!(
        (got.peer, got.payload),
        (uuid_c, Payload::Text("next".into()))
    );
}
