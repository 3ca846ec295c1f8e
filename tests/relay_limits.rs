//! Proves the relay's limits hold against real clients: max_clients refuses
//! extra upgrades with 503, a client that never reads is disconnected as a
//! slow consumer (counted in /metrics) without hurting others, and a silent
//! connection is dropped by the heartbeat and unregistered, a client that
//! never reads again loses its connection, and a tiny outbound queue still
//! takes one turn's burst of answers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn max_clients_refuses_extra_upgrades() {
    let mut settings = test_settings();
    settings.server.max_clients = 2;
    let relay = TestRelay::start(settings);
    let _a = client(&relay.url, "a", UUID_A).await;
    let _b = client(&relay.url, "b", UUID_B).await;
    let refused = tokio_tungstenite::connect_async(relay.url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503)
        }
        other => panic!("third client should get HTTP 503, got {other:?}"),
    }
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_rejected_max_clients_total 1"),
        "{metrics}"
    );
    // A slot frees when a client leaves.
    drop(_a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio_tungstenite::connect_async(relay.url.as_str())
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_others_keep_working() {
    let mut settings = test_settings();
    settings.server.outbound_queue = 64;
    let relay = TestRelay::start(settings);
    // The slow client registers, then never reads again.
    let slow = client(&relay.url, "slow", UUID_B).await;
    let flooder = client(&relay.url, "flooder", UUID_A).await;
    // The flooder reads everything it is sent (it is not slow) on its own task.
    let (mut sink, mut stream) = flooder.split();
    let (echo_tx, mut echo_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                if text.contains("is not registered this relay server") {
                    let _ = echo_tx.send(());
                }
            }
        }
    });
    let frame = offer(UUID_A, UUID_B, "offer").replace("v=0", &"z".repeat(16 * 1024));
    // Bounded flood: at most 20 000 frames (~330 MB) or until the relay has
    // dropped the slow client, which /clients shows.
    let mut dropped = false;
    for i in 0..20_000 {
        sink.send(Message::text(frame.clone())).await.unwrap();
        if i % 20 == 19 {
            let (_, body) = http_get(relay.admin, "/clients", None).await;
            if !body.contains(UUID_B) {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "slow consumer was never disconnected");
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_slow_consumer_disconnects_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_closes_total{code=\"1008\"} 1"),
        "{metrics}"
    );
    drop(slow);
    // The flooder's next frame to B is echoed as an unknown-peer error,
    // proving its own session survived.
    sink.send(Message::text(offer(UUID_A, UUID_B, "offer")))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, echo_rx.recv())
        .await
        .expect("flooder got no error echo")
        .expect("flooder's socket closed");
    reader.abort();
    assert_still_serving(&relay.url).await;
}

#[tokio::test]
async fn silent_connection_is_dropped_by_heartbeat() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval_ms = 100;
    settings.server.heartbeat_timeout_ms = 400;
    let relay = TestRelay::start(settings);
    // Registers, then stops reading: tungstenite answers pings only while it
    // is polled, so the relay sees silence.
    let silent = client(&relay.url, "silent", UUID_A).await;
    wait_clients(relay.admin, |j| lists(j, UUID_A)).await;
    wait_clients(relay.admin, |j| !lists(j, UUID_A)).await;
    let (_, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert!(
        metrics.contains("switchboard_heartbeat_timeouts_total 1"),
        "{metrics}"
    );
    drop(silent);
    assert_still_serving(&relay.url).await;
}

#[tokio::test]
async fn a_client_answering_pings_survives_the_heartbeat() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval_ms = 100;
    settings.server.heartbeat_timeout_ms = 400;
    let relay = TestRelay::start(settings);
    let mut alive = client(&relay.url, "alive", UUID_A).await;
    // Keep polling (which answers pings) for well past the timeout.
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(50), alive.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 5, "expected pings every 100 ms, got {pings}");
    let json = wait_clients(relay.admin, |_| true).await;
    assert!(lists(&json, UUID_A), "live client was dropped: {json}");
}

/// A client that stops reading for good is not held forever: once nothing
/// sent to it has been acknowledged for the heartbeat timeout (its window
/// stays at zero), the kernel aborts the connection (TCP_USER_TIMEOUT on the
/// listener), so the frames buffered for it are freed too. The relay had
/// already closed the session; without the abort the connection stayed open
/// for as long as the client kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_loses_its_connection() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval_ms = 200;
    settings.server.heartbeat_timeout_ms = 1_000;
    settings.server.outbound_queue = 64;
    let relay = TestRelay::start(settings);
    // A small receive buffer, set before connecting so the window stays small.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(relay.addr).await.unwrap();
    let mut stuck = raw_ws::upgrade(tcp, &relay).await;
    stuck
        .write_all(&raw_ws::text_frame(&registration("stuck", UUID_B)))
        .await
        .unwrap();
    wait_clients(relay.admin, |j| lists(j, UUID_B)).await;
    // From here on `stuck` reads nothing. A flooder fills its buffers.
    let flooder = client(&relay.url, "flooder", UUID_A).await;
    let (mut sink, mut stream) = flooder.split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let frame = offer(UUID_A, UUID_B, "offer").replace("v=0", &"z".repeat(16 * 1024));
    for _ in 0..200 {
        sink.send(Message::text(frame.clone())).await.unwrap();
    }
    // The session is gone first (slow consumer or heartbeat) ...
    wait_clients(relay.admin, |j| !lists(j, UUID_B)).await;
    // ... then the connection: a frame from `stuck` is answered with a reset
    // once the relay's side is aborted. Bounded: 60 tries, 200 ms apart.
    let ping = raw_ws::frame(0x9, b"still there?");
    let mut reset = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stuck.write_all(&ping).await.is_err() || stuck.take_error().unwrap().is_some() {
            reset = true;
            break;
        }
    }
    assert!(
        reset,
        "the relay kept the connection of a client that never reads"
    );
    reader.abort();
    assert_still_serving(&relay.url).await;
}

/// `outbound_queue` below 16 acts as 16: a client that reads at once is not
/// called slow because one turn of its session answered a burst.
#[tokio::test]
async fn a_tiny_outbound_queue_still_takes_a_burst_of_answers() {
    let mut settings = test_settings();
    settings.server.outbound_queue = 4;
    let relay = TestRelay::start(settings);
    let mut ws = client(&relay.url, "burst", UUID_A).await;
    // Twelve forwards to a peer nobody registered, written at once: twelve
    // error echoes, answered by the session in one turn.
    for _ in 0..12 {
        ws.feed(Message::text(offer(UUID_A, UUID_B, "offer")))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..12 {
        let echo = recv_text(&mut ws).await;
        assert!(
            echo.contains("is not registered this relay server"),
            "echo {i}: {echo}"
        );
    }
    // Still open: our close is answered with the same code, not 1008.
    ws.send(Message::Close(None)).await.unwrap();
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(
        code, 1000,
        "the answer to our close, not a slow-consumer close"
    );
}
