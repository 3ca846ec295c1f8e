//! Proves the relay process reloads its `[[tunnel.services]]` live, with
//! real agents, clients and sockets: a change of its `--config` file adds a
//! service (its port serves), removes one (its open client connection, a
//! client still waiting for a pooled connection and its UDP session end,
//! its port refuses), restarts a changed one (same port
//! when `bind` is unchanged, a new port when it changed), and keeps an
//! unchanged one's open client connection echoing throughout; SIGHUP reloads
//! a changed token file; files that no longer validate (bad TOML, a name
//! given twice, a UDP key on a TCP service, an unreadable token file) and a
//! port that cannot be bound are refused with the key (or service) named
//! while the old services keep serving; other changed keys are named as
//! needing a restart; `/tunnels` and `/metrics` count all of it.

mod common;
mod reload_common;
mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::procs::RelayProc;
use reload_common::{addr, entry, reloads, replace, sessions};
use switchboard::config::Secret;
use switchboard::tunnel::agent::{self, AgentHandle, LocalService};
use tokio::net::TcpStream;
use tunnel_common::{agent_settings, metric, round_trip, udp, WAIT};

/// The relay's settings: loopback, port 0, then `services` (each a TOML body).
fn relay_file(extra: &str, services: &[&str]) -> String {
    let mut text = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n{extra}[admin]\nhost = \"127.0.0.1\"\nport = 0\n\
         [log]\nlevel = \"info\"\n[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n"
    );
    for service in services {
        text.push_str("[[tunnel.services]]\n");
        text.push_str(service);
    }
    text
}

/// A TCP service entry on port 0 with token `NAME-token`.
fn tcp(name: &str) -> String {
    format!("name = \"{name}\"\nbind = \"127.0.0.1:0\"\ntoken = \"{name}-token\"\n")
}

