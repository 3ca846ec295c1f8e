//! Proves, with a real relay process and a real `switchboard host` process,
//! that a relay reload never leaves an agent dead for good: a relay file
//! emptied for a moment (as by an editor mid-save) is refused and counted
//! while every service, agent session and client connection stays, and the
//! restored file changes nothing; a service removed on the relay and added
//! back is served again by the same agent process without a signal to it
//! (the agent warns once and retries `unknown service`); and the reason
//! the agent process exits with is a current one, never a refusal a reload
//! has since revived.

mod common;
mod reload_common;
mod tunnel_common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{Proc, RelayProc};
use reload_common::{addr, entry, reloads, replace, sessions};
use tokio::net::TcpStream;
use tunnel_common::{round_trip, services_relay_config, WAIT};

/// The agent file: `relay`, short backoff, one echo service per (name, token line).
fn agent_file(relay: &str, services: &[(&str, &str)]) -> String {
    let mut text = format!(
        "relay = \"{relay}\"\nheartbeat_interval_ms = 500\nbackoff_min_ms = 50\nbackoff_max_ms = 300\n"
    );
    for (name, token) in services {
        text.push_str(&format!(
            "[[services]]\nname = \"{name}\"\n{token}\necho = true\npool = 2\n"
        ));
    }
    text
}

/// Starts `switchboard host --config file`.
fn host(file: &Path) -> Proc {
    Proc::start(&[
        "host",
        "--config",
        file.to_str().unwrap(),
        "--log-level",
        "info",
    ])
}

