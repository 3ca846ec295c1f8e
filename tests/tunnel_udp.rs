//! Proves UDP services through the tunnel with real UDP and TCP sockets: a
//! real UDP echo service (many datagrams, order and content kept per
//! session, two clients at once get only their own answers), DNS-like
//! request/response traffic (many ids in flight, every answer matched),
//! idle expiry (the session leaves `/tunnels` and the gauge; the next
//! datagram opens a new one), the `max_sessions`, `queue_full` and
//! `too_large` drops counted, queued datagrams delivered once an agent
//! comes, a TCP agent for a UDP service and a UDP agent for a TCP service
//! refused with a clear error, and bad UDP settings naming the key; and,
//! with a hand-made agent speaking raw frames, the wire format (`StartUdp`,
//! datagram records both ways) and a silent pooled connection replaced;
//! datagrams through TLS agent connections; and
//! as an operator runs it, a relay process and a `switchboard host
//! --local-udp` process serving a UDP client, `/tunnels` and `/metrics`
//! showing the session, `--local-udp` with `--proxy-protocol` refused.

mod common;
mod tunnel_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fixtures::self_signed;
use common::procs::{after, http_get, write_temp, Proc};
use switchboard::config::{Overrides, Settings, TunnelSettings};
use switchboard::protocol::tunnel::{self, DatagramRecords, ErrorCode, Frame, Role, Transport};
use switchboard::tunnel::agent::host_config::HostConfig;
use switchboard::tunnel::agent::{self, AgentError, LocalService};
use switchboard::tunnel::framing::write_frame;
use switchboard::tunnel::tls::AgentTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tunnel_common::*;

/// Tunnel settings with one UDP service `name` (and a TCP service "web").
fn udp_settings(
    name: &str,
    tweak: impl FnOnce(&mut switchboard::config::TunnelService),
) -> TunnelSettings {
    let mut s = settings(&[name, "web"]);
    s.services[0].kind = Some("udp".into());
    tweak(&mut s.services[0]);
    s
}

/// Asks for 4 MiB socket buffers, so bursts of in-flight datagrams are not
/// lost in the test's own sockets (the kernel default holds ~200 small ones).
fn big_buffers(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
}

/// A real UDP echo server on 127.0.0.1:0.
async fn udp_echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A tiny DNS-like server: each request `id (u16) | name` is answered with
/// `id | 0x80 | name reversed | sum of its bytes (u32)`.
async fn resolver() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if n < 2 {
                continue;
            }
            let _ = socket.send_to(&answer(&buf[..n]), from).await;
        }
    });
    addr
}

