//! Proves the edges of UDP services through the tunnel: a TCP agent for a
//! UDP service and a UDP agent for a TCP service refused with a clear error;
//! bad UDP settings naming the key; with a hand-made agent speaking raw
//! frames, the wire format (`StartUdp`, datagram records both ways) and a
//! silent pooled connection replaced; datagrams through TLS agent
//! connections; and, as an operator runs it, a relay process and a
//! `switchboard host --local-udp` process serving a UDP client, `/tunnels`
//! and `/metrics` showing the session, `--local-udp` with `--proxy-protocol`
//! refused.

mod common;
mod tunnel_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fixtures::self_signed;
use common::procs::{after, http_get, write_temp, Proc};
use switchboard::config::{Overrides, Settings};
use switchboard::protocol::tunnel::{self, DatagramRecords, ErrorCode, Frame, Role, Transport};
use switchboard::tunnel::agent::host_config::HostConfig;
use switchboard::tunnel::agent::{self, AgentError, LocalService};
use switchboard::tunnel::framing::write_frame;
use switchboard::tunnel::tls::AgentTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_common::udp::*;
use tunnel_common::*;

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
