//! Helpers for `RelayClient` tests: an actor collecting its events, a
//! started client with event helpers, and waits on its status.
#![allow(dead_code)]

use std::time::Duration;

use actix::prelude::*;
use switchboard::client::relay_client::{
    GetStatus, RelayClient, RelayClientConfig, RelayClientError, RelayEvent, RelayStatus,
    SendPeerConnection,
};
use switchboard::protocol::{DescriptionType, PeerConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::WAIT;

/// The next event on `events`, within 5 s.
pub async fn next(events: &mut mpsc::UnboundedReceiver<RelayEvent>) -> RelayEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a relay event within 5 s")
        .expect("event channel open")
}

/// A started `RelayClient` and the events it sends.
pub struct Client {
    pub addr: Addr<RelayClient>,
    pub events: mpsc::UnboundedReceiver<RelayEvent>,
    pub uuid: Uuid,
    pub name: String,
}

impl Client {
    pub async fn next(&mut self) -> RelayEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no relay event within 5 s")
            .expect("event channel closed")
    }

    pub async fn registered(&mut self) {
        match self.next().await {
            RelayEvent::Registered { uuid, name, .. } => {
                assert_eq!(uuid, self.uuid);
                assert_eq!(name, self.name);
            }
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    pub async fn failed(&mut self) -> RelayClientError {
        match self.next().await {
            RelayEvent::Failed(error) => error,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    pub async fn quiet_for(&mut self, period: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(period, self.events.recv()).await {
            panic!("expected no event, got {event:?}");
        }
    }

    pub async fn stops(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.addr.connected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "actor still running"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn description(&self, to: Uuid, kind: DescriptionType) -> PeerConnection {
        PeerConnection {
            source_uuid: self.uuid,
            source_name: self.name.clone(),
            peer_uuid: to,
            description_type: kind,
            description: format!(r#"{{"sdp": "v=0\r\n", "type": "{}"}}"#, kind.as_str()),
            error: None,
        }
    }

    pub async fn send(&self, pc: PeerConnection) -> Result<(), RelayClientError> {
        self.addr.send(SendPeerConnection(pc)).await.unwrap()
    }
}

/// A client config for `url`: a fresh UUID, quick timeouts and backoff.
pub fn config(url: &str, name: &str) -> RelayClientConfig {
    let mut config = RelayClientConfig::new(url);
    config.name = Some(name.to_owned());
    config.uuid = Some(Uuid::new_v4());
    config.connect_timeout = Duration::from_secs(2);
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_millis(400);
    config
}

/// Starts a client with `config`, its events collected.
pub fn start(config: RelayClientConfig) -> Client {
    let (tx, events) = mpsc::unbounded_channel();
    let collector = super::forwarder::Forwarder(tx).start();
    let client = RelayClient::new(config, collector.recipient()).expect("valid config");
    let (uuid, name) = (client.uuid(), client.name().to_owned());
    Client {
        addr: client.start(),
        events,
        uuid,
        name,
    }
}

/// Waits (bounded) until the client's status satisfies `pred`.
pub async fn status_until(client: &Client, pred: impl Fn(&RelayStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = client.addr.send(GetStatus).await.unwrap();
        if pred(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never held: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
