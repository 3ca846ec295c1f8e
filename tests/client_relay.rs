//! Proves the `RelayClient` actor against the real Switchboard relay: it
//! registers and reports it, relays descriptions between two clients, reports
//! the relay's error echo, rejects bad URLs, times out on a silent server,
//! reconnects after the relay restarts on the same port, stops for good on
//! 4001/4002/4004 and HTTP 401, speaks `wss://` with a custom CA or without
//! verification (and fails without either), answers pings, skips undecodable
//! frames, shuts down cleanly, backs off (growing while the relay is down,
//! starting over after a stable registration) and bounds its send queue.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use actix::prelude::*;
use common::forwarder::Forwarder;
use common::relay_client::{config, start, status_until};
use common::*;
use futures_util::{SinkExt, StreamExt};
use switchboard::client::relay_client::{
    GetStatus, RelayClient, RelayClientConfig, RelayClientError, RelayEvent, Shutdown,
};
use switchboard::protocol::DescriptionType;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[actix_rt::test]
async fn registers_and_reports_status() {
    let relay = TestRelay::start(test_settings());
    let mut a = start(config(&relay.url, "peer-A"));
    a.registered().await;
    wait_clients(relay.admin, |json| lists(json, &a.uuid.to_string())).await;
    let status = a.addr.send(GetStatus).await.unwrap();
    assert!(status.connected && status.registered, "{status:?}");
    assert_eq!((status.attempts, status.registrations), (1, 1));
    assert_eq!(status.last_error, None);

    // Defaults: the host name and a random UUID.
    let mut anonymous = start(RelayClientConfig::new(&relay.url));
    let host = hostname::get().unwrap().to_string_lossy().into_owned();
    assert_eq!(anonymous.name, host);
    assert_ne!(anonymous.uuid, a.uuid);
    anonymous.registered().await;
}

#[actix_rt::test]
async fn two_clients_exchange_descriptions() {
    let relay = TestRelay::start(test_settings());
    let mut a = start(config(&relay.url, "peer-A"));
    let mut b = start(config(&relay.url, "peer-B"));
    a.registered().await;
    b.registered().await;

    let offer = a.description(b.uuid, DescriptionType::Offer);
    a.send(offer.clone()).await.unwrap();
    match b.next().await {
        RelayEvent::Peer(pc) => assert_eq!(pc, offer),
        other => panic!("expected the offer, got {other:?}"),
    }
    let answer = b.description(a.uuid, DescriptionType::Answer);
    b.send(answer.clone()).await.unwrap();
    match a.next().await {
        RelayEvent::Peer(pc) => assert_eq!(pc, answer),
        other => panic!("expected the answer, got {other:?}"),
    }
}

#[actix_rt::test]
async fn unknown_peer_gets_the_relays_error_echo() {
    let relay = TestRelay::start(test_settings());
    let mut a = start(config(&relay.url, "peer-A"));
    a.registered().await;
    let nobody = Uuid::new_v4();
    let offer = a.description(nobody, DescriptionType::Offer);
    a.send(offer.clone()).await.unwrap();
    match a.next().await {
        RelayEvent::Peer(pc) => {
            assert_eq!((pc.source_uuid, pc.peer_uuid), (a.uuid, nobody));
            let error = pc.error.expect("an error echo");
            assert!(error.contains(&nobody.to_string()), "{error}");
        }
        other => panic!("expected the error echo, got {other:?}"),
    }
    // The session goes on.
    assert!(a.addr.send(GetStatus).await.unwrap().registered);
}

#[actix_rt::test]
async fn invalid_configuration_is_a_typed_error() {
    let (tx, _events) = mpsc::unbounded_channel();
    let collector = Forwarder(tx).start().recipient();
    for url in [
        "http://127.0.0.1:1",
        "https://x",
        "garbage",
        "",
        "ws://",
        "127.0.0.1:80",
    ] {
        let result = RelayClient::new(RelayClientConfig::new(url), collector.clone());
        assert!(
            matches!(result, Err(RelayClientError::InvalidUrl { .. })),
            "{url}: {:?}",
            result.err()
        );
    }
    let mut bad_header = RelayClientConfig::new("ws://127.0.0.1:1");
    bad_header.headers.push(("Bad Name".into(), "x".into()));
    let result = RelayClient::new(bad_header, collector.clone());
    assert!(matches!(
        result,
        Err(RelayClientError::InvalidHeader { .. })
    ));
    let mut bad_ca = RelayClientConfig::new("wss://127.0.0.1:1");
    bad_ca.tls.ca_file = Some("/nonexistent/ca.pem".into());
    let result = RelayClient::new(bad_ca, collector);
    assert!(matches!(result, Err(RelayClientError::Tls(_))));
}

