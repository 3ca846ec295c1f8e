//! Helpers for peer-library tests: PeerManagers configured for loopback, and
//! an actor that forwards PeerEvents to a channel.
#![allow(dead_code)]

use std::time::Duration;

use actix::prelude::*;
use switchboard::client::peer_manager::{
    PeerEvent, PeerManager, PeerManagerConfig, PeerMessage, Recv, Status, SubscribeEvents,
};
use switchboard::client::relay_client::BackoffConfig;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A peer manager config for `url`: loopback candidates, quick reconnects.
pub fn peer_config(url: &str, channels: usize) -> PeerManagerConfig {
    let mut config = PeerManagerConfig::new(url);
    config.connection.channels = channels;
    config.connection.bind_addrs = vec!["127.0.0.1".parse().unwrap()];
    config.connection.connect_timeout = Duration::from_secs(10);
    config.relay.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        stable_after: Duration::from_secs(5),
    };
    config
}

/// A started manager and its UUID, once registered.
pub async fn manager(config: PeerManagerConfig) -> (Addr<PeerManager>, Uuid) {
    let manager = PeerManager::new(config).unwrap().start();
    let uuid = wait_registered(&manager).await;
    (manager, uuid)
}

/// Waits (bounded) until `manager` is registered; returns its UUID.
pub async fn wait_registered(manager: &Addr<PeerManager>) -> Uuid {
    for _ in 0..200 {
        let status = manager.send(Status).await.unwrap();
        if status.registered {
            return status.uuid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("peer manager did not register within 5 s");
}

/// The next message, within 20 s.
pub async fn recv(manager: &Addr<PeerManager>) -> PeerMessage {
    manager
        .send(Recv(Some(Duration::from_secs(20))))
        .await
        .unwrap()
        .expect("a message within 20 s")
}

/// Subscribes to `manager`'s events.
pub async fn events(manager: &Addr<PeerManager>) -> mpsc::UnboundedReceiver<PeerEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = super::forwarder::Forwarder::<PeerEvent>(tx).start();
    manager
        .send(SubscribeEvents(sink.recipient()))
        .await
        .unwrap();
    rx
}

/// Waits (bounded) for an event matching `want`, skipping others.
pub async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<PeerEvent>,
    want: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("event within 20 s")
            .expect("event channel open");
        if want(&event) {
            return event;
        }
    }
}