fn answer(request: &[u8]) -> Vec<u8> {
    let (id, name) = request.split_at(2);
    let mut out = id.to_vec();
    out.push(0x80);
    out.extend(name.iter().rev());
    let sum: u32 = name.iter().map(|&b| u32::from(b)).sum();
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// A client socket on 127.0.0.1 sending to `to`.
async fn client(to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    big_buffers(&socket);
    socket.connect(to).await.unwrap();
    socket
}

/// The next datagram within `limit`, or None.
async fn recv(socket: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(limit, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

fn datagram(tag: u8, seq: u32) -> Vec<u8> {
    let len = 16 + (seq as usize * 37) % 1_400;
    let mut d = vec![tag; len];
    d[..4].copy_from_slice(&seq.to_be_bytes());
    d
}

fn udp_sessions(relay: &Relay, name: &str) -> u64 {
    relay.status(name)["udp_sessions"].as_u64().unwrap()
}

/// Sends `count` datagrams in windows of `window`, checking each answer's
/// order and content; the client tag tells one client's answers from another's.
async fn echo_session(to: SocketAddr, tag: u8, count: u32, window: u32) {
    let socket = client(to).await;
    let mut seq = 0;
    while seq < count {
        let end = (seq + window).min(count);
        for s in seq..end {
            socket.send(&datagram(tag, s)).await.unwrap();
        }
        for s in seq..end {
            let got = recv(&socket, WAIT).await.expect("an echo answer");
            assert_eq!(
                got,
                datagram(tag, s),
                "client {tag}: answer {s} in order and intact"
            );
        }
        seq = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_keeps_order_and_content_per_session() {
    let relay = Relay::start(udp_settings("echo", |_| {}));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 4).await;
    let status = relay.status("echo");
    assert_eq!(status["type"], "udp");
    assert_eq!(relay.status("web")["type"], "tcp");
    let to = relay.service("echo");
    tokio::join!(
        echo_session(to, 1, 2_000, 50),
        echo_session(to, 2, 2_000, 50)
    );
    assert_eq!(udp_sessions(&relay, "echo"), 2);
    let text = relay.metrics_text();
    let label = "service=\"echo\"";
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_datagrams_in_total", label),
        4_000.0
    );
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_datagrams_out_total", label),
        4_000.0
    );
    assert_eq!(metric(&text, "switchboard_tunnel_udp_sessions", label), 2.0);
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_drops_total", label),
        0.0
    );
    // The largest datagram IPv4 carries goes through whole, and an empty one.
    let socket = client(to).await;
    for d in [vec![0xabu8; 65_507], Vec::new()] {
        socket.send(&d).await.unwrap();
        assert_eq!(recv(&socket, WAIT).await.expect("answer"), d);
    }
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_like_requests_in_flight_are_all_answered() {
    let relay = Relay::start(udp_settings("dns", |_| {}));
    let local = resolver().await;
    let agent = agent(&relay, "dns", LocalService::Udp(local.to_string()), 4).await;
    let to = relay.service("dns");
    let clients = (0..4u16).map(|c| async move {
        let socket = client(to).await;
        let mut expected = HashMap::new();
        for i in 0..200u16 {
            let id = c * 1_000 + i;
            let mut request = id.to_be_bytes().to_vec();
            request.extend_from_slice(format!("host-{id}.example.org").as_bytes());
            socket.send(&request).await.unwrap();
            expected.insert(id, answer(&request));
        }
        while !expected.is_empty() {
            let got = recv(&socket, WAIT).await.expect("every request answered");
            let id = u16::from_be_bytes([got[0], got[1]]);
            let want = expected
                .remove(&id)
                .expect("an answer to a request of this client");
            assert_eq!(got, want, "answer of request {id}");
        }
    });
    futures_util::future::join_all(clients).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_a_new_datagram_opens_a_new_one() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_idle_timeout_ms = Some(300)));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 2).await;
    let socket = client(relay.service("echo")).await;
    socket.send(b"one").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"one");
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    wait_until("the idle session to expire", || {
        udp_sessions(&relay, "echo") == 0
    })
    .await;
    let text = relay.metrics_text();
    assert_eq!(
        metric(&text, "switchboard_tunnel_udp_sessions", "service=\"echo\""),
        0.0
    );
    // Its pooled connection was closed; the pool is refilled.
    wait_until("the pool to refill", || relay.idle("echo") >= 2).await;
    socket.send(b"two").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"two");
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    let text = relay.metrics_text();
    let served = metric(
        &text,
        "switchboard_tunnel_clients_served_total",
        "service=\"echo\"",
    );
    assert_eq!(served, 2.0, "two sessions, one after the other");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_max_sessions_are_dropped_and_counted() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_max_sessions = Some(2)));
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 4).await;
    let to = relay.service("echo");
    let (a, b, c) = (client(to).await, client(to).await, client(to).await);
    for s in [&a, &b] {
        s.send(b"hello").await.unwrap();
        assert_eq!(recv(s, WAIT).await.unwrap(), b"hello");
    }
    for _ in 0..3 {
        c.send(b"third").await.unwrap();
    }
    assert_eq!(
        recv(&c, Duration::from_millis(300)).await,
        None,
        "no third session"
    );
    let text = relay.metrics_text();
    let drops = metric(
        &text,
        "switchboard_tunnel_udp_drops_total",
        "reason=\"max_sessions\"",
    );
    assert_eq!(drops, 3.0);
    assert_eq!(udp_sessions(&relay, "echo"), 2);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_and_queued_datagrams_wait_for_an_agent() {
    let relay = Relay::start(udp_settings("echo", |s| s.udp_queue = Some(4)));
    let socket = client(relay.service("echo")).await;
    // No agent yet: the session waits for a pooled connection with its queue.
    for seq in 0..20 {
        socket.send(&datagram(7, seq)).await.unwrap();
    }
    wait_until("the excess to be dropped", || {
        metric(
            &relay.metrics_text(),
            "switchboard_tunnel_udp_drops_total",
            "reason=\"queue_full\"",
        ) == 16.0
    })
    .await;
    assert_eq!(udp_sessions(&relay, "echo"), 1);
    let local = udp_echo_server().await;
    let agent = agent::spawn(agent_settings(
        &relay.agents(),
        "echo",
        LocalService::Udp(local.to_string()),
        2,
    ));
    for seq in 0..4 {
        let got = recv(&socket, WAIT)
            .await
            .expect("a queued datagram answered");
        assert_eq!(got, datagram(7, seq));
    }
    assert_eq!(recv(&socket, Duration::from_millis(200)).await, None);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_over_the_limit_are_dropped_and_counted() {
    let mut s = udp_settings("echo", |s| s.bind = "[::1]:0".into());
    s.host = "127.0.0.1".into();
    let relay = Relay::start(s);
    let local = udp_echo_server().await;
    let agent = agent(&relay, "echo", LocalService::Udp(local.to_string()), 2).await;
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    socket.connect(relay.service("echo")).await.unwrap();
    // IPv6 carries up to 65 527 bytes; the tunnel, 65 507.
    socket.send(&vec![1u8; 65_508]).await.unwrap();
    socket.send(b"small").await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"small");
    let text = relay.metrics_text();
    let drops = metric(
        &text,
        "switchboard_tunnel_udp_drops_total",
        "reason=\"too_large\"",
    );
    assert_eq!(drops, 1.0);
    agent.stop().await.unwrap();
}

