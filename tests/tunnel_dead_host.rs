//! Proves a host that freezes (SIGSTOP on a real `switchboard host` process,
//! as when its machine loses power) costs the tunnel's clients nothing:
//! clients that speak first and clients that wait for a greeting are served
//! promptly by a live agent of the service, over plain TCP and TLS alike,
//! with every failed hand-off logged at warn and counted; and when a frozen
//! agent (or relay) is declared dead, every connection it carried is closed
//! on the client side, `/tunnels` shows none active, no socket lingers in
//! CLOSE-WAIT, and the freed slots serve new clients at `max_clients`.

mod common;
mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixtures::{self_signed, Pem};
use common::procs::{write_temp, Proc, RelayProc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_common::{metric, WAIT};

const TOKEN: &str = "dead-host-token";
/// What "promptly" means here: well under the 5 s the hand-off used to wait.
const PROMPT: Duration = Duration::from_secs(2);

/// A relay process with one service `web`; `tunnel` adds `[tunnel]` keys.
fn relay(tunnel: &str, tls: Option<&Pem>) -> RelayProc {
    let tls = tls
        .map(|p| {
            format!(
                "certfile = {:?}\nkeyfile = {:?}\n",
                p.cert.path(),
                p.key.path()
            )
        })
        .unwrap_or_default();
    RelayProc::start(&format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nhost = \"127.0.0.1\"\nport = 0\n\
         [log]\nlevel = \"info\"\n[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n{tunnel}\n{tls}\
         [[tunnel.services]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    ))
}

/// A `switchboard host` process for `web`; `settings` are extra lines of its file.
struct Host {
    proc: Proc,
    _files: Vec<tempfile::NamedTempFile>,
}

fn host(relay: &RelayProc, local: Option<SocketAddr>, pool: usize, tls: Option<&Pem>) -> Host {
    host_with(relay, local, pool, tls, "")
}

fn host_with(
    relay: &RelayProc,
    local: Option<SocketAddr>,
    pool: usize,
    tls: Option<&Pem>,
    settings: &str,
) -> Host {
    let service = match local {
        Some(addr) => format!("local = \"{addr}\""),
        None => "echo = true".into(),
    };
    let tls = tls
        .map(|p| {
            format!(
                "tls = true\ntls_ca_file = {:?}\ntls_server_name = \"localhost\"",
                p.cert.path()
            )
        })
        .unwrap_or_default();
    let file = write_temp(&format!(
        "relay = \"{}\"\nservice = \"web\"\ntoken = \"{TOKEN}\"\n{service}\npool = {pool}\n{tls}\n{settings}\n",
        relay.agents
    ));
    let mut proc = Proc::start(&[
        "host",
        "--config",
        file.path().to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    proc.wait_line("serving \"web\"");
    Host {
        proc,
        _files: vec![file],
    }
}

/// Waits until `/tunnels` shows `web` with `field` equal to `value`.
async fn wait_web(relay: &RelayProc, field: &str, value: u64) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = relay.tunnels().await;
        let web = status["services"][0].clone();
        if web[field] == value {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{field} never became {value}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A local service that greets with `hello\n`, answers each `GET n` line
/// with `got n\n`, and closes after the client's FIN.
async fn greeting_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(b"hello\n").await?;
                let mut request = Vec::new();
                stream.read_to_end(&mut request).await?;
                for line in String::from_utf8_lossy(&request).lines() {
                    let n = line.strip_prefix("GET ").unwrap_or("?");
                    stream.write_all(format!("got {n}\n").as_bytes()).await?;
                }
                stream.shutdown().await
            });
        }
    });
    addr
}

/// What a client got and how long it took.
#[derive(Debug)]
struct Outcome {
    got: String,
    took: Duration,
}

/// Speaks first: `GET n\n`, FIN, then reads to the end (bounded by [`WAIT`]).
async fn speak_first(addr: SocketAddr, n: usize) -> Outcome {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {n}\n").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
    Outcome {
        got: String::from_utf8_lossy(&got).into_owned(),
        took: began.elapsed(),
    }
}

