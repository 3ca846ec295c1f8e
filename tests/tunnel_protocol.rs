//! Proves the tunnel's wire protocol from the agent's side with a hand-made
//! agent speaking raw frames: the handshake, `Start` with the client's
//! address and the public address it connected to on the pooled
//! connection, `Started` opening the way back, and the control channel's
//! `ConnectionOpen` (with the client's address) and `ConnectionDrop`
//! announcements, plus answered heartbeats.

mod tunnel_common;

use switchboard::protocol::tunnel::{Frame, Role};
use switchboard::tunnel::framing::{write_frame, FrameReader};
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
    let mut got = data_reader.into_leftover();
    while got.len() < 5 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, data.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "relay closed the data connection");
        got.extend_from_slice(&buf[..n]);
    }
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