/// Polls `/tunnels` until `name`'s entry satisfies `cond` (`None`: not running).
async fn wait_entry(
    relay: &RelayProc,
    name: &str,
    cond: impl Fn(Option<&serde_json::Value>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = entry(relay, name).await;
        if cond(now.as_ref()) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an in-process agent for `name` with `token` and waits for its pool.
async fn agent_for(relay: &RelayProc, name: &str, token: &str, local: LocalService) -> AgentHandle {
    let mut settings = agent_settings(&relay.agents, name, local, 2);
    settings.token = Secret::new(token);
    let handle = agent::spawn(settings);
    wait_entry(relay, name, |e| {
        e.is_some_and(|e| e["pool_idle"].as_u64() >= Some(2))
    })
    .await;
    handle
}

/// Whether connecting to `addr` is refused (nothing listens any more)
/// within [`WAIT`]: the listener closes once its accept loop has seen the
/// reload.
async fn refuses(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let tried = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await;
        if matches!(tried, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Waits until `switchboard_tunnel_udp_sessions` of `name` is 0.
async fn wait_no_udp_sessions(relay: &RelayProc, name: &str) {
    let deadline = Instant::now() + WAIT;
    let label = format!("service=\"{name}\"");
    while metric(
        &relay.metrics().await,
        "switchboard_tunnel_udp_sessions",
        &label,
    ) != 0.0
    {
        assert!(Instant::now() < deadline, "{name}'s UDP session still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_adds_removes_and_restarts_services_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let udp_entry = "name = \"u\"\nbind = \"127.0.0.1:0\"\ntoken = \"u-token\"\ntype = \"udp\"\n";
    std::fs::write(&file, relay_file("", &[&tcp("a"), &tcp("b"), udp_entry])).unwrap();
    let mut relay = RelayProc::start_file(&file);
    let _a = agent_for(&relay, "a", "a-token", LocalService::Echo).await;
    let _b = agent_for(&relay, "b", "b-token", LocalService::Echo).await;
    let echo = udp::udp_echo_server().await;
    let _u = agent_for(&relay, "u", "u-token", LocalService::Udp(echo.to_string())).await;
    let a_sessions = sessions(&relay, "a").await;
    let (a_addr, b_addr) = (addr(&relay, "a").await, addr(&relay, "b").await);
    let mut on_a = TcpStream::connect(a_addr).await.unwrap();
    let mut on_b = TcpStream::connect(b_addr).await.unwrap();
    assert!(round_trip(&mut on_a, b"a before").await);
    assert!(round_trip(&mut on_b, b"b before").await);
    let on_u = udp::client(addr(&relay, "u").await).await;
    on_u.send(b"u before").await.unwrap();
    assert_eq!(
        udp::recv(&on_u, WAIT).await.as_deref(),
        Some(&b"u before"[..])
    );
    wait_entry(&relay, "u", |e| e.is_some_and(|e| e["udp_sessions"] == 1)).await;

    // b and u removed, c added, a unchanged.
    replace(&file, &relay_file("", &[&tcp("a"), &tcp("c")]));
    let line = relay.proc.wait_line("tunnel reload 1:");
    assert!(
        line.contains("1 service(s) kept (a), 0 restarted, 1 started (c), 2 stopped (b, u)"),
        "{line}"
    );
    assert!(
        !round_trip(&mut on_b, b"b after").await,
        "b's client outlived b"
    );
    assert!(refuses(b_addr).await, "b's port still accepts");
    assert!(entry(&relay, "b").await.is_none() && entry(&relay, "u").await.is_none());
    // The port may already answer with an ICMP refusal, which a send reports.
    let _ = on_u.send(b"u after").await;
    assert_eq!(
        udp::recv(&on_u, Duration::from_millis(500)).await,
        None,
        "u still answers"
    );
    wait_no_udp_sessions(&relay, "u").await;
    assert!(round_trip(&mut on_a, b"a kept its connection").await);
    assert_eq!(
        sessions(&relay, "a").await,
        a_sessions,
        "a's agent was restarted"
    );
    let _c = agent_for(&relay, "c", "c-token", LocalService::Echo).await;
    let c_addr = addr(&relay, "c").await;
    let mut on_c = TcpStream::connect(c_addr).await.unwrap();
    assert!(round_trip(&mut on_c, b"c serves").await);

    // c's token changed: c restarts on the same port (its client and agent
    // dropped; the old token no longer authenticates, the new one does).
    let c_new = "name = \"c\"\nbind = \"127.0.0.1:0\"\ntoken = \"c-token-2\"\n";
    replace(&file, &relay_file("", &[&tcp("a"), c_new]));
    let line = relay.proc.wait_line("tunnel reload 2:");
    assert!(line.contains("1 restarted (c)"), "{line}");
    assert!(
        !round_trip(&mut on_c, b"c after").await,
        "c's client outlived c's restart"
    );
    assert_eq!(addr(&relay, "c").await, c_addr, "c's socket was kept");
    let _c2 = agent_for(&relay, "c", "c-token-2", LocalService::Echo).await;
    let mut on_c = TcpStream::connect(c_addr).await.unwrap();
    assert!(round_trip(&mut on_c, b"c serves again").await);

    // c's bind changed: a new port, the old one refuses.
    let port = free_port();
    let c_moved = format!("name = \"c\"\nbind = \"127.0.0.1:{port}\"\ntoken = \"c-token-2\"\n");
    replace(&file, &relay_file("", &[&tcp("a"), &c_moved]));
    relay.proc.wait_line("tunnel reload 3:");
    let moved = addr(&relay, "c").await;
    assert_eq!(moved.port(), port);
    assert!(refuses(c_addr).await, "c's old port still accepts");
    wait_entry(&relay, "c", |e| {
        e.is_some_and(|e| e["pool_idle"].as_u64() >= Some(2))
    })
    .await;
    let mut on_c = TcpStream::connect(moved).await.unwrap();
    assert!(round_trip(&mut on_c, b"c on its new port").await);

    assert!(round_trip(&mut on_a, b"a through three reloads").await);
    assert_eq!(sessions(&relay, "a").await, a_sessions);
    let tunnels = relay.tunnels().await;
    assert_eq!(tunnels["reload"]["count"], 3, "{tunnels}");
    assert_eq!(tunnels["reload"]["failed"], 0, "{tunnels}");
    assert_eq!(reloads(&relay, "ok").await, 3.0);
    assert_eq!(relay.proc.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_are_refused_with_the_key_named_and_sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let token_file = dir.path().join("t.token");
    std::fs::write(&token_file, "t-token\n").unwrap();
    let t = format!(
        "name = \"t\"\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let good = relay_file("", &[&tcp("a"), &t]);
    std::fs::write(&file, &good).unwrap();
    let mut relay = RelayProc::start_file(&file);
    let _a = agent_for(&relay, "a", "a-token", LocalService::Echo).await;
    let _t = agent_for(&relay, "t", "t-token", LocalService::Echo).await;
    let mut on_a = TcpStream::connect(addr(&relay, "a").await).await.unwrap();
    assert!(round_trip(&mut on_a, b"a before").await);

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let busy = format!("name = \"d\"\nbind = \"{taken}\"\ntoken = \"d-token\"\n");
    let udp_key_on_tcp = format!("{}udp_queue = 8\n", tcp("e"));
    let missing = "name = \"f\"\nbind = \"127.0.0.1:0\"\ntoken_file = \"/nonexistent/f.token\"\n";
    let refusals: [(String, &str); 5] = [
        ("[server\nport = ".into(), "cannot load settings"),
        (
            relay_file("", &[&tcp("a"), &t, &tcp("a")]),
            "tunnel.services.name",
        ),
        (
            relay_file("", &[&tcp("a"), &t, &udp_key_on_tcp]),
            "tunnel.services.udp_queue",
        ),
        (
            relay_file("", &[&tcp("a"), &t, missing]),
            "tunnel.services.token_file",
        ),
        (
            relay_file("", &[&tcp("a"), &t, &busy]),
            &format!("tunnel service d: {taken}"),
        ),
    ];
    for (n, (text, named)) in refusals.iter().enumerate() {
        replace(&file, text);
        let line = relay.proc.log.wait_count("tunnel reload refused", n + 1);
        assert!(
            line.contains(named),
            "refusal {n} does not name {named}: {line}"
        );
        assert!(
            round_trip(&mut on_a, b"a still serves").await,
            "after refusal {n}"
        );
    }
    for name in ["d", "e", "f"] {
        assert!(entry(&relay, name).await.is_none(), "{name} started");
    }
    let tunnels = relay.tunnels().await;
    let reload = &tunnels["reload"];
    assert_eq!(
        (reload["count"].as_u64(), reload["failed"].as_u64()),
        (Some(0), Some(5))
    );
    let last = reload["last_error"].as_str().unwrap();
    assert!(
        last.contains(&format!("tunnel service d: {taken}")),
        "{last}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reload["last_error_at"].as_u64().unwrap().abs_diff(now) < 60,
        "{reload}"
    );
    assert_eq!(reloads(&relay, "error").await, 5.0);
    drop(held);

    // Another key changed too: named as needing a restart, the services applied.
    replace(
        &file,
        &relay_file("max_clients = 77\n", &[&tcp("a"), &t, &tcp("g")]),
    );
    let line = relay.proc.wait_line("need a restart");
    assert!(line.contains("server.max_clients"), "{line}");
    let line = relay.proc.wait_line("tunnel reload 1:");
    assert!(line.contains("1 started (g)"), "{line}");

    // SIGHUP: the file is the same, its token file changed, so t restarts.
    let t_sessions = sessions(&relay, "t").await;
    std::fs::write(&token_file, "t-token-2\n").unwrap();
    relay.proc.signal("HUP");
    relay.proc.wait_line("(SIGHUP)");
    let line = relay.proc.wait_line("tunnel reload 2:");
    assert!(
        line.contains("2 service(s) kept (a, g), 1 restarted (t)"),
        "{line}"
    );
    let _t2 = agent_for(&relay, "t", "t-token-2", LocalService::Echo).await;
    assert_ne!(sessions(&relay, "t").await, t_sessions);
    let mut on_t = TcpStream::connect(addr(&relay, "t").await).await.unwrap();
    assert!(round_trip(&mut on_t, b"t with its new token").await);
    assert!(round_trip(&mut on_a, b"a kept through it all").await);
    assert_eq!(reloads(&relay, "ok").await, 2.0);
    assert_eq!(relay.proc.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_a_removed_service_is_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    // No agent for w: its client waits for a pooled connection (up to 30 s).
    let waits = "[tunnel]\npool_wait_ms = 30000\n";
    let text = relay_file("", &[&tcp("a"), &tcp("w")]).replace("[tunnel]\n", waits);
    std::fs::write(&file, &text).unwrap();
    let mut relay = RelayProc::start_file(&file);
    let mut waiting = TcpStream::connect(addr(&relay, "w").await).await.unwrap();
    wait_entry(&relay, "w", |e| e.is_some_and(|e| e["waiting"] == 1)).await;
    let removed = relay_file("", &[&tcp("a")]).replace("[tunnel]\n", waits);
    replace(&file, &removed);
    relay.proc.wait_line("tunnel reload 1:");
    let started = Instant::now();
    let end = tunnel_common::read_until_closed(&mut waiting, WAIT).await;
    assert_eq!(end, Some(Vec::new()), "the waiting client was not closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(relay.proc.terminate().code(), Some(0));
}
