//! Proves `switchboard host`'s own metrics listener (`metrics_listen`)
//! against a real relay process: `/metrics` labels each agent's series by
//! service and relay, its clients-served counts match the clients sent
//! through each service, connected is 1 and `/health` says so; a UDP
//! service counts its datagrams both ways; a service the relay refuses
//! stays, disconnected, its reason in `/health`; a reload that removes a service
//! removes its series and counts the reload (a refused reload as `error`);
//! `metrics_token` makes requests without the bearer token 401; and a bad
//! `metrics_listen` (file or flag, or an address in use) or a lone
//! `metrics_token` exits 2 naming the key (or the flag it came from).

mod common;
mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::procs::{after, write_temp, Proc, RelayProc, PROC_WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_common::udp::{client, recv, resolver};
use tunnel_common::{metric, services_relay_config, WAIT};

/// `GET path` with an optional bearer token: (status code, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(PROC_WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok());
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status.unwrap_or(0), body.to_string())
}

/// The agent's settings file: one echo service per (name, pool), a token
/// `<name>-token` each (as `services_relay_config` sets on the relay).
fn agent_file(relay: &str, extra: &str, services: &[(&str, usize)]) -> String {
    let mut text = format!(
        "relay = \"{relay}\"\nheartbeat_interval_ms = 500\nmetrics_listen = \"127.0.0.1:0\"\n{extra}"
    );
    for (name, pool) in services {
        text.push_str(&format!(
            "[[services]]\nname = \"{name}\"\ntoken = \"{name}-token\"\necho = true\npool = {pool}\n"
        ));
    }
    text
}

/// The metrics listener's address, from the host's log.
fn metrics_addr(host: &mut Proc) -> SocketAddr {
    let line = host.wait_line("agent metrics on http://");
    after(&line, "agent metrics on http://").parse().unwrap()
}

/// Polls `/metrics` until `cond` holds for its text (bounded by `WAIT`).
async fn wait_metrics(
    addr: SocketAddr,
    token: Option<&str>,
    cond: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, text) = get(addr, "/metrics", token).await;
        assert_eq!(status, 200, "{text}");
        if cond(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never matched:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn series(text: &str, name: &str, service: &str) -> f64 {
    metric(text, name, &format!("service=\"{service}\""))
}

async fn echo_once(to: SocketAddr, message: &[u8]) {
    let mut client = TcpStream::connect(to).await.unwrap();
    client.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, message);
}

fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_service_series_follow_clients_and_reloads() {
    let relay = RelayProc::start(&services_relay_config(&["a", "b"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let token = "metrics-secret";
    let extra = format!("metrics_token = \"{token}\"\n");
    std::fs::write(
        &file,
        agent_file(&relay.agents, &extra, &[("a", 2), ("b", 1)]),
    )
    .unwrap();
    let mut host = Proc::start(&["host", "--config", file.to_str().unwrap()]);
    let addr = metrics_addr(&mut host);
    let t = Some(token);

    let (status, _) = get(addr, "/metrics", None).await;
    assert_eq!(status, 401, "no token");
    assert_eq!(
        get(addr, "/health", Some("wrong")).await.0,
        401,
        "wrong token"
    );

    let connected = "switchboard_agent_connected";
    let idle = "switchboard_agent_idle_connections";
    wait_metrics(addr, t, |m| {
        series(m, connected, "a") == 1.0
            && series(m, connected, "b") == 1.0
            && series(m, idle, "a") == 2.0
            && series(m, idle, "b") == 1.0
    })
    .await;
    for i in 0..3u8 {
        echo_once(relay.service("a"), &[b'a', i]).await;
    }
    echo_once(relay.service("b"), b"b").await;
    let served = "switchboard_agent_clients_served_total";
    let text = wait_metrics(addr, t, |m| series(m, idle, "a") == 2.0).await;
    assert_eq!(series(&text, served, "a"), 3.0, "{text}");
    assert_eq!(series(&text, served, "b"), 1.0, "{text}");
    assert_eq!(series(&text, "switchboard_agent_sessions_total", "a"), 1.0);
    assert_eq!(
        series(&text, "switchboard_agent_local_failures_total", "a"),
        0.0
    );
    let relay_label = format!("relay=\"{}\"", relay.agents);
    assert!(text.contains(&relay_label), "{text}");
    assert!(
        !text.contains("udp_datagrams"),
        "no UDP series for TCP services: {text}"
    );

    let (status, body) = get(addr, "/health", t).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    assert_eq!(health["connected"], 2, "{body}");
    let agents = health["agents"].as_array().unwrap();
    assert!(agents.iter().all(|a| a["connected"] == true), "{body}");

    // b removed by a reload: its series are gone, a's keep counting.
    replace(&file, &agent_file(&relay.agents, &extra, &[("a", 2)]));
    host.wait_line("1 agent(s) kept, 0 restarted, 0 started, 1 stopped");
    let text = wait_metrics(addr, t, |m| !m.contains("service=\"b\"")).await;
    assert_eq!(series(&text, served, "a"), 3.0, "{text}");
    assert_eq!(series(&text, connected, "a"), 1.0, "{text}");
    let reloads = "switchboard_agent_reloads_total";
    assert_eq!(metric(&text, reloads, "result=\"ok\""), 1.0, "{text}");
    let (_, body) = get(addr, "/health", t).await;
    assert!(!body.contains("\"b\""), "{body}");

    // A refused reload is counted as an error; nothing else changes.
    replace(
        &file,
        &agent_file(&relay.agents, &extra, &[("a", 2), ("a", 1)]),
    );
    host.wait_line("reload refused");
    let text = wait_metrics(addr, t, |m| metric(m, reloads, "result=\"error\"") == 1.0).await;
    assert_eq!(series(&text, connected, "a"), 1.0, "{text}");
    assert!(host.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_service_counts_its_datagrams() {
    let config = services_relay_config(&[])
        + "[[tunnel.services]]\nname = \"dns\"\ntype = \"udp\"\nbind = \"127.0.0.1:0\"\n\
           token = \"dns-token\"\n";
    let relay = RelayProc::start(&config);
    let local = resolver().await;
    let file = write_temp(&format!(
        "relay = \"{}\"\nservice = \"dns\"\ntoken = \"dns-token\"\nlocal_udp = \"{local}\"\npool = 1\n",
        relay.agents
    ));
    let mut host = Proc::start(&[
        "host",
        "--config",
        file.path().to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&mut host);
    let connected = "switchboard_agent_connected";
    wait_metrics(addr, None, |m| series(m, connected, "dns") == 1.0).await;
    let socket = client(relay.service("dns")).await;
    let mut answers = 0;
    for i in 0..5u8 {
        let request = [0, i, b'x'];
        // The first datagram may come before the pool is in place: retry.
        for _ in 0..50 {
            socket.send(&request).await.unwrap();
            if recv(&socket, Duration::from_millis(200)).await.is_some() {
                answers += 1;
                break;
            }
        }
    }
    assert_eq!(answers, 5);
    let to_local = "switchboard_agent_udp_datagrams_to_local_total";
    let from_local = "switchboard_agent_udp_datagrams_from_local_total";
    // Every datagram that reached the resolver is answered once: the two
    // counts meet, at 5 or more (a retry may have reached it too).
    let text = wait_metrics(addr, None, |m| {
        let to = series(m, to_local, "dns");
        to >= 5.0 && to == series(m, from_local, "dns")
    })
    .await;
    assert_eq!(
        series(&text, "switchboard_agent_clients_served_total", "dns"),
        1.0
    );
    assert!(host.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_stays_in_health_with_its_reason() {
    let relay = RelayProc::start(&services_relay_config(&["a", "b"]));
    let text = agent_file(&relay.agents, "", &[("a", 1), ("b", 1)])
        .replace("token = \"b-token\"", "token = \"wrong\"");
    let file = write_temp(&text);
    let mut host = Proc::start(&["host", "--config", file.path().to_str().unwrap()]);
    let addr = metrics_addr(&mut host);
    host.wait_line("refused service \"b\"");
    // The refusal reaches the table once the process has seen the agent end.
    let deadline = Instant::now() + WAIT;
    let (health, b, body) = loop {
        let (status, body) = get(addr, "/health", None).await;
        assert_eq!(status, 200, "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        let b = health["agents"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["service"] == "b").cloned())
            .unwrap_or_default();
        if !b["refused"].is_null() || Instant::now() > deadline {
            break (health, b, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health["status"], "degraded", "{body}");
    assert_eq!(b["connected"], false, "{body}");
    assert!(
        b["refused"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let text = wait_metrics(addr, None, |m| {
        series(m, "switchboard_agent_connected", "a") == 1.0
    })
    .await;
    assert_eq!(
        series(&text, "switchboard_agent_connected", "b"),
        0.0,
        "{text}"
    );
    assert!(text.contains("service=\"b\""), "b's series stay: {text}");
    assert_eq!(
        host.terminate().code(),
        Some(1),
        "the refusal is the exit reason"
    );
}

#[test]
fn bad_metrics_settings_exit_2_naming_the_key() {
    let base = "relay = \"127.0.0.1:9\"\nservice = \"a\"\ntoken = \"t\"\necho = true\n";
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [(String, Vec<&str>, &str); 5] = [
        (
            format!("{base}metrics_listen = \"localhost\"\n"),
            vec![],
            "metrics_listen",
        ),
        (
            base.to_string(),
            vec!["--metrics-listen", "nowhere:x"],
            "--metrics-listen",
        ),
        (
            base.to_string(),
            vec!["--metrics-listen", &taken],
            "--metrics-listen",
        ),
        (
            format!("{base}metrics_token = \"secret\"\n"),
            vec![],
            "metrics_token",
        ),
        (
            format!("{base}metrics_listen = \"127.0.0.1:0\"\nmetrics_token = \"\"\n"),
            vec![],
            "metrics_token",
        ),
    ];
    for (text, flags, key) in cases {
        let file = write_temp(&text);
        let args = [
            &["host", "--config", file.path().to_str().unwrap()][..],
            &flags,
        ]
        .concat();
        let mut host = Proc::start(&args);
        assert_eq!(host.wait_exit().code(), Some(2), "{text} {flags:?}");
        host.wait_line(&format!("`{key}`"));
    }
}
