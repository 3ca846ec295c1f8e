//! Proves that two `Connection` actors make a real WebRTC connection on loopback
//! (offer/answer handed over directly, no relay), move bytes, text and multi-chunk
//! messages over 1 and 4 channels (and with 16 000-byte SCTP packets), and report
//! typed errors and one `Closed` event; a STUN server that never answers delays
//! set-up only by the gathering limit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use common::forwarder::Forwarder;
use switchboard::client::connection::{
    CandidateType, Close, Connection, ConnectionConfig, ConnectionError, ConnectionEvent,
    ConnectionEventKind, IceServer, Role, SendMessage, SetAnswer, WaitReady,
};
use switchboard::protocol::chunk::Payload;
use tokio::sync::mpsc;
use uuid::Uuid;

fn loopback_config(channels: usize, sctp_mtu: Option<u32>) -> Arc<ConnectionConfig> {
    Arc::new(ConnectionConfig {
        channels,
        bind_addrs: vec!["127.0.0.1".parse().unwrap()],
        connect_timeout: Duration::from_secs(10),
        sctp_mtu,
        ..ConnectionConfig::default()
    })
}

struct Side {
    addr: Addr<Connection>,
    events: mpsc::UnboundedReceiver<ConnectionEvent>,
}

async fn next_event(side: &mut Side) -> ConnectionEventKind {
    tokio::time::timeout(Duration::from_secs(20), side.events.recv())
        .await
        .expect("event within 20 s")
        .expect("event channel open")
        .kind
}

async fn local_description(side: &mut Side) -> String {
    match next_event(side).await {
        ConnectionEventKind::LocalDescription { description, .. } => description,
        other => panic!("expected a local description, got {other:?}"),
    }
}

fn start(role: Role, config: Arc<ConnectionConfig>, peer: Uuid) -> Side {
    let (tx, events) = mpsc::unbounded_channel();
    let collector = Forwarder(tx).start();
    let addr = Connection::new(peer, 1, role, config, collector.recipient()).start();
    Side { addr, events }
}

/// Offerer and answerer connected to each other; returns them ready.
async fn pair(channels: usize, sctp_mtu: Option<u32>) -> (Side, Side, Duration) {
    let began = Instant::now();
    let config = loopback_config(channels, sctp_mtu);
    let mut offerer = start(Role::Offerer, config, Uuid::new_v4());
    let offer = local_description(&mut offerer).await;
    let config = loopback_config(1, sctp_mtu);
    let mut answerer = start(Role::Answerer { offer }, config, Uuid::new_v4());
    let answer = local_description(&mut answerer).await;
    offerer.addr.send(SetAnswer(answer)).await.unwrap().unwrap();
    offerer
        .addr
        .send(WaitReady(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let setup = began.elapsed();
    answerer
        .addr
        .send(WaitReady(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // On loopback the only candidates are host ones, and ICE says so.
    for side in [&mut offerer, &mut answerer] {
        match next_event(side).await {
            ConnectionEventKind::Ready(Some(route)) => {
                assert_eq!(route.local, CandidateType::Host, "{route}");
                assert!(
                    matches!(route.remote, CandidateType::Host | CandidateType::Prflx),
                    "{route}"
                );
                assert!(
                    route.local_addr.is_some_and(|a| a.ip().is_loopback()),
                    "{route}"
                );
                assert!(route.setup > Duration::ZERO && route.setup < Duration::from_secs(10));
            }
            other => panic!("expected Ready with the selected pair, got {other:?}"),
        }
    }
    (offerer, answerer, setup)
}

async fn expect_message(side: &mut Side) -> Payload {
    match next_event(side).await {
        ConnectionEventKind::Message(payload) => payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn round_trip(channels: usize, sctp_mtu: Option<u32>) {
    let (mut a, mut b, setup) = pair(channels, sctp_mtu).await;
    eprintln!("{channels} channel(s): ready in {setup:?}");
    let big: Bytes = (0..(1 << 20) + 12_345)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let messages = vec![
        Payload::Bytes(Bytes::from_static(b"hello")),
        Payload::Text("plain ascii".into()),
        Payload::Text("non-ASCII: żółw, 猫, 🦀".into()),
        Payload::Bytes(Bytes::new()),
        Payload::Text(String::new()),
        Payload::Bytes(big),
    ];
    for message in &messages {
        a.addr
            .send(SendMessage(message.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&expect_message(&mut b).await, message);
    }
    // And back the other way.
    b.addr
        .send(SendMessage(Payload::Text("reply".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expect_message(&mut a).await, Payload::Text("reply".into()));
    a.addr.send(Close).await.unwrap().unwrap();
    assert_eq!(
        match next_event(&mut a).await {
            ConnectionEventKind::Closed(error) => error,
            other => panic!("expected Closed, got {other:?}"),
        },
        None
    );
    match next_event(&mut b).await {
        ConnectionEventKind::Closed(Some(
            ConnectionError::Closed(_) | ConnectionError::WebRtc(_),
        )) => {}
        other => panic!("expected the peer to see the close, got {other:?}"),
    }
}

#[actix_rt::test]
async fn one_channel_round_trip() {
    round_trip(1, None).await;
}

#[actix_rt::test]
async fn four_channel_round_trip() {
    round_trip(4, None).await;
}

#[actix_rt::test]
async fn sixteen_kilobyte_sctp_packets_between_switchboard_peers() {
    round_trip(4, Some(16_000)).await;
}

/// A STUN server that never answers (a bound socket that reads nothing)
/// holds each side's description back by `gather_timeout`, not by webrtc's
/// own STUN retransmissions (~21 s, measured): with a 300 ms limit the pair
/// connects over host candidates well inside an 8 s connect timeout.
#[actix_rt::test]
async fn a_stun_server_that_never_answers_holds_set_up_back_only_by_the_gathering_limit() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("stun:{}", silent.local_addr().unwrap());
    let config = Arc::new(ConnectionConfig {
        ice_servers: vec![IceServer {
            urls: vec![url],
            username: String::new(),
            credential: String::new(),
        }],
        gather_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(8),
        ..(*loopback_config(1, None)).clone()
    });
    let mut offerer = start(Role::Offerer, config.clone(), Uuid::new_v4());
    let offer = local_description(&mut offerer).await;
    let mut answerer = start(Role::Answerer { offer }, config, Uuid::new_v4());
    let answer = local_description(&mut answerer).await;
    offerer.addr.send(SetAnswer(answer)).await.unwrap().unwrap();
    for side in [&offerer, &answerer] {
        side.addr
            .send(WaitReady(Duration::from_secs(8)))
            .await
            .unwrap()
            .expect("connected over host candidates despite the silent STUN server");
    }
    offerer
        .addr
        .send(SendMessage(Payload::Text(
            "after a silent STUN server".into(),
        )))
        .await
        .unwrap()
        .unwrap();
    // The answerer reports Ready (host candidates) before the message.
    match next_event(&mut answerer).await {
        ConnectionEventKind::Ready(Some(route)) => {
            assert_eq!(route.local, CandidateType::Host, "{route}")
        }
        other => panic!("expected Ready, got {other:?}"),
    }
    assert_eq!(
        expect_message(&mut answerer).await,
        Payload::Text("after a silent STUN server".into())
    );
    drop(silent);
}
