//! Proves every bad input on the tunnel gets a clear refusal and never
//! disturbs service: wrong or missing token (an error on both sides),
//! unknown service (named; the agent keeps retrying it), garbage, truncated and oversized frames on the agents'
//! listener and on a pooled connection, a data connection that never
//! finishes its handshake, a data connection naming no session, and a silent
//! agent whose control channel and pool are evicted by heartbeat.

mod tunnel_common;

use std::time::{Duration, Instant};

use switchboard::protocol::tunnel::{self, ErrorCode, Frame, Role};
use switchboard::tunnel::agent::{self, AgentError, LocalService};
use switchboard::tunnel::framing::{write_frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tunnel_common::*;

async fn raw(relay: &Relay) -> TcpStream {
    TcpStream::connect(relay.tunnel.agents_addr())
        .await
        .unwrap()
}

/// The next frame, or None when the relay closed the connection.
async fn next(stream: &mut TcpStream, reader: &mut FrameReader) -> Option<Frame> {
    reader.next_within(stream, WAIT, "relay frame").await.ok()
}

async fn expect_error(stream: &mut TcpStream, code: ErrorCode) -> String {
    let mut reader = FrameReader::new();
    match next(stream, &mut reader).await {
        Some(Frame::Error { code: got, reason }) if got == code => {
            assert!(
                next(stream, &mut reader).await.is_none(),
                "relay kept the connection open"
            );
            reason
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// Proves the relay still serves: an agent fills a pool and a client echoes.
async fn assert_still_serving(relay: &Relay, service: &str) {
    let agent = agent(relay, service, LocalService::Echo, 2).await;
    assert_eq!(
        exchange(relay.service(service), b"still here").await,
        b"still here"
    );
    agent.stop().await.unwrap();
}

fn hello(role: Role, service: &str, session: u64) -> Frame {
    Frame::Hello {
        role,
        service: service.into(),
        session,
        transport: switchboard::protocol::tunnel::Transport::Tcp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_a_clear_error_on_both_sides() {
    let relay = Relay::start(settings(&["svc", "other"]));
    let mut s = agent_settings(&relay.agents(), "svc", LocalService::Echo, 2);
    // The token of another service grants nothing here.
    s.token = token("other");
    let result = tokio::time::timeout(WAIT, agent::spawn(s).join())
        .await
        .unwrap();
    match result {
        Err(AgentError::Rejected { code, reason }) => {
            assert_eq!(code, ErrorCode::AuthFailed);
            assert!(reason.contains("authentication failed"), "{reason}");
            assert!(reason.contains("svc"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let text = relay.metrics_text();
    assert_eq!(
        metric(&text, "switchboard_tunnel_auth_failures_total", ""),
        1.0
    );
    assert_eq!(relay.idle("svc"), 0);
    assert_still_serving(&relay, "svc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_proof_is_refused() {
    let relay = Relay::start(settings(&["svc"]));
    let mut stream = raw(&relay).await;
    let mut reader = FrameReader::new();
    write_frame(&mut stream, &hello(Role::Control, "svc", 0))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut stream, &mut reader).await,
        Some(Frame::Challenge { .. })
    ));
    write_frame(&mut stream, &Frame::Proof { mac: [0; 32] })
        .await
        .unwrap();
    let reason = expect_error(&mut stream, ErrorCode::AuthFailed).await;
    assert!(reason.contains("wrong token"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_refused_by_name_and_retried_by_the_agent() {
    let relay = Relay::start(settings(&["svc"]));
    let mut stream = raw(&relay).await;
    write_frame(&mut stream, &hello(Role::Control, "nope", 0))
        .await
        .unwrap();
    let reason = expect_error(&mut stream, ErrorCode::UnknownService).await;
    assert!(reason.contains("nope"), "{reason}");
    // The agent does not give up: the relay's services may be reloaded.
    let mut s = agent_settings(&relay.agents(), "nope", LocalService::Echo, 1);
    s.token = token("svc");
    s.backoff_min = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(100);
    let agent = agent::spawn(s);
    let deadline = Instant::now() + WAIT;
    while metric(
        &relay.metrics_text(),
        "switchboard_tunnel_auth_failures_total",
        "",
    ) < 4.0
    {
        assert!(Instant::now() < deadline, "the agent stopped retrying");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!agent
        .stats
        .connected
        .load(std::sync::atomic::Ordering::Acquire));
    let stopped = tokio::time::timeout(WAIT, agent.stop()).await.unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    assert_still_serving(&relay, "svc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_agents_listener_is_refused() {
    let relay = Relay::start(settings(&["svc"]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("empty frame", vec![0, 0]),
        ("unknown kind", vec![0, 1, 200]),
        ("bad magic", vec![0, 7, 1, b'X', b'X', b'X', b'X', 1, 1]),
        ("oversized", vec![0xff, 0xff, 1, 2, 3]),
        ("just past the limit", {
            let len = (tunnel::MAX_FRAME_BYTES + 1) as u16;
            len.to_be_bytes().to_vec()
        }),
        (
            "proof first",
            tunnel::encode(&Frame::Proof { mac: [1; 32] }),
        ),
        (
            "random bytes",
            (0..200u32).map(|i| (i * 97 % 256) as u8).collect(),
        ),
    ];
    for (name, bytes) in cases {
        let mut stream = raw(&relay).await;
        stream.write_all(&bytes).await.unwrap();
        let reason = expect_error(&mut stream, ErrorCode::Protocol).await;
        eprintln!("{name}: {reason}");
    }
    assert_still_serving(&relay, "svc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_slow_handshakes_time_out() {
    let relay = Relay::start(settings(&["svc"]));
    // Nothing at all; half a length prefix; a hello cut short.
    let hello_bytes = tunnel::encode(&hello(Role::Control, "svc", 0));
    for bytes in [
        Vec::new(),
        vec![0],
        hello_bytes[..hello_bytes.len() - 2].to_vec(),
    ] {
        let started = Instant::now();
        let mut stream = raw(&relay).await;
        stream.write_all(&bytes).await.unwrap();
        let reason = expect_error(&mut stream, ErrorCode::Protocol).await;
        assert!(reason.contains("timed out"), "{reason}");
        assert!(started.elapsed() >= Duration::from_millis(400), "too early");
    }
    // A data connection that gets its challenge but never proves anything.
    let agent = agent(&relay, "svc", LocalService::Echo, 1).await;
    let session = session_of(&relay, "svc");
    let mut stream = raw(&relay).await;
    let mut reader = FrameReader::new();
    write_frame(&mut stream, &hello(Role::Data, "svc", session))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut stream, &mut reader).await,
        Some(Frame::Challenge { .. })
    ));
    match next(&mut stream, &mut reader).await {
        Some(Frame::Error {
            code: ErrorCode::Protocol,
            reason,
        }) => assert!(reason.contains("timed out")),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert_eq!(
        relay.idle("svc"),
        1,
        "the half-open data connection never joined the pool"
    );
    agent.stop().await.unwrap();
}

fn session_of(relay: &Relay, service: &str) -> u64 {
    relay.status(service)["agents"][0]["session"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_connection_for_no_session_is_refused() {
    let relay = Relay::start(settings(&["svc"]));
    let mut stream = raw(&relay).await;
    write_frame(&mut stream, &hello(Role::Data, "svc", 999_999))
        .await
        .unwrap();
    let reason = expect_error(&mut stream, ErrorCode::UnknownSession).await;
    assert!(reason.contains("999999"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_pooled_connection_evicts_it() {
    let relay = Relay::start(settings(&["svc"]));
    let agent = agent(&relay, "svc", LocalService::Echo, 1).await;
    let session = session_of(&relay, "svc");
    // A hand-made pooled connection, authenticated with the real token.
    let mut stream = raw(&relay).await;
    let mut reader = FrameReader::new();
    write_frame(&mut stream, &hello(Role::Data, "svc", session))
        .await
        .unwrap();
    let Some(Frame::Challenge { nonce }) = next(&mut stream, &mut reader).await else {
        panic!("no challenge");
    };
    let token = token("svc");
    let mac = tunnel::proof(
        token.expose().as_bytes(),
        Role::Data,
        "svc",
        session,
        &nonce,
    );
    write_frame(&mut stream, &Frame::Proof { mac })
        .await
        .unwrap();
    assert_eq!(
        next(&mut stream, &mut reader).await,
        Some(Frame::Accepted { session })
    );
    wait_until("the pool to hold both", || relay.idle("svc") == 2).await;
    stream.write_all(&[0xff, 0xff, 0, 0]).await.unwrap();
    wait_until("the garbage connection to be evicted", || {
        relay.idle("svc") == 1
    })
    .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
    )
    .await;
    assert_eq!(exchange(relay.service("svc"), b"ok").await, b"ok");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_evicted_with_its_pool() {
    let relay = Relay::start(settings(&["svc"]));
    // Authenticate a control channel and one pooled connection, then say nothing more.
    let mut control = raw(&relay).await;
    let mut reader = FrameReader::new();
    write_frame(&mut control, &hello(Role::Control, "svc", 0))
        .await
        .unwrap();
    let Some(Frame::Challenge { nonce }) = next(&mut control, &mut reader).await else {
        panic!("no challenge");
    };
    let token = token("svc");
    let mac = tunnel::proof(token.expose().as_bytes(), Role::Control, "svc", 0, &nonce);
    write_frame(&mut control, &Frame::Proof { mac })
        .await
        .unwrap();
    let Some(Frame::Accepted { session }) = next(&mut control, &mut reader).await else {
        panic!("not accepted");
    };
    let mut data = raw(&relay).await;
    let mut data_reader = FrameReader::new();
    write_frame(&mut data, &hello(Role::Data, "svc", session))
        .await
        .unwrap();
    let Some(Frame::Challenge { nonce }) = next(&mut data, &mut data_reader).await else {
        panic!("no challenge");
    };
    let mac = tunnel::proof(
        token.expose().as_bytes(),
        Role::Data,
        "svc",
        session,
        &nonce,
    );
    write_frame(&mut data, &Frame::Proof { mac }).await.unwrap();
    wait_until("the silent pool entry", || relay.idle("svc") == 1).await;
    assert_eq!(relay.status("svc")["agents"].as_array().unwrap().len(), 1);
    // Heartbeat timeout is 1 s: both are gone soon after, unanswered pings and all.
    wait_until("the silent agent to be evicted", || {
        relay.idle("svc") == 0 && relay.status("svc")["agents"].as_array().unwrap().is_empty()
    })
    .await;
    let mut seen_ping = false;
    while let Some(frame) = next(&mut control, &mut reader).await {
        seen_ping |= matches!(frame, Frame::Ping { .. });
    }
    assert!(seen_ping, "the relay never pinged the silent agent");
    assert_still_serving(&relay, "svc").await;
}