/// Waits until `name` runs on the relay with at least 2 idle pooled connections.
async fn wait_pool(relay: &RelayProc, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = entry(relay, name).await.unwrap_or_default();
        if now["pool_idle"].as_u64() >= Some(2) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn still_running(proc: &mut Proc) -> bool {
    proc.child.try_wait().unwrap().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_relay_file_is_refused_and_every_agent_stays() {
    let dir = tempfile::tempdir().unwrap();
    let relay_path = dir.path().join("relay.toml");
    let relay_text = services_relay_config(&["a", "b"]);
    std::fs::write(&relay_path, &relay_text).unwrap();
    let mut relay = RelayProc::start_file(&relay_path);
    let agent_path = dir.path().join("agent.toml");
    let services = [("a", "token = \"a-token\""), ("b", "token = \"b-token\"")];
    std::fs::write(&agent_path, agent_file(&relay.agents, &services)).unwrap();
    let mut host = host(&agent_path);
    wait_pool(&relay, "a").await;
    wait_pool(&relay, "b").await;
    let before = (sessions(&relay, "a").await, sessions(&relay, "b").await);
    let mut on_a = TcpStream::connect(relay.service("a")).await.unwrap();
    assert!(round_trip(&mut on_a, b"before").await);

    // `: > relay.toml`, then the file restored 3 s later.
    std::fs::write(&relay_path, "").unwrap();
    let line = relay.proc.wait_line("tunnel reload refused");
    assert!(line.contains("is empty"), "{line}");
    assert!(line.contains("never applied"), "{line}");
    let tunnels = relay.tunnels().await;
    assert_eq!(tunnels["reload"]["failed"], 1, "{tunnels}");
    assert_eq!(tunnels["services"].as_array().map(Vec::len), Some(2));
    assert_eq!(reloads(&relay, "error").await, 1.0);
    // Only comments and blank lines: empty too.
    std::fs::write(&relay_path, "# being saved\n\n").unwrap();
    relay.proc.log.wait_count("is empty", 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(&relay_path, &relay_text).unwrap();
    relay
        .proc
        .wait_line("2 service(s) kept (a, b), 0 restarted, 0 started, 0 stopped");

    assert!(round_trip(&mut on_a, b"after").await, "a's client closed");
    let after = (sessions(&relay, "a").await, sessions(&relay, "b").await);
    assert_eq!(after, before, "an agent reconnected");
    assert!(still_running(&mut host), "the agent process ended");
    assert!(
        !host
            .log
            .seen()
            .iter()
            .any(|l| l.contains("unknown service")),
        "{:?}",
        host.log.seen()
    );
    let tunnels = relay.tunnels().await;
    assert_eq!(tunnels["reload"]["failed"], 2, "{tunnels}");
    assert_eq!(host.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_removed_and_added_back_on_the_relay_is_served_again() {
    let dir = tempfile::tempdir().unwrap();
    let relay_path = dir.path().join("relay.toml");
    std::fs::write(&relay_path, services_relay_config(&["a", "b"])).unwrap();
    let mut relay = RelayProc::start_file(&relay_path);
    let agent_path = dir.path().join("agent.toml");
    let services = [("a", "token = \"a-token\""), ("b", "token = \"b-token\"")];
    std::fs::write(&agent_path, agent_file(&relay.agents, &services)).unwrap();
    let mut host = host(&agent_path);
    wait_pool(&relay, "a").await;
    wait_pool(&relay, "b").await;
    let a_sessions = sessions(&relay, "a").await;

    replace(&relay_path, &services_relay_config(&["a"]));
    relay.proc.wait_line("1 stopped (b)");
    let warning = host.wait_line("does not know the service");
    assert!(warning.contains("\"b\""), "{warning}");
    // Refused several times over (backoff ≤ 300 ms), warned once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(still_running(&mut host), "the agent process ended");

    replace(&relay_path, &services_relay_config(&["a", "b"]));
    relay.proc.wait_line("1 started (b)");
    wait_pool(&relay, "b").await;
    let mut on_b = TcpStream::connect(addr(&relay, "b").await).await.unwrap();
    assert!(round_trip(&mut on_b, b"b is back").await);
    assert_eq!(sessions(&relay, "a").await, a_sessions, "a was touched");
    let warnings = host
        .log
        .seen()
        .iter()
        .filter(|l| l.contains("does not know the service"))
        .count();
    assert_eq!(warnings, 1, "{:?}", host.log.seen());
    assert!(
        !host.log.seen().iter().any(|l| l.contains("reloading")),
        "the agent was reloaded"
    );
    assert_eq!(host.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_reason_is_never_one_a_reload_revived() {
    let dir = tempfile::tempdir().unwrap();
    let relay_token_a = dir.path().join("relay-a.token");
    std::fs::write(&relay_token_a, "a-token\n").unwrap();
    let relay_with = |names: &[&str]| {
        let text = services_relay_config(names);
        // a's token comes from a file, so a SIGHUP can rotate it.
        let inline = "token = \"a-token\"";
        let from_file = format!("token_file = \"{}\"", relay_token_a.display());
        text.replace(inline, &from_file)
    };
    let relay_path = dir.path().join("relay.toml");
    std::fs::write(&relay_path, relay_with(&["a", "b"])).unwrap();
    let mut relay = RelayProc::start_file(&relay_path);
    let agent_token_a = dir.path().join("agent-a.token");
    std::fs::write(&agent_token_a, "a-token\n").unwrap();
    let a = format!("token_file = \"{}\"", agent_token_a.display());
    let agent_path = dir.path().join("agent.toml");
    let services = [("a", a.as_str()), ("b", "token = \"b-token\"")];
    std::fs::write(&agent_path, agent_file(&relay.agents, &services)).unwrap();
    let mut host = host(&agent_path);
    wait_pool(&relay, "a").await;
    wait_pool(&relay, "b").await;

    // The relay's token for a changes: the agent of a ends (wrong token).
    std::fs::write(&relay_token_a, "a-new-token\n").unwrap();
    relay.proc.signal("HUP");
    relay.proc.wait_line("1 restarted (a)");
    let line = host.wait_line("refused service \"a\"");
    assert!(line.contains("wrong token"), "{line}");
    // The agent's token fixed, SIGHUP: a serves again.
    std::fs::write(&agent_token_a, "a-new-token\n").unwrap();
    host.signal("HUP");
    host.wait_line("added: starting it");
    wait_pool(&relay, "a").await;

    // Now b's token changes on the relay (b ends for good), then both
    // services go: a only retries. The reason to exit with is b's.
    let b_changed = relay_with(&["a", "b"]).replace("b-token", "b-new-token");
    replace(&relay_path, &b_changed);
    host.wait_line("refused service \"b\"");
    replace(&relay_path, &relay_with(&[]));
    relay.proc.wait_line("2 stopped (a, b)");
    host.wait_line("does not know the service");
    assert!(still_running(&mut host), "the agent process ended");
    assert_eq!(host.terminate().code(), Some(1));
    // a's end and b's end were logged while the other served; the third
    // such line is the one the process exits with.
    let last = host.log.wait_count("switchboard host: relay refused", 3);
    assert!(last.contains("service \"b\""), "{last}");
    assert!(!last.contains("service \"a\""), "{last}");
}