/// Runs an agent serving `local` for `service` until it ends by itself.
async fn refused(relay: &Relay, service: &str, local: LocalService) -> (ErrorCode, String) {
    let agent = agent::spawn(agent_settings(&relay.agents(), service, local, 2));
    match tokio::time::timeout(WAIT, agent.join()).await {
        Ok(Err(AgentError::Rejected { code, reason })) => (code, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_the_other_transport_is_refused_clearly() {
    let relay = Relay::start(udp_settings("dns", |_| {}));
    let tcp = echo_server().await;
    let (code, reason) = refused(&relay, "dns", LocalService::Addr(tcp.to_string())).await;
    assert_eq!(code, ErrorCode::WrongTransport);
    assert!(
        reason.contains("UDP service") && reason.contains("--local-udp"),
        "{reason}"
    );
    let (code, reason) = refused(&relay, "web", LocalService::Udp("127.0.0.1:9".into())).await;
    assert_eq!(code, ErrorCode::WrongTransport);
    assert!(
        reason.contains("TCP service") && reason.contains("type = \"udp\""),
        "{reason}"
    );
    let (code, _) = refused(&relay, "dns", LocalService::Echo).await;
    assert_eq!(code, ErrorCode::WrongTransport);
    // Nothing was admitted: no pooled connection of either service.
    assert_eq!(relay.idle("dns") + relay.idle("web"), 0);
}

/// Loads relay settings from `text` (written to a file of its own).
fn load(text: &str) -> Result<Settings, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("switchboard-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).unwrap();
    let env = config::Environment::with_prefix("SWITCHBOARD_UDP_TEST_UNSET");
    let loaded = Settings::load_with_env(Some(Path::new(&path)), &Overrides::default(), env);
    let _ = std::fs::remove_file(&path);
    loaded.map_err(|e| e.to_string())
}

#[test]
fn bad_udp_settings_name_the_key() {
    let service = "[[tunnel.services]]\nname = \"dns\"\nbind = \"127.0.0.1:0\"\ntoken = \"t\"\n";
    let ok = load(&format!("{service}type = \"udp\"\nudp_queue = 8\n")).unwrap();
    let limits = ok.tunnel.services[0].udp_limits();
    assert_eq!(
        (limits.queue, limits.max_sessions, limits.idle_timeout_ms),
        (8, 1_024, 60_000)
    );
    for (extra, key) in [
        ("type = \"sctp\"\n", "tunnel.services.type"),
        ("udp_queue = 8\n", "tunnel.services.udp_queue"),
        (
            "type = \"tcp\"\nudp_idle_timeout_ms = 5\n",
            "tunnel.services.udp_idle_timeout_ms",
        ),
        (
            "type = \"udp\"\nudp_max_sessions = 0\n",
            "tunnel.services.udp_max_sessions",
        ),
        (
            "type = \"udp\"\nudp_queue = 0\n",
            "tunnel.services.udp_queue",
        ),
    ] {
        let error = load(&format!("{service}{extra}")).expect_err(extra);
        assert!(
            error.contains(key),
            "{extra:?}: {error} does not name {key}"
        );
    }
    // The agent: PROXY protocol is TCP-only; one local service only.
    let agent =
        "relay = \"127.0.0.1:1\"\nservice = \"dns\"\ntoken = \"t\"\nlocal_udp = \"127.0.0.1:53\"\n";
    let settings = HostConfig::parse(agent).unwrap().into_settings().unwrap();
    assert_eq!(settings.local, LocalService::Udp("127.0.0.1:53".into()));
    for (extra, key) in [
        ("proxy_protocol = true\n", "proxy_protocol"),
        ("local = \"127.0.0.1:80\"\n", "local_udp"),
        ("echo = true\n", "local_udp"),
    ] {
        let error = HostConfig::parse(&format!("{agent}{extra}"))
            .unwrap()
            .into_settings()
            .expect_err(extra)
            .to_string();
        assert!(
            error.contains(key),
            "{extra:?}: {error} does not name {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_udp_and_records_on_the_wire_and_a_silent_pooled_connection_is_replaced() {
    let mut s = udp_settings("raw", |_| {});
    s.handoff_timeout_ms = 200;
    let relay = Relay::start(s);
    let udp = Transport::Udp;
    let (_control, _control_reader, session) =
        raw_agent_as(&relay, "raw", Role::Control, 0, udp).await;
    // A pooled connection whose agent never answers again.
    let (mut silent, mut silent_reader, _) =
        raw_agent_as(&relay, "raw", Role::Data, session, udp).await;
    wait_until("the pooled connection", || relay.idle("raw") == 1).await;

    let socket = client(relay.service("raw")).await;
    socket.send(b"first").await.unwrap();
    socket.send(b"").await.unwrap();
    let ping = silent_reader.next_within(&mut silent, WAIT, "ping").await;
    assert!(matches!(ping, Ok(Frame::Ping { .. })), "{ping:?}");
    let start = silent_reader.next_within(&mut silent, WAIT, "start").await;
    let Ok(Frame::StartUdp {
        conn,
        client,
        server,
    }) = start
    else {
        panic!("no StartUdp: {start:?}");
    };
    assert_eq!(client, socket.local_addr().unwrap());
    assert_eq!(server, relay.service("raw"));
    // Given up after tunnel.handoff_timeout_ms, before any datagram was sent to it.
    let mut rest = silent_reader.into_leftover();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut rest))
        .await
        .expect("the relay gives up on the silent connection")
        .unwrap();
    assert!(rest.is_empty(), "no datagram before Started: {rest:?}");

    // The next pooled connection gets the same session, its datagrams kept.
    let (mut live, mut live_reader, _) =
        raw_agent_as(&relay, "raw", Role::Data, session, udp).await;
    let Frame::StartUdp { conn: again, .. } = next_event(&mut live, &mut live_reader).await else {
        panic!("no StartUdp on the live connection");
    };
    assert_eq!(again, conn);
    write_frame(&mut live, &Frame::Started { conn })
        .await
        .unwrap();
    let mut wire = live_reader.into_leftover();
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..100 {
        let mut records = DatagramRecords::new(&wire);
        got = records.by_ref().map(|d| d.unwrap().to_vec()).collect();
        if got.len() >= 2 {
            break;
        }
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, live.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "relay closed the session");
        wire.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, vec![b"first".to_vec(), Vec::new()]);
    let mut answer = Vec::new();
    tunnel::encode_datagram(&mut answer, b"one");
    tunnel::encode_datagram(&mut answer, b"two");
    live.write_all(&answer).await.unwrap();
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"one");
    assert_eq!(recv(&socket, WAIT).await.unwrap(), b"two");
    let text = relay.metrics_text();
    assert_eq!(
        metric(
            &text,
            "switchboard_tunnel_handoff_failures_total",
            "no_answer"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_host_processes_serve_a_udp_client() {
    let config = write_temp(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nhost = \"127.0.0.1\"\nport = 0\n\
         [log]\nlevel = \"info\"\n[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n\
         [[tunnel.services]]\nname = \"dns\"\ntype = \"udp\"\nbind = \"127.0.0.1:0\"\n\
         token = \"udp-process-token\"\n",
    );
    let mut relay = Proc::start(&["--config", config.path().to_str().unwrap()]);
    let line = relay.wait_line("tunnel: agents connect to");
    let agents = after(&line, "agents connect to ").to_string();
    assert!(line.contains("(udp)"), "{line}");
    let service: SocketAddr = after(&line, "dns on ").parse().unwrap();
    let admin: SocketAddr = after(&relay.wait_line("admin on http://"), "admin on http://")
        .parse()
        .unwrap();
    let local = resolver().await.to_string();
    let token = write_temp("udp-process-token\n");
    let token_path = token.path().to_str().unwrap().to_string();
    let args = [
        "host",
        "--relay",
        &agents,
        "--service",
        "dns",
        "--token-file",
        &token_path,
    ];
    let mut refused =
        Proc::start(&[&args[..], &["--local-udp", &local, "--proxy-protocol"]].concat());
    assert_eq!(refused.wait_exit().code(), Some(2));
    refused.wait_line("--proxy-protocol");
    let mut host = Proc::start(&[&args[..], &["--local-udp", &local, "--pool", "2"]].concat());
    host.wait_line("serving \"dns\"");
    let socket = client(service).await;
    let request = b"\x00\x07example.org";
    let mut answered = None;
    // The first datagram may come before the agent's pool is in place: retry.
    for _ in 0..50 {
        socket.send(request).await.unwrap();
        answered = recv(&socket, Duration::from_millis(200)).await;
        if answered.is_some() {
            break;
        }
    }
    assert_eq!(
        answered.expect("an answer through two processes"),
        answer(request)
    );
    let body = http_get(admin, "/tunnels").await;
    assert!(body.contains("\"type\":\"udp\""), "{body}");
    assert!(body.contains("\"udp_sessions\":1"), "{body}");
    let metrics = http_get(admin, "/metrics").await;
    let sessions = metric(
        &metrics,
        "switchboard_tunnel_udp_sessions",
        "service=\"dns\"",
    );
    assert_eq!(sessions, 1.0, "{metrics}");
    assert!(host.terminate().success());
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_run_through_tls_agent_connections() {
    let pem = self_signed();
    let mut s = udp_settings("echo", |_| {});
    s.certfile = Some(pem.cert.path().to_path_buf());
    s.keyfile = Some(pem.key.path().to_path_buf());
    let relay = Relay::start(s);
    let local = udp_echo_server().await;
    let mut a = agent_settings(
        &relay.agents(),
        "echo",
        LocalService::Udp(local.to_string()),
        2,
    );
    a.tls = Some(AgentTls::new(Some(pem.cert.path()), "localhost").unwrap());
    let agent = agent::spawn(a);
    wait_until("the pool to fill", || relay.idle("echo") >= 2).await;
    let to = relay.service("echo");
    tokio::join!(echo_session(to, 3, 500, 25), echo_session(to, 4, 500, 25));
    agent.stop().await.unwrap();
}