#[actix_rt::test]
async fn a_silent_server_times_out_and_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    // Accept and hold connections without ever answering.
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(2) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut cfg = config(&url, "peer-A");
    cfg.connect_timeout = Duration::from_millis(200);
    let mut a = start(cfg);
    match a.next().await {
        RelayEvent::Disconnected { code, reason, .. } => {
            assert_eq!(code, None);
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let status = a.addr.send(GetStatus).await.unwrap();
    assert_eq!(status.last_error, Some(RelayClientError::Timeout));
    assert!(!status.registered);
    assert!(matches!(
        a.send(a.description(Uuid::new_v4(), DescriptionType::Offer))
            .await,
        Err(RelayClientError::NotConnected)
    ));
    a.addr.send(Shutdown).await.unwrap();
    a.stops().await;
    drop(held);
}

#[actix_rt::test]
async fn reconnects_and_registers_again_after_a_relay_restart() {
    let mut relay = TestRelay::start(test_settings());
    let addr = relay.addr;
    let mut a = start(config(&relay.url, "peer-A"));
    a.registered().await;
    relay.stop();
    match a.next().await {
        RelayEvent::Disconnected { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // A few refused attempts while the relay is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!a.addr.send(GetStatus).await.unwrap().registered);
    let relay = TestRelay::start_at(test_settings(), addr);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never re-registered"
        );
        match a.next().await {
            RelayEvent::Disconnected { code: None, .. } => continue,
            RelayEvent::Registered { uuid, .. } => {
                assert_eq!(uuid, a.uuid);
                break;
            }
            other => panic!("expected Registered, got {other:?}"),
        }
    }
    wait_clients(relay.admin, |json| lists(json, &a.uuid.to_string())).await;
    let status = a.addr.send(GetStatus).await.unwrap();
    assert_eq!(status.registrations, 2);
    assert!(status.attempts >= 3, "{status:?}");
}

#[actix_rt::test]
async fn takeover_of_the_uuid_is_fatal_for_the_old_client() {
    let relay = TestRelay::start(test_settings());
    let first_config = config(&relay.url, "first");
    let mut second_config = config(&relay.url, "second");
    second_config.uuid = first_config.uuid;
    let mut first = start(first_config);
    first.registered().await;
    let mut second = start(second_config);
    second.registered().await;
    match first.failed().await {
        RelayClientError::Rejected { code, reason } => {
            assert_eq!(code, 4004);
            assert!(reason.starts_with("Relay received a registration with the same ID"));
        }
        other => panic!("expected Rejected 4004, got {other:?}"),
    }
    first.stops().await;
    first.quiet_for(Duration::from_millis(500)).await;
    let status = second.addr.send(GetStatus).await.unwrap();
    assert!(status.registered && status.registrations == 1, "{status:?}");
}

#[actix_rt::test]
async fn token_auth_sends_headers_and_rejections_are_fatal() {
    let relay = TestRelay::start(token_settings());
    let mut good = config(&relay.url, "alice");
    good.headers
        .push(("Authorization".into(), "Bearer alice-token".into()));
    start(good).registered().await;

    let mut missing = start(config(&relay.url, "nobody"));
    match missing.failed().await {
        RelayClientError::Rejected { code, .. } => assert_eq!(code, 4001),
        other => panic!("expected Rejected 4001, got {other:?}"),
    }
    let mut wrong_cfg = config(&relay.url, "mallory");
    wrong_cfg
        .headers
        .push(("Authorization".into(), "Bearer mallory-token".into()));
    let mut wrong = start(wrong_cfg);
    match wrong.failed().await {
        RelayClientError::Rejected { code, .. } => assert_eq!(code, 4002),
        other => panic!("expected Rejected 4002, got {other:?}"),
    }
    missing.stops().await;
    wrong.stops().await;
    missing.quiet_for(Duration::from_millis(300)).await;
}

#[actix_rt::test]
async fn wss_with_a_custom_ca_or_without_verification() {
    let pem = self_signed();
    let relay = TestRelay::start(tls_settings(&pem));
    assert!(relay.url.starts_with("wss://"));

    let mut trusted = config(&relay.url, "trusted");
    trusted.tls.ca_file = Some(pem.cert.path().to_path_buf());
    start(trusted).registered().await;

    let mut insecure = config(&relay.url, "insecure");
    insecure.tls.insecure_skip_verify = true;
    start(insecure).registered().await;

    // The webpki roots do not know the test CA; neither does another CA.
    let other = self_signed();
    let mut wrong_ca = config(&relay.url, "wrong-ca");
    wrong_ca.tls.ca_file = Some(other.cert.path().to_path_buf());
    for cfg in [config(&relay.url, "default-roots"), wrong_ca] {
        let mut client = start(cfg);
        match client.next().await {
            RelayEvent::Disconnected { code, reason, .. } => {
                assert_eq!(code, None);
                assert!(reason.contains("certificate"), "{reason}");
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
        let status = client.addr.send(GetStatus).await.unwrap();
        assert!(matches!(status.last_error, Some(RelayClientError::Tls(_))));
        assert_eq!(status.registrations, 0);
        client.addr.send(Shutdown).await.unwrap();
        client.stops().await;
    }
}

#[actix_rt::test]
async fn answers_pings_and_stays_registered() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval_ms = 100;
    settings.server.heartbeat_timeout_ms = 400;
    let relay = TestRelay::start(settings);
    let mut a = start(config(&relay.url, "peer-A"));
    a.registered().await;
    a.quiet_for(Duration::from_millis(1_500)).await;
    let status = a.addr.send(GetStatus).await.unwrap();
    assert!(status.registered && status.attempts == 1, "{status:?}");
}

#[actix_rt::test]
async fn shutdown_closes_and_does_not_reconnect() {
    let relay = TestRelay::start(test_settings());
    let mut a = start(config(&relay.url, "peer-A"));
    a.registered().await;
    let id = a.uuid.to_string();
    wait_clients(relay.admin, |json| lists(json, &id)).await;
    a.addr.send(Shutdown).await.unwrap();
    a.stops().await;
    wait_clients(relay.admin, |json| !lists(json, &id)).await;
    a.quiet_for(Duration::from_millis(300)).await;
}

/// A scripted WebSocket server: undecodable and binary frames are skipped.
#[actix_rt::test]
async fn undecodable_frames_are_skipped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let registration = ws.next().await.unwrap().unwrap();
        assert!(registration
            .to_text()
            .unwrap()
            .contains("relay_registration"));
        for frame in ["not json", "[1, 2]", r#"{"message_type": "nope"}"#] {
            ws.send(Message::text(frame)).await.unwrap();
        }
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        ws.send(Message::text(SUCCESS)).await.unwrap();
        // Keep the socket open until the test ends.
        let _ = tokio::time::timeout(WAIT, ws.next()).await;
    });
    let mut a = start(config(&url, "peer-A"));
    a.registered().await;
    a.addr.send(Shutdown).await.unwrap();
    a.stops().await;
    let _ = tokio::time::timeout(WAIT, server).await;
}

