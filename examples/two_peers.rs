//! The smallest complete use of the peer library: a relay and two peers in one
//! process, talking over WebRTC data channels on loopback.
//!
//! ```text
//! cargo run --example two_peers
//! ```
//!
//! It starts a Switchboard relay on `127.0.0.1:0`, two [`PeerManager`]s that
//! register with it, sends a text and a bytes message from Alice to Bob and a
//! reply back, prints what arrives, and exits 0. Set `RUST_LOG=info` to watch
//! the connection being made.

use std::error::Error;
use std::time::Duration;

use actix::prelude::*;
use switchboard::client::peer_manager::{
    Close, PeerManager, PeerManagerConfig, PeerMessage, Recv, Send, Status,
};
use switchboard::config::Settings;
use switchboard::node;
use switchboard::protocol::chunk::Payload;
use uuid::Uuid;

/// How long each step may take before the example gives up.
const STEP: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    // The WebRTC stack warns about normal events (a check before its candidates).
    let quiet = switchboard::logging::WEBRTC_QUIET;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(quiet)).init();
    actix_rt::System::new().block_on(run())
}

async fn run() -> Result<(), Box<dyn Error>> {
    // 1. A relay on an ephemeral loopback port, without the admin listener.
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.admin.enabled = false;
    let (public, admin) = node::bind(&settings)?;
    let relay = node::start(settings, public, admin)?;
    let url = format!("ws://{}", relay.public_addr());
    println!("relay listening on {url}");

    // 2. Two peers. Both must be registered before one can reach the other.
    let alice = peer(&url, "alice")?;
    let bob = peer(&url, "bob")?;
    let alice_uuid = registered(&alice).await?;
    let bob_uuid = registered(&bob).await?;
    println!("alice is {alice_uuid}, bob is {bob_uuid}");

    // 3. Alice → Bob: the first send opens the connection and waits until it is ready.
    alice
        .send(Send::text(bob_uuid, "hello Bob, ça va ?"))
        .await??;
    alice
        .send(Send::bytes(bob_uuid, vec![0u8, 1, 2, 0xfe, 0xff]))
        .await??;
    for _ in 0..2 {
        show("bob", &bob.send(Recv(Some(STEP))).await??);
    }

    // 4. Bob → Alice, over the connection Alice opened.
    bob.send(Send::text(alice_uuid, "hi Alice, très bien"))
        .await??;
    show("alice", &alice.send(Recv(Some(STEP))).await??);

    // 5. Close both peers (each waits, bounded, until its peer has everything
    //    sent), then the relay.
    alice.send(Close).await??;
    bob.send(Close).await??;
    relay.shutdown().await;
    println!("done");
    Ok(())
}

/// A started peer manager with host candidates on loopback only.
fn peer(url: &str, name: &str) -> Result<Addr<PeerManager>, Box<dyn Error>> {
    let mut config = PeerManagerConfig::new(url);
    config.relay.name = Some(name.into());
    config.connection.bind_addrs = vec!["127.0.0.1".parse()?];
    config.connection.connect_timeout = STEP;
    Ok(PeerManager::new(config)?.start())
}

/// Waits (at most [`STEP`]) until `manager` is registered; returns its UUID.
async fn registered(manager: &Addr<PeerManager>) -> Result<Uuid, Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        let status = manager.send(Status).await?;
        if status.registered {
            return Ok(status.uuid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("not registered with the relay within {STEP:?}").into())
}

fn show(who: &str, message: &PeerMessage) {
    match &message.payload {
        Payload::Text(text) => println!("{who} got text from {}: {text:?}", message.peer),
        Payload::Bytes(bytes) => println!("{who} got bytes from {}: {bytes:?}", message.peer),
    }
}
