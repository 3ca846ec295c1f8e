//! Proves that the peer library never reports undelivered data as sent. A
//! `switchboard peer listen` process is the peer; frozen with SIGSTOP once
//! our connection to it is ready, its SCTP stack acknowledges nothing. Then
//! `Send` of 16 MiB over 4 channels still resolves (the chunks are handed to
//! SCTP), but `Flush` fails within the stall limit with
//! `ConnectionError::Unacknowledged` naming the bytes acknowledged (0) and
//! sent (all 16 MiB), and so do `Close` (`PeerError::Undelivered`, at once:
//! the flush already gave up) and `CloseConnection`. A `Send` of 32 MiB,
//! which waits for send-buffer room, fails within the stall limit too (the
//! whole message counts as unacknowledged), as does a `Flush` queued behind
//! it, and the connection ends, so `Close` reports it. A connection that the
//! relay's verdict (our UUID taken over) closes with data unacknowledged
//! reports it in `PeerEvent::Disconnected`, and the next `Flush` of that
//! peer returns it, once. To a live peer, `Flush`, `CloseConnection` and
//! `Close` succeed, and `Close` right after a `Send` delivers the message.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::peers::{events, manager, peer_config, recv, wait_event};
use common::{test_settings, TestRelay};
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{
    Close, CloseConnection, Connect, Flush, PeerError, PeerEvent, PeerManager, Send,
};
use switchboard::defaults::PEER_FLUSH_STALL_MS;
use switchboard::protocol::chunk::Payload;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// 16 MiB: four channels' send buffers (4 MiB each) take all of it.
const SIZE: usize = 16 << 20;

fn stall() -> Duration {
    Duration::from_millis(PEER_FLUSH_STALL_MS)
}

