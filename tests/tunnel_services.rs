//! Proves one `switchboard host` process serves several services from its
//! settings file's `[[services]]` tables (a local TCP service with the PROXY
//! header, and the built-in echo) through a real relay process, each on its
//! own public port with its own token and pool; a service the relay refuses
//! (wrong token) ends alone, logged at error, while the others keep serving,
//! and the process exits 1 with the reason on SIGTERM; the shipped
//! `config/host/services.toml` parses into one agent per service; and
//! per-service flags next to `[[services]]` exit 2 naming the flag or key.

mod common;
mod tunnel_common;

use std::time::{Duration, Instant};

use common::procs::{write_temp, Proc, RelayProc};
use switchboard::tunnel::agent::host_config::HostConfig;
use switchboard::tunnel::agent::LocalService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tunnel_common::{exchange, services_relay_config, WAIT};

/// A local service that reads a PROXY v2 header, then answers
/// `proxied <n header bytes>` and echoes the rest.
async fn proxy_aware_service() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // v2 header: 12-byte signature, ver/cmd, fam, u16 length.
                let mut fixed = [0u8; 16];
                if stream.read_exact(&mut fixed).await.is_err() {
                    return;
                }
                let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
                let mut rest = vec![0u8; len];
                if stream.read_exact(&mut rest).await.is_err() {
                    return;
                }
                let _ = stream
                    .write_all(format!("proxied {}\n", 16 + len).as_bytes())
                    .await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn tunnels_pool(relay: &RelayProc, service: &str) -> u64 {
    let tunnels = relay.tunnels().await;
    tunnels["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == service))
        .and_then(|s| s["pool_idle"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_process_serves_several_services_and_a_refused_one_ends_alone() {
    let relay = RelayProc::start(&services_relay_config(&["web", "echo", "spare"]));
    let web_local = proxy_aware_service().await;
    let settings = format!(
        "relay = \"{}\"\nheartbeat_interval_ms = 500\n\
         [[services]]\nname = \"web\"\ntoken = \"web-token\"\nlocal = \"{web_local}\"\npool = 3\nproxy_protocol = true\n\
         [[services]]\nname = \"echo\"\ntoken = \"echo-token\"\necho = true\npool = 2\n\
         [[services]]\nname = \"spare\"\ntoken = \"wrong-token\"\necho = true\n",
        relay.agents
    );
    let file = write_temp(&settings);
    let mut host = Proc::start(&[
        "host",
        "--config",
        file.path().to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    host.wait_line("serving \"web\"");
    host.wait_line("serving \"echo\"");
    // The refused service ends by itself; the others are untouched.
    let line = host.wait_line("other agent(s) keep serving");
    assert!(line.contains("ERROR"), "{line}");
    let deadline = Instant::now() + WAIT;
    while tunnels_pool(&relay, "web").await < 3 || tunnels_pool(&relay, "echo").await < 2 {
        assert!(Instant::now() < deadline, "pools never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tunnels_pool(&relay, "spare").await, 0);
    assert_eq!(
        exchange(relay.service("echo"), b"to the echo").await,
        b"to the echo"
    );
    let answer = exchange(relay.service("web"), b"to the web").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("proxied 28\n"), "{text}");
    assert!(text.ends_with("to the web"), "{text}");
    // Still serving after the refusal: one process, one log.
    assert!(host.child.try_wait().unwrap().is_none());
    assert_eq!(
        host.terminate().code(),
        Some(1),
        "the refusal is the exit reason"
    );
    host.wait_line("refused service \"spare\"");
}

#[test]
fn the_shipped_services_example_parses_into_one_agent_per_service() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/host/services.toml");
    let mut file = HostConfig::load(std::path::Path::new(path)).unwrap();
    let token = write_temp("t0ken\n");
    for entry in file.services.iter_mut().flatten() {
        entry.token_file = Some(token.path().to_path_buf());
    }
    let agents = file.into_agents().unwrap();
    let got: Vec<(&str, usize, bool)> = agents
        .iter()
        .map(|a| (a.service.as_str(), a.pool, a.proxy_protocol))
        .collect();
    assert_eq!(got[..2], [("web", 10, true), ("ssh", 2, false)]);
    assert_eq!(got[2].0, "dns");
    assert_eq!(agents[1].local, LocalService::Addr("127.0.0.1:22".into()));
    assert_eq!(agents[2].local, LocalService::Udp("127.0.0.1:53".into()));
}

#[test]
fn per_service_flags_beside_services_exit_2_naming_the_key() {
    let file = write_temp(
        "relay = \"127.0.0.1:9\"\n[[services]]\nname = \"a\"\ntoken = \"t\"\necho = true\n\
         [[services]]\nname = \"a\"\ntoken = \"u\"\necho = true\n",
    );
    let path = file.path().to_str().unwrap();
    for (extra, key) in [
        (vec!["--pool", "3"], "--pool"),
        (vec!["--service", "b"], "--service"),
        (vec![], "services[1].name"),
    ] {
        let mut host = Proc::start(&[&["host", "--config", path][..], &extra[..]].concat());
        assert_eq!(host.wait_exit().code(), Some(2), "{extra:?}");
        host.wait_line(&format!("`{key}`"));
    }
}
