//! Proves the peer sockets' tail-loss probes: on real UDP sockets, a burst of
//! at least 16 large datagrams followed by a quiet period is followed by its
//! last 8 datagrams again, byte for byte and in order, once, and not before
//! the quiet period (two round trips plus 5 ms, 100 ms assumed before ICE
//! has measured one); shorter bursts and small datagrams are never probed.
//! End to end, a Switchboard peer sending 1 MiB messages to a peer whose UDP
//! receive buffer is as small as Chromium's (64 KiB asked) does send probes,
//! and every message arrives whole (the receiver's DTLS drops the copies that
//! had already arrived), and `Close` reports everything acknowledged.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::peers::{manager, peer_config, recv};
use common::{test_settings, TestRelay};
use switchboard::client::peer_manager::{Close, Send};
use switchboard::client::probe::{
    probes_sent, TailProbeSocket, PROBE_ACK_ALLOWANCE, PROBE_DATAGRAMS, PROBE_DEFAULT_RTT,
    PROBE_MIN_BURST,
};
use switchboard::protocol::chunk::Payload;
use webrtc::runtime::{AsyncUdpSocket, Runtime, TokioRuntime};

/// A datagram of `len` bytes whose every byte is `tag` (DTLS-like first byte).
fn datagram(tag: u8, len: usize) -> Vec<u8> {
    vec![tag; len]
}

/// A probing sender socket and a plain receiver, both on 127.0.0.1:0.
fn sockets() -> (Arc<TailProbeSocket>, tokio::net::UdpSocket) {
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let inner = TokioRuntime.wrap_udp_socket(sender).unwrap();
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    (
        Arc::new(TailProbeSocket::new(inner)),
        tokio::net::UdpSocket::from_std(receiver).unwrap(),
    )
}

/// Polls the sender's receive side, as `webrtc`'s driver does, so its probe
/// timer runs; nothing is ever sent to it.
fn drive(sender: &Arc<TailProbeSocket>) -> tokio::task::JoinHandle<()> {
    let sender = sender.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(30), sender.recv_from(&mut buf)).await;
    })
}

/// Every datagram `receiver` gets within `window`, with its arrival time.
async fn collect(receiver: &tokio::net::UdpSocket, window: Duration) -> Vec<(Vec<u8>, Instant)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline, receiver.recv(&mut buf)).await {
            Ok(Ok(n)) => got.push((buf[..n].to_vec(), Instant::now())),
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn a_burst_is_followed_by_its_tail_once_after_the_quiet_period() {
    let (sender, receiver) = sockets();
    let to = receiver.local_addr().unwrap();
    let driver = drive(&sender);
    let burst = PROBE_MIN_BURST + 4;
    for i in 0..burst {
        sender
            .send_to(&datagram(20 + i as u8, 1200), to)
            .await
            .unwrap();
    }
    let last_send = Instant::now();
    let got = collect(&receiver, Duration::from_millis(900)).await;
    driver.abort();
    assert_eq!(
        got.len(),
        burst + PROBE_DATAGRAMS,
        "originals then the probes"
    );
    for (i, (bytes, _)) in got[..burst].iter().enumerate() {
        assert_eq!(bytes, &datagram(20 + i as u8, 1200), "original {i}");
    }
    for (k, (bytes, at)) in got[burst..].iter().enumerate() {
        let i = burst - PROBE_DATAGRAMS + k;
        assert_eq!(
            bytes,
            &datagram(20 + i as u8, 1200),
            "probe {k} repeats datagram {i}"
        );
        let quiet = PROBE_DEFAULT_RTT * 2 + PROBE_ACK_ALLOWANCE;
        assert!(
            at.duration_since(last_send) >= quiet - Duration::from_millis(1),
            "probe {k} after {:?}, before the quiet period {quiet:?}",
            at.duration_since(last_send)
        );
    }
}

#[tokio::test]
async fn short_bursts_and_small_datagrams_are_not_probed() {
    let (sender, receiver) = sockets();
    let to = receiver.local_addr().unwrap();
    let driver = drive(&sender);
    let short = PROBE_MIN_BURST - 1;
    for i in 0..short {
        sender
            .send_to(&datagram(20 + i as u8, 1200), to)
            .await
            .unwrap();
    }
    let got = collect(&receiver, Duration::from_millis(600)).await;
    assert_eq!(
        got.len(),
        short,
        "a burst under {PROBE_MIN_BURST} datagrams is not probed"
    );
    // Many small datagrams (SACKs, STUN, alerts) are not a burst either.
    for _ in 0..PROBE_MIN_BURST * 2 {
        sender.send_to(&datagram(23, 100), to).await.unwrap();
    }
    let got = collect(&receiver, Duration::from_millis(600)).await;
    driver.abort();
    assert_eq!(
        got.len(),
        PROBE_MIN_BURST * 2,
        "small datagrams are not probed"
    );
}

#[actix_rt::test]
async fn probes_reach_a_small_buffer_peer_and_every_message_arrives_whole() {
    let relay = TestRelay::start(test_settings());
    let (sender, _) = manager(peer_config(&relay.url, 1)).await;
    let mut small = peer_config(&relay.url, 1);
    small.connection.udp_socket_buffer = 64 << 10;
    let (receiver, receiver_uuid) = manager(small).await;
    let before = probes_sent();
    for seed in 0..3u8 {
        let bytes: Vec<u8> = (0..1 << 20).map(|i| (i as u8) ^ seed).collect();
        sender
            .send(Send {
                peer: receiver_uuid,
                payload: Payload::Bytes(bytes.clone().into()),
            })
            .await
            .unwrap()
            .unwrap();
        let got = recv(&receiver).await;
        assert_eq!(
            got.payload.as_bytes(),
            &bytes[..],
            "message {seed} arrives whole"
        );
        // Let the burst end so its tail is probed before the next message.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        probes_sent() > before,
        "the sender probed the end of its bursts"
    );
    sender
        .send(Close)
        .await
        .unwrap()
        .expect("everything acknowledged");
    receiver
        .send(Close)
        .await
        .unwrap()
        .expect("receiver closes cleanly");
}
