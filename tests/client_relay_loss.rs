//! Proves that the `RelayClient` handles the abrupt loss of its relay (the
//! relay process killed: the TCP connection ends with a FIN or a RST and no
//! WebSocket close frame) exactly once: one `Disconnected`, one step of
//! backoff, one reconnection and one registration, never a second connection
//! of its own that would take its UUID over.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::forwarder::Forwarder;
use common::relay_client::next;
use common::{SUCCESS, WAIT};
use futures_util::{SinkExt, StreamExt};
use switchboard::client::relay_client::{GetStatus, RelayClient, RelayClientConfig, RelayEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// A scripted relay: registers every client; drops the first connection right
/// after registering it (with a RST when `reset`, else a FIN), keeps the others.
/// Returns its URL and the count of connections accepted.
async fn vanishing_relay(reset: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Ok((stream, _))) = tokio::time::timeout(WAIT, listener.accept()).await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            if first && reset {
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let _registration = ws.next().await.unwrap().unwrap();
            ws.send(Message::text(SUCCESS)).await.unwrap();
            if first {
                // Let the client see the registration, then vanish without a close frame.
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(ws);
            } else {
                held.push(ws);
            }
        }
    });
    (url, accepted)
}

async fn one_loss_is_handled_once(reset: bool) {
    let (url, accepted) = vanishing_relay(reset).await;
    let mut config = RelayClientConfig::new(url);
    config.uuid = Some(Uuid::new_v4());
    config.backoff.initial = Duration::from_millis(200);
    config.backoff.max = Duration::from_millis(400);
    let (tx, mut events) = mpsc::unbounded_channel();
    let client = RelayClient::new(config, Forwarder(tx).start().recipient())
        .unwrap()
        .start();

    assert!(matches!(
        next(&mut events).await,
        RelayEvent::Registered { .. }
    ));
    match next(&mut events).await {
        RelayEvent::Disconnected { code: None, .. } => {}
        other => panic!("expected one Disconnected, got {other:?}"),
    }
    match next(&mut events).await {
        RelayEvent::Registered { .. } => {}
        other => panic!("expected Registered after one retry, got {other:?}"),
    }
    // Nothing else follows: no second retry timer, no second connection.
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
        panic!("expected no further event, got {event:?}");
    }
    let status = client.send(GetStatus).await.unwrap();
    assert!(status.registered, "{status:?}");
    assert_eq!(
        (status.attempts, status.registrations, status.retries),
        (2, 2, 1),
        "{status:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn a_relay_gone_with_a_fin_is_one_loss() {
    one_loss_is_handled_once(false).await;
}

#[actix_rt::test]
async fn a_relay_gone_with_a_reset_is_one_loss() {
    one_loss_is_handled_once(true).await;
}
