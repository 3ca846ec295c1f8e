//! Proves the host agent's side of a hand-off with a hand-made relay: a
//! heartbeat that arrives with `Start` is answered by `Started` alone (no
//! `Pong` first), which rides with the service's first bytes; when dialling
//! the service takes longer than the grace, the agent answers the heartbeat
//! with a `Pong` meanwhile, so the relay never takes it for dead.

mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::defaults;
use switchboard::protocol::tunnel::{self, Frame, Role};
use switchboard::tunnel::agent::{self, LocalService};
use switchboard::tunnel::framing::{write_frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tunnel_common::*;

const SESSION: u64 = 7;

/// Accepts one agent connection on `listener` and answers its handshake
/// without checking the proof; returns it with its role.
async fn accept_agent(listener: &TcpListener) -> (TcpStream, FrameReader, Role) {
    let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("an agent connection")
        .unwrap();
    let mut reader = FrameReader::new();
    let Frame::Hello { role, .. } = reader
        .next_within(&mut stream, WAIT, "hello")
        .await
        .unwrap()
    else {
        panic!("no hello");
    };
    let nonce = [1u8; tunnel::NONCE_BYTES];
    write_frame(&mut stream, &Frame::Challenge { nonce })
        .await
        .unwrap();
    let Frame::Proof { .. } = reader
        .next_within(&mut stream, WAIT, "proof")
        .await
        .unwrap()
    else {
        panic!("no proof");
    };
    let accepted = Frame::Accepted { session: SESSION };
    write_frame(&mut stream, &accepted).await.unwrap();
    (stream, reader, role)
}

/// A hand-made relay with an agent (pool 1) serving `local`: returns the
/// agent, its pooled connection and the control channel's task.
async fn relay_with_agent(local: SocketAddr) -> (agent::AgentHandle, TcpStream, FrameReader) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap().to_string();
    let handle = agent::spawn(agent_settings(
        &relay,
        "svc",
        LocalService::Addr(local.to_string()),
        1,
    ));
    let (mut control, mut control_reader, role) = accept_agent(&listener).await;
    assert_eq!(role, Role::Control);
    // Keep the control channel alive: answer its heartbeats.
    tokio::spawn(async move {
        while let Ok(frame) = control_reader.next(&mut control).await {
            if let Frame::Ping { seq } = frame {
                let _ = write_frame(&mut control, &Frame::Pong { seq }).await;
            }
        }
    });
    let (data, data_reader, role) = accept_agent(&listener).await;
    assert_eq!(role, Role::Data);
    (handle, data, data_reader)
}

/// Writes a heartbeat, `Start` and `early` in one write, as the relay does.
async fn start(data: &mut TcpStream, seq: u64, conn: u64, early: &[u8]) {
    let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut first = tunnel::encode(&Frame::Ping { seq });
    first.extend(tunnel::encode(&Frame::Start {
        conn,
        client: addr,
        server: addr,
    }));
    first.extend_from_slice(early);
    data.write_all(&first).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_answers_the_heartbeat_that_came_with_start() {
    let local = echo_server().await;
    let (handle, mut data, mut reader) = relay_with_agent(local).await;
    start(&mut data, 41, 9, b"ping me").await;
    let first = reader
        .next_within(&mut data, WAIT, "the answer")
        .await
        .unwrap();
    assert_eq!(first, Frame::Started { conn: 9 }, "no Pong before it");
    // The echoed bytes came with it (or right after), and nothing else.
    let echoed = read_at_least(&mut data, reader.into_leftover(), 7).await;
    assert_eq!(echoed, b"ping me");
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_dial_gets_the_heartbeat_answered_meanwhile() {
    // A listener whose accept queue is full: a further connection attempt
    // waits (its SYN is dropped and retried a second later).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let local = socket.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(local).unwrap();
    let (handle, mut data, mut reader) = relay_with_agent(local).await;
    let sent = Instant::now();
    start(&mut data, 42, 10, b"").await;
    let first = reader
        .next_within(&mut data, WAIT, "the answer")
        .await
        .unwrap();
    let waited = sent.elapsed();
    assert_eq!(first, Frame::Pong { seq: 42 });
    assert!(
        waited >= Duration::from_millis(defaults::AGENT_PONG_GRACE_MS),
        "answered after {waited:?}: the dial was not slow"
    );
    assert!(waited < Duration::from_millis(defaults::TUNNEL_HANDOFF_TIMEOUT_MS));
    handle.stop().await.unwrap();
}
