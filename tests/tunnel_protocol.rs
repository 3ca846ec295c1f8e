//! Proves the tunnel's wire protocol from the agent's side with a hand-made
//! agent speaking raw frames: the handshake, `Start` with the client's
//! address and the public address it connected to on the pooled
//! connection, `Started` opening the way back, and the control channel's
//! `ConnectionOpen` (with the client's address) and `ConnectionDrop`
//! announcements, plus answered heartbeats.

mod tunnel_common;

use switchboard::protocol::tunnel::{Frame, Role};
use switchboard::tunnel::framing::write_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_started_and_announcements() {
    let relay = Relay::start(settings(&["raw"]));
    let (mut control, mut control_reader, session) =
        raw_agent(&relay, "raw", Role::Control, 0).await;
    let (mut data, mut data_reader, echoed) = raw_agent(&relay, "raw", Role::Data, session).await;
    assert_eq!(echoed, session);
    wait_until("the pooled connection", || relay.idle("raw") == 1).await;

    let mut client = TcpStream::connect(relay.service("raw")).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"hello").await.unwrap();
    let Frame::Start {
        conn,
        client: seen,
        server,
    } = next_event(&mut data, &mut data_reader).await
    else {
        panic!("no start");
    };
    assert_eq!(seen, client_addr);
    assert_eq!(
        server,
        relay.service("raw"),
        "Start names the port the client used"
    );
    write_frame(&mut data, &Frame::Started { conn })
        .await
        .unwrap();
    // Raw bytes from here on: what the reader already holds, then the socket.
    let got = read_at_least(&mut data, data_reader.into_leftover(), 5).await;
    assert_eq!(got, b"hello");
    data.write_all(b"world").await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"world");

    assert_eq!(
        next_event(&mut control, &mut control_reader).await,
        Frame::ConnectionOpen {
            conn,
            client: client_addr
        }
    );
    drop(client);
    drop(data);
    assert_eq!(
        next_event(&mut control, &mut control_reader).await,
        Frame::ConnectionDrop { conn }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_hand_off_goes_to_another_pooled_connection_with_the_clients_bytes() {
    let mut s = settings(&["raw"]);
    s.handoff_timeout_ms = 200;
    let relay = Relay::start(s);
    let (_control, _control_reader, session) = raw_agent(&relay, "raw", Role::Control, 0).await;
    // A pooled connection whose agent never answers again.
    let (mut silent, mut silent_reader, _) = raw_agent(&relay, "raw", Role::Data, session).await;
    wait_until("the pooled connection", || relay.idle("raw") == 1).await;

    let mut client = TcpStream::connect(relay.service("raw")).await.unwrap();
    client.write_all(b"GET 0\n").await.unwrap();
    client.shutdown().await.unwrap();
    // It gets a heartbeat and the Start, with the client's bytes and FIN.
    let ping = silent_reader.next_within(&mut silent, WAIT, "ping").await;
    assert!(matches!(ping, Ok(Frame::Ping { .. })), "{ping:?}");
    let start = silent_reader.next_within(&mut silent, WAIT, "start").await;
    let Ok(Frame::Start { conn, .. }) = start else {
        panic!("no start: {start:?}");
    };
    let mut rest = silent_reader.into_leftover();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut rest))
        .await
        .expect("the relay gives up on the silent connection")
        .unwrap();
    assert_eq!(rest, b"GET 0\n");
    wait_until("the failure to be counted", || {
        metric(
            &relay.metrics_text(),
            "switchboard_tunnel_handoff_failures_total",
            "no_answer",
        ) == 1.0
    })
    .await;

    // The next pooled connection gets the same client, bytes and FIN included.
    let (mut live, mut live_reader, _) = raw_agent(&relay, "raw", Role::Data, session).await;
    let Frame::Start { conn: again, .. } = next_event(&mut live, &mut live_reader).await else {
        panic!("no start on the live connection");
    };
    assert_eq!(again, conn);
    let mut bytes = live_reader.into_leftover();
    write_frame(&mut live, &Frame::Started { conn })
        .await
        .unwrap();
    live.write_all(b"got 0\n").await.unwrap();
    live.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, live.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bytes, b"GET 0\n");
    let answer = read_until_closed(&mut client, WAIT).await.unwrap();
    assert_eq!(answer, b"got 0\n");
}
