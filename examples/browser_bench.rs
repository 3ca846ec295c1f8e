//! Measures (a benchmark, not a test: run by `scripts/bench browser`)
//! how long a message takes between a Switchboard peer and headless Chromium on
//! loopback, each try on a fresh connection:
//!
//! - Switchboard → Chromium: from the page's "all channels open" to the page
//!   having the whole message and its SHA-256 (the page's clock);
//! - Chromium → Switchboard: from Switchboard's `Connected` event to the whole
//!   message received and its SHA-256 checked (the test's clock).
//!
//! For every try it also reads the kernel's UDP counters (`/proc/net/snmp`
//! RcvbufErrors, for the whole network namespace) before and after, and the
//! receive buffer and drop count of the receiving socket (`ss -uam` on the
//! port ICE selected), so a slow try can be matched to datagrams the kernel
//! dropped and to the socket that dropped them. Settings (environment):
//! BENCH_BROWSER_TRIES [20], BENCH_BROWSER_BYTES [1048576],
//! BENCH_BROWSER_CHANNELS [1], BENCH_BROWSER_SLOW_MS [300],
//! BENCH_BROWSER_SEND_BUFFER [the library default] (send_buffer_limit, bytes),
//! BENCH_BROWSER_SCTP_MTU [the library default] (sctp_mtu, bytes),
//! BENCH_BROWSER_DIRECTIONS ["to-chromium from-chromium"].

#[path = "../tests/browser_common/mod.rs"]
mod browser_common;
#[path = "../tests/common/forwarder.rs"]
mod forwarder;
#[path = "../tests/common/peers.rs"]
mod peers;

use std::time::Instant;

use browser_common::{chromium, pattern, sha256, Browser, PageMessage};
use peers::{events, manager, peer_config, recv, wait_event};
use serde_json::{json, Value};
use switchboard::client::peer_manager::{Close, PeerEvent, PeerManagerConfig, Send};
use switchboard::config::Settings;
use switchboard::node;
use switchboard::protocol::chunk::Payload;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// `RcvbufErrors` of the `Udp:` line of /proc/net/snmp.
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// `rb` (receive buffer, bytes) and `d` (datagrams dropped) of the UDP socket
/// bound to 127.0.0.1:`port`, from `ss -uam`.
fn socket_memory(port: u64) -> Option<(u64, u64)> {
    let filter = format!("sport = :{port}");
    let output = std::process::Command::new("ss")
        .args(["-Hnuam", &filter])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let skmem = text.split("skmem:(").nth(1)?.split(')').next()?;
    let field = |prefix: &str| {
        skmem
            .split(',')
            .find_map(|f| f.strip_prefix(prefix).and_then(|v| v.parse().ok()))
    };
    Some((field("rb")?, field("d")?))
}

