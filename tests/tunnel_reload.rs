//! Proves `switchboard host` reloads its services live against a real relay
//! process: a change of the settings file adds a service (its pool fills),
//! removes one (its agent stops, its open client connection is closed) and
//! keeps an unchanged one's open client connection working; a changed
//! service restarts (new control session); SIGHUP reloads too (a changed
//! token file restarts its service); a file that no longer validates (a
//! name given twice, an unreadable token file) is refused naming the key and
//! everything keeps running.

mod common;
mod tunnel_common;

use std::time::{Duration, Instant};

use common::procs::{Proc, RelayProc};
use tokio::net::TcpStream;
use tunnel_common::{round_trip, services_relay_config, WAIT};

/// The agent file: `relay`, then one echo service per (name, pool, token key).
fn agent_file(relay: &str, services: &[(&str, usize, &str)]) -> String {
    let mut text = format!("relay = \"{relay}\"\nheartbeat_interval_ms = 500\n");
    for (name, pool, token) in services {
        text.push_str(&format!(
            "[[services]]\nname = \"{name}\"\n{token}\necho = true\npool = {pool}\n"
        ));
    }
    text
}

/// `/tunnels`: (idle pool, sessions of its agents) of `service`.
async fn status(relay: &RelayProc, service: &str) -> (u64, Vec<u64>) {
    let tunnels = relay.tunnels().await;
    let entry = tunnels["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == service).cloned())
        .unwrap_or_default();
    let sessions = entry["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a["session"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    (entry["pool_idle"].as_u64().unwrap_or(0), sessions)
}

async fn wait_status(relay: &RelayProc, what: &str, cond: impl Fn(u64, &[u64]) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (idle, sessions) = status(relay, what).await;
        if cond(idle, &sessions) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: idle {idle}, sessions {sessions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` to `path` by a rename, as editors do.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_added_removed_restarted_and_kept_on_reload() {
    let relay = RelayProc::start(&services_relay_config(&["a", "b", "c"]));
    let dir = tempfile::tempdir().unwrap();
    let token_a = dir.path().join("a.token");
    std::fs::write(&token_a, "a-token\n").unwrap();
    let a = format!("token_file = \"{}\"", token_a.display());
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        agent_file(
            &relay.agents,
            &[("a", 2, &a), ("b", 2, "token = \"b-token\"")],
        ),
    )
    .unwrap();
    let mut host = Proc::start(&[
        "host",
        "--config",
        file.to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    wait_status(&relay, "a", |idle, _| idle >= 2).await;
    wait_status(&relay, "b", |idle, _| idle >= 2).await;
    let (_, a_sessions) = status(&relay, "a").await;
    let mut on_a = TcpStream::connect(relay.service("a")).await.unwrap();
    let mut on_b = TcpStream::connect(relay.service("b")).await.unwrap();
    assert!(round_trip(&mut on_a, b"a before").await);
    assert!(round_trip(&mut on_b, b"b before").await);

    // File change: b removed, c added, a unchanged.
    replace(
        &file,
        &agent_file(
            &relay.agents,
            &[("a", 2, &a), ("c", 3, "token = \"c-token\"")],
        ),
    );
    host.wait_line("1 agent(s) kept, 0 restarted, 1 started, 1 stopped");
    wait_status(&relay, "c", |idle, _| idle >= 3).await;
    wait_status(&relay, "b", |idle, sessions| {
        idle == 0 && sessions.is_empty()
    })
    .await;
    assert!(
        !round_trip(&mut on_b, b"b after").await,
        "b's client outlived its service"
    );
    assert!(round_trip(&mut on_a, b"a kept its connection").await);
    assert_eq!(status(&relay, "a").await.1, a_sessions, "a was restarted");

    // A file that no longer validates: refused, the key named, all kept.
    replace(
        &file,
        &agent_file(&relay.agents, &[("a", 2, &a), ("a", 1, "token = \"x\"")]),
    );
    let line = host.wait_line("reload refused");
    assert!(line.contains("services[1].name"), "{line}");
    let missing = "token_file = \"/nonexistent/c.token\"";
    replace(
        &file,
        &agent_file(&relay.agents, &[("a", 2, &a), ("c", 3, missing)]),
    );
    let line = host.log.wait_count("reload refused", 2);
    assert!(line.contains("services[1].token_file"), "{line}");
    assert!(round_trip(&mut on_a, b"a still here").await);
    assert!(status(&relay, "c").await.0 >= 3);

    // A changed service restarts: a new control session, its client closed.
    replace(
        &file,
        &agent_file(
            &relay.agents,
            &[("a", 3, &a), ("c", 3, "token = \"c-token\"")],
        ),
    );
    host.wait_line("1 agent(s) kept, 1 restarted, 0 started, 0 stopped");
    wait_status(&relay, "a", |idle, sessions| {
        idle >= 3 && sessions != a_sessions
    })
    .await;
    assert!(!round_trip(&mut on_a, b"a after restart").await);
    let (_, a_sessions) = status(&relay, "a").await;

    // SIGHUP re-reads the token file: a's token changed, so a restarts (and
    // the relay refuses the wrong token: that service ends, c keeps serving).
    std::fs::write(&token_a, "not-a-token\n").unwrap();
    host.signal("HUP");
    host.wait_line("reloading the settings (SIGHUP)");
    host.wait_line("refused service \"a\"");
    wait_status(&relay, "a", |_, sessions| sessions != a_sessions).await;
    let mut on_c = TcpStream::connect(relay.service("c")).await.unwrap();
    assert!(round_trip(&mut on_c, b"c serves").await);
    assert_eq!(
        host.terminate().code(),
        Some(1),
        "the refusal is the exit reason"
    );
}
