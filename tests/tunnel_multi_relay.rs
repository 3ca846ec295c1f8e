//! Proves that one `switchboard host` given several `--relay` nodes keeps a
//! pool on each: the service's public port on every node serves clients, and
//! when one node goes away the others keep serving while the agent runs on;
//! a node named twice is refused with exit 2.

mod common;
mod tunnel_common;

use std::time::{Duration, Instant};

use common::procs::{write_temp, Proc, RelayProc};
use tunnel_common::{echo_relay_config, exchange, WAIT};

/// Waits until `relay`'s pool for "echo" holds `want` idle connections.
async fn pool_filled(relay: &RelayProc, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let tunnels = relay.tunnels().await;
        let idle = tunnels["services"][0]["pool_idle"].as_u64().unwrap_or(0);
        if idle >= want {
            return;
        }
        assert!(Instant::now() < deadline, "pool never filled: {tunnels}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_serves_the_port_of_every_node_and_outlives_one() {
    let mut a = RelayProc::start(&echo_relay_config("multi-relay-token"));
    let b = RelayProc::start(&echo_relay_config("multi-relay-token"));
    let token = write_temp("multi-relay-token\n");
    let mut host = Proc::start(&[
        "host",
        "--relay",
        &a.agents,
        "--relay",
        &b.agents,
        "--service",
        "echo",
        "--token-file",
        token.path().to_str().unwrap(),
        "--echo",
        "--pool",
        "2",
        "--log-level",
        "info",
    ]);
    pool_filled(&a, 2).await;
    pool_filled(&b, 2).await;
    assert_eq!(
        exchange(a.service("echo"), b"via node A").await,
        b"via node A"
    );
    assert_eq!(
        exchange(b.service("echo"), b"via node B").await,
        b"via node B"
    );

    assert!(a.proc.terminate().success());
    for round in 0..3 {
        let payload = format!("node B after A went away, round {round}");
        assert_eq!(
            exchange(b.service("echo"), payload.as_bytes()).await,
            payload.as_bytes()
        );
    }
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the agent exited when one of its relays went away"
    );
    assert!(host.terminate().success());
}

#[test]
fn a_node_named_twice_is_refused() {
    let token = write_temp("multi-relay-token\n");
    let mut host = Proc::start(&[
        "host",
        "--relay",
        "127.0.0.1:7000",
        "--relay",
        "127.0.0.1:7000",
        "--service",
        "echo",
        "--token-file",
        token.path().to_str().unwrap(),
        "--echo",
    ]);
    assert_eq!(host.wait_exit().code(), Some(2));
    host.wait_line("127.0.0.1:7000 is given twice");
}