struct Try {
    ms: f64,
    first_chunk_ms: Option<f64>,
    kernel_drops: u64,
    socket: Option<(u64, u64)>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(title: &str, tries: &[Try], slow_ms: f64) {
    println!("\n{title}");
    println!("try  ms         first-chunk-ms  UdpRcvbufErrors+  receiver rb  receiver drops");
    for (i, t) in tries.iter().enumerate() {
        let first = t.first_chunk_ms.map_or("-".into(), |v| format!("{v:.1}"));
        let (rb, drops) = t.socket.map_or(("-".into(), "-".into()), |(rb, d)| {
            (rb.to_string(), d.to_string())
        });
        println!(
            "{:>3}  {:>9.1}  {first:>14}  {:>16}  {rb:>11}  {drops:>14}",
            i + 1,
            t.ms,
            t.kernel_drops
        );
    }
    let mut ms: Vec<f64> = tries.iter().map(|t| t.ms).collect();
    let slow = ms.iter().filter(|v| **v > slow_ms).count();
    let lossy = tries.iter().filter(|t| t.kernel_drops > 0).count();
    let median = median(&mut ms);
    println!(
        "median {median:.1} ms; {slow}/{} over {slow_ms} ms; {lossy} with UDP receive-buffer drops; all: {}",
        tries.len(),
        ms.iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn config(url: &str) -> PeerManagerConfig {
    let mut config = peer_config(url, setting("BENCH_BROWSER_CHANNELS", 1));
    if let Ok(limit) = std::env::var("BENCH_BROWSER_SEND_BUFFER") {
        config.connection.send_buffer_limit = limit.parse().expect("BENCH_BROWSER_SEND_BUFFER");
    }
    if let Ok(mtu) = std::env::var("BENCH_BROWSER_SCTP_MTU") {
        config.connection.sctp_mtu = Some(mtu.parse().expect("BENCH_BROWSER_SCTP_MTU"));
    }
    config
}

/// Switchboard sends; the page times it from its channels' open to the hash.
async fn to_chromium(
    url: &str,
    page: &mut Browser,
    page_uuid: uuid::Uuid,
    bytes: usize,
    seed: usize,
) -> Try {
    let (sb, sb_uuid) = manager(config(url)).await;
    let payload = Payload::Bytes(pattern(bytes, seed));
    let before = udp_rcvbuf_errors();
    sb.send(Send {
        peer: page_uuid,
        payload: payload.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    let event = page.recv_from(sb_uuid).await;
    let kernel_drops = udp_rcvbuf_errors() - before;
    assert_eq!(event["sha256"], sha256(payload.as_bytes()), "{event}");
    let ready = page.ready_with(sb_uuid).await;
    let socket = ready["pair"]["local"]["port"]
        .as_u64()
        .and_then(socket_memory);
    page.call(json!({"cmd": "close", "peer": sb_uuid})).await;
    // The page checked the bytes by hash; a page that closes at once may
    // leave the last acknowledgements unread: said, not fatal, here.
    if let Err(error) = sb.send(Close).await.unwrap() {
        eprintln!("close: {error}");
    }
    Try {
        ms: event["ready_to_verified_ms"].as_f64().unwrap_or(f64::NAN),
        first_chunk_ms: event["ready_to_first_chunk_ms"].as_f64(),
        kernel_drops,
        socket,
    }
}

/// The page sends; Switchboard times it from `Connected` to the hash.
async fn from_chromium(
    url: &str,
    page: &mut Browser,
    page_uuid: uuid::Uuid,
    bytes: usize,
    seed: usize,
) -> Try {
    let (sb, sb_uuid) = manager(config(url)).await;
    let mut sb_events = events(&sb).await;
    let message = PageMessage::bytes(bytes, seed);
    let before = udp_rcvbuf_errors();
    let mut command = message.fields.clone();
    command["cmd"] = json!("send");
    command["peer"] = json!(sb_uuid);
    command["channels"] = json!(setting("BENCH_BROWSER_CHANNELS", 1));
    let id = page.command(command).await;
    wait_event(
        &mut sb_events,
        |e| matches!(e, PeerEvent::Connected { peer, .. } if *peer == page_uuid),
    )
    .await;
    let connected = Instant::now();
    let got = recv(&sb).await;
    assert_eq!(
        sha256(got.payload.as_bytes()),
        sha256(message.payload.as_bytes())
    );
    let ms = connected.elapsed().as_secs_f64() * 1000.0;
    let kernel_drops = udp_rcvbuf_errors() - before;
    page.result(id).await;
    let ready: Value = page.ready_with(sb_uuid).await;
    let socket = ready["pair"]["remote"]["port"]
        .as_u64()
        .and_then(socket_memory);
    page.call(json!({"cmd": "close", "peer": sb_uuid})).await;
    // The page checked the bytes by hash; a page that closes at once may
    // leave the last acknowledgements unread: said, not fatal, here.
    if let Err(error) = sb.send(Close).await.unwrap() {
        eprintln!("close: {error}");
    }
    Try {
        ms,
        first_chunk_ms: None,
        kernel_drops,
        socket,
    }
}

/// A relay in this process (this System) on 127.0.0.1:0, without admin.
struct Relay {
    _server: node::Node,
    url: String,
}

fn start_relay() -> Relay {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.admin.enabled = false;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the relay");
    let server = node::start(settings, listener, None).expect("starting the relay");
    let url = format!("ws://127.0.0.1:{}", server.public_addr().port());
    Relay {
        _server: server,
        url,
    }
}

#[actix_rt::main]
async fn main() {
    // RUST_LOG=rtc_sctp=trace shows every retransmission timeout and fast
    // retransmit of a try (what BENCHMARKS.md's browser section reads).
    let _ = env_logger::builder().format_timestamp_micros().try_init();
    let Some(chromium) = chromium() else {
        eprintln!("browser_bench: no Chromium at /usr/bin/chromium (apt package chromium)");
        std::process::exit(1);
    };
    let tries = setting("BENCH_BROWSER_TRIES", 20);
    let bytes = setting("BENCH_BROWSER_BYTES", 1 << 20);
    let slow_ms = setting("BENCH_BROWSER_SLOW_MS", 300) as f64;
    let directions = std::env::var("BENCH_BROWSER_DIRECTIONS")
        .unwrap_or_else(|_| "to-chromium from-chromium".into());
    let relay = start_relay();
    let mut page = Browser::launch(&chromium).await;
    let page_uuid = page.register(&relay.url).await;
    println!(
        "Chromium {}, {bytes} bytes per try, {} channel(s), send_buffer_limit {}, sctp_mtu {:?}",
        page.version,
        setting("BENCH_BROWSER_CHANNELS", 1),
        config(&relay.url).connection.send_buffer_limit,
        config(&relay.url).connection.effective_sctp_mtu()
    );
    if directions.contains("to-chromium") {
        let mut results = Vec::new();
        for seed in 0..tries {
            results.push(to_chromium(&relay.url, &mut page, page_uuid, bytes, seed).await);
        }
        report(
            "Switchboard -> Chromium (page: channels open -> verified by SHA-256; receiver = Chromium's socket)",
            &results,
            slow_ms,
        );
    }
    if directions.contains("from-chromium") {
        let mut results = Vec::new();
        for seed in 0..tries {
            results.push(from_chromium(&relay.url, &mut page, page_uuid, bytes, seed).await);
        }
        report(
            "Chromium -> Switchboard (Switchboard: Connected -> verified by SHA-256; receiver = Switchboard's socket)",
            &results,
            slow_ms,
        );
    }
    page.quit().await;
}