/// A `switchboard peer listen` process on loopback and its UUID.
async fn listener(relay: &str) -> (Child, Uuid) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["peer", "--relay", relay, "--bind", "127.0.0.1", "listen"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a ready line in time")
        .unwrap()
        .expect("the listener printed its ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let uuid = ready["uuid"].as_str().unwrap().parse().unwrap();
    // Keep reading stdout so the listener never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, uuid)
}

fn signal(child: &Child, signal: i32) {
    let pid = child.id().expect("the process is running") as i32;
    // SAFETY: kill(2) on the pid of a child we own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Connects `manager` to a listener process, then freezes the listener.
async fn frozen_peer(manager: &Addr<PeerManager>, relay: &str) -> (Child, Uuid) {
    let (child, peer) = listener(relay).await;
    manager.send(Connect(peer)).await.unwrap().unwrap();
    // The connection is ready on both sides once Connect resolved.
    signal(&child, libc::SIGSTOP);
    (child, peer)
}

/// Asserts `error` is `peer`'s unacknowledged data: nothing of `SIZE` bytes.
fn assert_nothing_acknowledged(error: &PeerError, peer: Uuid) {
    match error {
        PeerError::Connection {
            peer: got,
            error:
                ConnectionError::Unacknowledged {
                    acked,
                    total,
                    reason,
                },
        } => {
            assert_eq!(*got, peer);
            assert_eq!((*acked, *total), (0, SIZE as u64), "{reason}");
        }
        other => panic!("expected unacknowledged data to {peer}, got {other:?}"),
    }
}

fn payload() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

#[actix_rt::test]
async fn flush_and_close_report_what_a_frozen_peer_did_not_acknowledge() {
    let relay = TestRelay::start(test_settings());
    let (me, _) = manager(peer_config(&relay.url, 4)).await;
    let (child, peer) = frozen_peer(&me, &relay.url).await;

    // Handed over is all Send promises.
    me.send(Send::bytes(peer, payload()))
        .await
        .unwrap()
        .unwrap();
    let began = Instant::now();
    let flushed = me.send(Flush(peer)).await.unwrap();
    let took = began.elapsed();
    let error = flushed.expect_err("nothing was acknowledged");
    assert_nothing_acknowledged(&error, peer);
    assert!(
        error.to_string().contains("nothing more acknowledged"),
        "{error}"
    );
    assert!(
        took >= stall() && took < stall() + Duration::from_secs(3),
        "{took:?}"
    );

    // The flush gave up already: Close says so at once.
    let began = Instant::now();
    match me.send(Close).await.unwrap() {
        Err(PeerError::Undelivered(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_nothing_acknowledged(&errors[0], peer);
        }
        other => panic!("expected Undelivered, got {other:?}"),
    }
    assert!(began.elapsed() < Duration::from_secs(3));
    signal(&child, libc::SIGCONT);
}

#[actix_rt::test]
async fn a_send_waiting_for_buffer_room_and_a_flush_behind_it_fail_within_the_stall_limit() {
    let relay = TestRelay::start(test_settings());
    let (me, _) = manager(peer_config(&relay.url, 1)).await;
    let (child, peer) = frozen_peer(&me, &relay.url).await;
    // 32 MiB over one channel: the hand-over stops at the 4 MiB send buffer.
    let big: Vec<u8> = (0..2 * SIZE).map(|i| (i % 249) as u8).collect();
    let began = Instant::now();
    let send = actix_rt::spawn(me.send(Send::bytes(peer, big)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!send.is_finished(), "the send waits for buffer room");
    let flushed = me.send(Flush(peer)).await.unwrap();
    let took = began.elapsed();
    let within = |took: Duration| took >= stall() && took < stall() + Duration::from_secs(3);
    assert!(within(took), "the flush ended after {took:?}");
    let unacknowledged = |error: &PeerError| match error {
        PeerError::Connection {
            error: ConnectionError::Unacknowledged { acked, total, .. },
            ..
        } => (*acked, *total),
        other => panic!("expected unacknowledged data, got {other:?}"),
    };
    let error = flushed.expect_err("stalled");
    assert_eq!(unacknowledged(&error), (0, 2 * SIZE as u64), "{error}");
    let sent = tokio::time::timeout(Duration::from_secs(3), send)
        .await
        .expect("the send gave up with the flush")
        .unwrap()
        .unwrap();
    let error = sent.expect_err("the send did not finish");
    assert_eq!(unacknowledged(&error), (0, 2 * SIZE as u64), "{error}");
    assert!(error.to_string().contains("while sending"), "{error}");
    // The connection ended with the data unacknowledged: Close says so, at once.
    let began = Instant::now();
    assert!(matches!(
        me.send(Close).await.unwrap(),
        Err(PeerError::Undelivered(_))
    ));
    assert!(began.elapsed() < Duration::from_secs(3));
    signal(&child, libc::SIGCONT);
}

#[actix_rt::test]
async fn close_connection_reports_what_a_frozen_peer_did_not_acknowledge() {
    let relay = TestRelay::start(test_settings());
    let (me, _) = manager(peer_config(&relay.url, 4)).await;
    let (child, peer) = frozen_peer(&me, &relay.url).await;
    me.send(Send::bytes(peer, payload()))
        .await
        .unwrap()
        .unwrap();
    let error = me
        .send(CloseConnection(peer))
        .await
        .unwrap()
        .expect_err("nothing was acknowledged");
    assert_nothing_acknowledged(&error, peer);
    // Reported once: nothing is left for Flush or Close.
    me.send(Flush(peer)).await.unwrap().unwrap();
    me.send(Close).await.unwrap().unwrap();
    signal(&child, libc::SIGCONT);
}

#[actix_rt::test]
async fn a_connection_closed_with_data_unacknowledged_is_reported_by_the_next_flush() {
    let relay = TestRelay::start(test_settings());
    let (me, uuid) = manager(peer_config(&relay.url, 4)).await;
    let mut events = events(&me).await;
    let (child, peer) = frozen_peer(&me, &relay.url).await;
    me.send(Send::bytes(peer, payload()))
        .await
        .unwrap()
        .unwrap();
    // Another registration takes our UUID over: the verdict closes the
    // connection, whose flush gives up after the stall limit.
    let _thief = common::client(&relay.url, "thief", &uuid.to_string()).await;
    let disconnected = wait_event(&mut events, |e| {
        matches!(
            e,
            PeerEvent::Disconnected {
                error: Some(ConnectionError::Unacknowledged { .. }),
                ..
            }
        )
    })
    .await;
    let PeerEvent::Disconnected {
        error: Some(error), ..
    } = disconnected
    else {
        unreachable!()
    };
    assert_nothing_acknowledged(&PeerError::Connection { peer, error }, peer);
    let error = me
        .send(Flush(peer))
        .await
        .unwrap()
        .expect_err("the loss is reported");
    assert_nothing_acknowledged(&error, peer);
    me.send(Flush(peer)).await.unwrap().unwrap();
    signal(&child, libc::SIGCONT);
}

#[actix_rt::test]
async fn flush_close_connection_and_close_succeed_once_a_live_peer_acknowledged() {
    let relay = TestRelay::start(test_settings());
    let (me, _) = manager(peer_config(&relay.url, 4)).await;
    let (other, other_uuid) = manager(peer_config(&relay.url, 4)).await;
    let data = payload();
    me.send(Send::bytes(other_uuid, data.clone()))
        .await
        .unwrap()
        .unwrap();
    me.send(Flush(other_uuid)).await.unwrap().unwrap();
    assert_eq!(recv(&other).await.payload, Payload::Bytes(data.into()));
    me.send(Send::text(other_uuid, "closing"))
        .await
        .unwrap()
        .unwrap();
    me.send(CloseConnection(other_uuid)).await.unwrap().unwrap();
    assert_eq!(recv(&other).await.payload, Payload::Text("closing".into()));
    // Close right after a Send: the close flushes, the message arrives.
    me.send(Send::text(other_uuid, "last"))
        .await
        .unwrap()
        .unwrap();
    me.send(Close).await.unwrap().unwrap();
    assert_eq!(recv(&other).await.payload, Payload::Text("last".into()));
    other.send(Close).await.unwrap().unwrap();
}
