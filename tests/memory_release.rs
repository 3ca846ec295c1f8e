//! Proves the `switchboard` binary gives memory back once it is idle: a burst
//! leaves ~80 MB of frames queued in the relay for clients that do not read;
//! once every client has left, the relay's VmRSS falls back near where it
//! started (jemalloc's background threads purge freed pages; without them an
//! idle relay kept its peak: `scripts/soak` found 1.8 GB of a 3.0 GB peak
//! still resident 30 s after its 10 000 clients left).
#![cfg(all(target_os = "linux", feature = "jemalloc"))]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::log_lines::LogLines;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Clients that register and never read.
const RECEIVERS: usize = 8;
/// Frames sent to each of them.
const FRAMES_EACH: usize = 40;
/// Bytes of each frame's description (the relay's limit is 1 MiB per frame).
const DESCRIPTION_BYTES: usize = 256 * 1024;
/// The burst must raise the relay's VmRSS at least this much (KiB) for the test to mean anything.
const MIN_GROWTH_KIB: u64 = 50 * 1024;
/// Share of that growth the idle relay may still hold at the end.
const KEPT_SHARE: f64 = 0.25;
/// How long the relay gets to give the memory back (jemalloc's decay is 10 s).
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// The relay process, killed when dropped.
struct Relay {
    child: Child,
    log: LogLines,
    _config: tempfile::NamedTempFile,
}

impl Relay {
    fn start() -> Relay {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        let toml = "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nenabled = false\n[log]\nlevel = \"info\"\n";
        config.write_all(toml.as_bytes()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(config.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = LogLines::follow(&mut child, WAIT);
        Relay {
            child,
            log,
            _config: config,
        }
    }

    /// The `ws://` URL from the startup line.
    fn url(&mut self) -> String {
        let line = self.log.wait_line("relay listening on ");
        let rest = line.split("relay listening on ").nth(1).unwrap();
        rest.split(';').next().unwrap().to_string()
    }

    /// The relay's VmRSS, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Polls VmRSS (every 100 ms, up to `limit`) until `done` holds; returns the last value.
    async fn rss_until(&self, limit: Duration, done: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let rss = self.rss_kib();
            if done(rss) || Instant::now() >= deadline {
                return rss;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `peer_connection` offer whose description carries `pad`.
fn big_offer(source: &str, peer: &str, pad: &str) -> String {
    let description =
        serde_json::json!({"sdp": format!("v=0\r\na=x-pad:{pad}\r\n"), "type": "offer"});
    serde_json::json!({
        "source_uuid": source, "source_name": "burst", "peer_uuid": peer,
        "description_type": "offer", "description": description.to_string(),
        "error": null, "message_type": "peer_connection",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_gives_back_the_memory_of_a_burst() {
    let mut relay = Relay::start();
    let url = relay.url();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = relay.rss_kib();
    let uuids: Vec<String> = (0..RECEIVERS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let mut receivers = Vec::new();
    for (i, uuid) in uuids.iter().enumerate() {
        receivers.push(client(&url, &format!("idle-{i}"), uuid).await);
    }
    let source = uuid::Uuid::new_v4().to_string();
    let mut sender = client(&url, "burst", &source).await;
    let pad = "x".repeat(DESCRIPTION_BYTES);
    for _ in 0..FRAMES_EACH {
        for uuid in &uuids {
            let frame = Message::text(big_offer(&source, uuid, &pad));
            tokio::time::timeout(WAIT, sender.send(frame))
                .await
                .unwrap()
                .unwrap();
        }
    }
    let peak = relay
        .rss_until(Duration::from_secs(20), |rss| rss >= fresh + MIN_GROWTH_KIB)
        .await;
    assert!(
        peak >= fresh + MIN_GROWTH_KIB,
        "the burst raised the relay's VmRSS only from {fresh} to {peak} KiB"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = peak.max(relay.rss_kib());
    drop(receivers);
    drop(sender);
    let limit = fresh + ((peak - fresh) as f64 * KEPT_SHARE) as u64;
    let end = relay.rss_until(RELEASE_WAIT, |rss| rss <= limit).await;
    assert!(
        end <= limit,
        "idle relay still holds {end} KiB {RELEASE_WAIT:?} after its clients left (fresh {fresh} KiB, peak {peak} KiB, limit {limit} KiB)"
    );
}