/// A server refusing the upgrade with HTTP 401 is a fatal rejection.
#[actix_rt::test]
async fn http_401_at_the_upgrade_is_fatal() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            .await;
        let _ = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
    });
    let mut a = start(config(&url, "peer-A"));
    match a.failed().await {
        RelayClientError::Rejected { code, reason } => {
            assert_eq!(code, 4001);
            assert!(reason.contains("401"), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    a.stops().await;
    let _ = tokio::time::timeout(WAIT, server).await;
}

#[actix_rt::test]
async fn backoff_grows_while_down_and_resets_after_a_stable_registration() {
    let refusing = common::refusing::Refusing::new();
    let addr = refusing.addr();
    let url = format!("ws://{addr}");
    let mut stable_cfg = config(&url, "stable");
    stable_cfg.backoff.stable_after = Duration::from_millis(300);
    let mut unstable_cfg = config(&url, "unstable");
    unstable_cfg.backoff.stable_after = Duration::from_secs(60);
    let mut stable = start(stable_cfg);
    let mut unstable = start(unstable_cfg);
    // Nothing listens yet: attempts fail and the delays grow, capped at `max`.
    status_until(&stable, |s| s.retries >= 3).await;
    status_until(&unstable, |s| s.retries >= 3).await;
    drop(refusing);
    let mut relay = TestRelay::start_at(test_settings(), addr);
    for client in [&mut stable, &mut unstable] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            match client.next().await {
                RelayEvent::Disconnected { retry_in, .. } => {
                    assert!(retry_in <= Duration::from_millis(400), "{retry_in:?}");
                }
                RelayEvent::Registered { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop();
    for client in [&mut stable, &mut unstable] {
        match client.next().await {
            RelayEvent::Disconnected { code, .. } => assert_eq!(code, Some(1001)),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    // Registered for longer than stable_after: the sequence started over.
    let stable_retries = stable.addr.send(GetStatus).await.unwrap().retries;
    let unstable_retries = unstable.addr.send(GetStatus).await.unwrap().retries;
    assert!(stable_retries <= 2, "{stable_retries}");
    assert!(unstable_retries >= 4, "{unstable_retries}");
}

/// A scripted relay that registers the client and then never reads: the
/// bounded send queue fills and sends fail with `QueueFull` instead of buffering.
#[actix_rt::test]
async fn a_relay_that_stops_reading_fills_the_queue() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _registration = ws.next().await.unwrap().unwrap();
        ws.send(Message::text(SUCCESS)).await.unwrap();
        let _ = tokio::time::timeout(WAIT, done_rx).await;
    });
    let mut a = start(config(&url, "peer-A"));
    a.registered().await;
    let mut pc = a.description(Uuid::new_v4(), DescriptionType::Offer);
    pc.description = "x".repeat(256 * 1024);
    let mut full = false;
    for _ in 0..400 {
        match a.send(pc.clone()).await {
            Ok(()) => tokio::task::yield_now().await,
            Err(RelayClientError::QueueFull) => {
                full = true;
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(full, "400 frames of 256 KiB never filled the queue");
    assert!(a.addr.send(GetStatus).await.unwrap().registered);
    let _ = done_tx.send(());
    let _ = tokio::time::timeout(WAIT, server).await;
    a.addr.send(Shutdown).await.unwrap();
    a.stops().await;
}