/// Waits for the greeting (timed), then asks `GET n` and reads to the end.
async fn wait_greeting(addr: SocketAddr, n: usize) -> Outcome {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 6];
    if tokio::time::timeout(WAIT, stream.read_exact(&mut greeting))
        .await
        .is_err()
    {
        return Outcome {
            got: String::new(),
            took: began.elapsed(),
        };
    }
    let took = began.elapsed();
    stream
        .write_all(format!("GET {n}\n").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    let got = [&greeting[..], &rest].concat();
    Outcome {
        got: String::from_utf8_lossy(&got).into_owned(),
        took,
    }
}

/// `count` clients of each kind at once; panics unless each got its answer within [`PROMPT`].
async fn clients_served_promptly(addr: SocketAddr, count: usize, what: &str) {
    let mut tasks = Vec::new();
    for n in 0..count {
        tasks.push(tokio::spawn(speak_first(addr, n)));
        tasks.push(tokio::spawn(wait_greeting(addr, count + n)));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap();
    eprintln!("{what}: slowest client served after {slowest:?}");
    for (i, outcome) in outcomes.iter().enumerate() {
        let n = if i % 2 == 0 { i / 2 } else { count + i / 2 };
        assert_eq!(
            outcome.got,
            format!("hello\ngot {n}\n"),
            "{what}: client {i}"
        );
        assert!(outcome.took <= PROMPT, "{what}: client {i}: {outcome:?}");
    }
}

/// Failed hand-offs so far, all reasons.
async fn handoff_failures(relay: &RelayProc) -> f64 {
    let metrics = relay.metrics().await;
    metric(&metrics, "switchboard_tunnel_handoff_failures_total", "web")
}

/// Scenario 4: agent A (pool 4) frozen, then agent B (pool 4) connects;
/// clients are served by B at once: as many as B holds without a single
/// hand-off to A (B's connections, heard from since A froze, come first),
/// then twice as many (some reach A's, fail, and go to B).
async fn frozen_agent_then_a_live_one(tls: Option<&Pem>) {
    let relay = relay("", tls);
    let local = greeting_service().await;
    let a = host(&relay, Some(local), 4, tls);
    wait_web(&relay, "pool_idle", 4).await;
    a.proc.signal("STOP");
    let _b = host(&relay, Some(local), 4, tls);
    wait_web(&relay, "pool_idle", 8).await;
    clients_served_promptly(relay.service("web"), 2, "frozen A, live B").await;
    assert_eq!(handoff_failures(&relay).await, 0.0, "a client went to A");
    wait_web(&relay, "pool_idle", 8).await;
    clients_served_promptly(relay.service("web"), 4, "frozen A, B busy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agents_pool_is_passed_over_for_a_live_agent() {
    frozen_agent_then_a_live_one(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agents_pool_is_passed_over_for_a_live_agent_over_tls() {
    let pem = self_signed();
    frozen_agent_then_a_live_one(Some(&pem)).await;
}

/// Clients handed to a frozen agent's pooled connections (the only ones
/// there) are handed again, with the bytes they sent, to an agent that
/// connects a moment later; each failed hand-off is logged and counted.
async fn hand_off_retried_on_a_live_agent(tls: Option<&Pem>) {
    let mut relay = relay("", tls);
    let local = greeting_service().await;
    let a = host(&relay, Some(local), 2, tls);
    wait_web(&relay, "pool_idle", 2).await;
    a.proc.signal("STOP");
    let service = relay.service("web");
    let clients = tokio::spawn(clients_served_promptly(service, 1, "only A, then B"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _b = host(&relay, Some(local), 4, tls);
    clients.await.unwrap();
    let line = relay.proc.wait_line("hand-off");
    assert!(line.contains("WARN"), "{line}");
    assert!(handoff_failures(&relay).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_a_frozen_agent_is_retried_with_the_clients_bytes() {
    hand_off_retried_on_a_live_agent(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_a_frozen_agent_is_retried_over_tls_too() {
    let pem = self_signed();
    hand_off_retried_on_a_live_agent(Some(&pem)).await;
}

/// Sockets of `port` in TCP state `state` (hex, as in /proc/net/tcp:
/// 08 CLOSE-WAIT, 05 FIN-WAIT-2), on the local or the remote side.
fn sockets_in_state(port: u16, state: &str, local_side: bool) -> usize {
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let side = if local_side { fields[1] } else { fields[2] };
            side.ends_with(&format!(":{port}")) && fields[3] == state
        })
        .count()
}

/// Established sockets whose local (or remote) port is `port`, from
/// `/proc/net/tcp{,6}`: (local and remote address, active timer).
fn established(port: u16, local_side: bool) -> Vec<(String, String)> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let side = if local_side { f[1] } else { f[2] };
            let timer = f[5].split(':').next().unwrap_or_default().to_string();
            (side.ends_with(&port) && f[3] == "01").then(|| (format!("{}-{}", f[1], f[2]), timer))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_connections_run_tcp_keepalive_on_both_ends() {
    let relay = relay("", None);
    let _a = host(&relay, None, 2, None);
    wait_web(&relay, "pool_idle", 2).await;
    let port = relay.agents.parse::<SocketAddr>().unwrap().port();
    // Control + 2 pooled connections, seen from the relay and from the
    // agent. Between heartbeats an idle socket's timer is 02 (keepalive)
    // when keepalive is on, none (00) when it is off.
    for local_side in [true, false] {
        let mut keepalive = std::collections::BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let sockets = established(port, local_side);
            assert_eq!(sockets.len(), 3, "{sockets:?}");
            keepalive.extend(
                sockets
                    .iter()
                    .filter(|(_, t)| t == "02")
                    .map(|(s, _)| s.clone()),
            );
            if keepalive.len() == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "no keepalive timer: {sockets:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Opens an idle client session through the echo agent (one exchange).
async fn idle_session(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo through the tunnel")
        .unwrap();
    stream
}

/// Whether the relay ends `stream` (EOF or reset) within `limit`.
async fn ended_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const FAST_HEARTBEAT: &str = "heartbeat_interval_ms = 300\nheartbeat_timeout_ms = 900";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_connections_are_closed_and_their_slots_freed() {
    let relay = relay(&format!("{FAST_HEARTBEAT}\nmax_clients = 3"), None);
    let a = host_with(&relay, None, 3, None, FAST_HEARTBEAT);
    wait_web(&relay, "pool_idle", 3).await;
    let service = relay.service("web");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(idle_session(service).await);
    }
    wait_web(&relay, "active", 3).await;
    a.proc.signal("STOP");
    let frozen = Instant::now();
    // One client gives up at once; the other two wait for the relay.
    drop(sessions.remove(0));
    for (i, stream) in sessions.iter_mut().enumerate() {
        assert!(
            ended_within(stream, Duration::from_secs(3)).await,
            "client {i} was never told its agent is gone"
        );
    }
    eprintln!("clients closed {:?} after the freeze", frozen.elapsed());
    let status = wait_web(&relay, "active", 0).await;
    assert_eq!(status["active"], 0, "{status}");
    assert!(status["services"][0]["agents"]
        .as_array()
        .unwrap()
        .is_empty());
    drop(sessions);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sockets_in_state(service.port(), "08", true),
        0,
        "CLOSE-WAIT"
    );
    assert_eq!(
        sockets_in_state(service.port(), "05", false),
        0,
        "FIN-WAIT-2"
    );
    // Every slot of max_clients is free again: three new clients at once.
    let _b = host(&relay, None, 3, None);
    wait_web(&relay, "pool_idle", 3).await;
    let mut fresh = Vec::new();
    for _ in 0..3 {
        fresh.push(idle_session(service).await);
    }
    wait_web(&relay, "active", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relays_connections_are_closed_by_the_agent() {
    // The local service records when the agent closes each connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = closed.send(Instant::now());
            });
        }
    });
    let relay = relay(FAST_HEARTBEAT, None);
    let _a = host_with(&relay, Some(local), 2, None, FAST_HEARTBEAT);
    wait_web(&relay, "pool_idle", 2).await;
    let service = relay.service("web");
    let _sessions = [idle_session(service).await, idle_session(service).await];
    relay.proc.signal("STOP");
    let frozen = Instant::now();
    for i in 0..2 {
        let closed = tokio::time::timeout(Duration::from_secs(3), closed_rx.recv()).await;
        assert!(
            matches!(closed, Ok(Some(_))),
            "local connection {i} still open after the relay went silent"
        );
    }
    eprintln!(
        "local connections closed {:?} after the freeze",
        frozen.elapsed()
    );
}
