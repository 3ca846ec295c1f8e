//! Proves the tunnel as an operator runs it: the `switchboard` relay process
//! with a `[tunnel]` config and a `switchboard host --echo` agent process
//! serve a TCP client; `/tunnels` and `/metrics` on the admin listener show
//! the service, the agent and the pool; a wrong token makes the agent exit 1
//! with the reason on stderr; so does an agent whose TLS setting differs
//! from the relay's, each side logging what to change; SIGTERM stops both;
//! the shipped host example config parses; a bad value exits 2 naming the
//! flag it came from (`--pool`) or the file key (`pool`).

mod common;
mod tunnel_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixtures::self_signed;
use common::procs::{after, http_get as get, write_temp, Proc, RelayProc};
use switchboard::tunnel::agent::host_config::HostConfig;
use tunnel_common::{echo_relay_config, exchange, metric, WAIT};

/// The relay's configuration: one `echo` service.
fn relay_config() -> String {
    echo_relay_config("process-test-token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_host_processes_serve_a_client() {
    let config = write_temp(&relay_config());
    let mut relay = Proc::start(&["--config", config.path().to_str().unwrap()]);
    let line = relay.wait_line("tunnel: agents connect to");
    let agents = after(&line, "agents connect to ").to_string();
    let service: SocketAddr = after(&line, "echo on ").parse().unwrap();
    let admin: SocketAddr = after(&relay.wait_line("admin on http://"), "admin on http://")
        .parse()
        .unwrap();

    let token = write_temp("process-test-token\n");
    let token_path = token.path().to_str().unwrap().to_string();
    let args = [
        "host",
        "--relay",
        &agents,
        "--service",
        "echo",
        "--token-file",
        &token_path,
    ];
    let mut host =
        Proc::start(&[&args[..], &["--echo", "--pool", "3", "--log-level", "info"]].concat());
    host.wait_line("serving \"echo\"");
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get(admin, "/tunnels").await;
        if body.contains("\"pool_idle\":3") {
            assert!(body.contains("\"name\":\"echo\""), "{body}");
            assert!(body.contains("\"session\""), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "pool never filled: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        exchange(service, b"through two processes").await,
        b"through two processes"
    );
    let metrics = get(admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "switchboard_tunnel_clients_served_total", "echo"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "switchboard_tunnel_agents", ""),
        1.0,
        "{metrics}"
    );

    assert!(host.terminate().success());
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_a_wrong_token_exits_with_the_reason() {
    let config = write_temp(&relay_config());
    let mut relay = Proc::start(&["--config", config.path().to_str().unwrap()]);
    let line = relay.wait_line("tunnel: agents connect to");
    let agents = after(&line, "agents connect to ").to_string();
    let token = write_temp("not-the-token\n");
    let token_path = token.path().to_str().unwrap().to_string();
    let mut host = Proc::start(&[
        "host",
        "--relay",
        &agents,
        "--service",
        "echo",
        "--token-file",
        &token_path,
        "--echo",
    ]);
    let status = host.wait_exit();
    assert_eq!(status.code(), Some(1));
    host.wait_line("authentication failed for service \"echo\"");
    relay.wait_line("authentication failed for service \"echo\"");
    assert!(relay.terminate().success());
}

#[test]
fn host_without_required_flags_exits_2_naming_the_key() {
    let mut host = Proc::start(&["host", "--service", "echo", "--echo"]);
    assert_eq!(host.wait_exit().code(), Some(2));
    host.wait_line("relay");
}

#[test]
fn a_bad_flag_value_names_the_flag_and_a_bad_file_value_the_key() {
    let token = write_temp("t0ken\n");
    let token = token.path().to_str().unwrap();
    let base = [
        "host",
        "--relay",
        "127.0.0.1:1",
        "--service",
        "a",
        "--token-file",
        token,
    ];
    for (extra, names) in [
        (&["--local", "127.0.0.1:1", "--pool", "0"][..], "`--pool`"),
        (&["--local", "bogus"][..], "`--local`"),
        (
            &["--echo", "--http-proxy", "socks5://x:1"][..],
            "`--http-proxy`",
        ),
        (
            &["--echo", "--metrics-listen", "bogus"][..],
            "`--metrics-listen`",
        ),
    ] {
        let mut host = Proc::start(&[&base[..], extra].concat());
        assert_eq!(host.wait_exit().code(), Some(2), "{extra:?}");
        host.wait_line(names);
    }
    let file = write_temp(&format!(
        "relay = \"127.0.0.1:1\"\nservice = \"a\"\ntoken_file = \"{token}\"\necho = true\npool = 0\n"
    ));
    let mut host = Proc::start(&["host", "--config", file.path().to_str().unwrap()]);
    assert_eq!(host.wait_exit().code(), Some(2));
    host.wait_line("`pool`");
}

#[test]
fn shipped_host_config_parses_and_flags_override_it() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/host/agent.toml");
    let file = HostConfig::load(std::path::Path::new(path)).unwrap();
    assert_eq!(file.service.as_deref(), Some("web"));
    let token = write_temp("t0ken\n");
    let flags = HostConfig {
        token_file: Some(token.path().to_path_buf()),
        pool: Some(4),
        ..HostConfig::default()
    };
    let settings = file.merge(flags).into_settings().unwrap();
    assert_eq!(settings.pool, 4);
    assert_eq!(settings.token.expose(), "t0ken");
    assert_eq!(settings.relay, "relay.example.org:8702");
    let unknown = write_temp("relay = \"x:1\"\npoool = 3\n");
    let error = HostConfig::load(unknown.path()).unwrap_err().to_string();
    assert!(error.contains("poool"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_mismatch_stops_the_host_saying_what_to_change() {
    let pem = self_signed();
    let (cert, key) = (pem.cert.path(), pem.key.path());
    // certfile/keyfile belong to [tunnel], which relay_config() opens before its service.
    let plain_relay = relay_config();
    let tls_relay = plain_relay.replace(
        "[tunnel]\n",
        &format!("[tunnel]\ncertfile = {cert:?}\nkeyfile = {key:?}\n"),
    );
    let token_file = write_temp("process-test-token\n");
    let token = token_file.path().to_str().unwrap().to_string();
    let cases = [
        (
            tls_relay.as_str(),
            vec![],
            "the relay requires TLS: start the agent with --tls",
            "connected without TLS",
        ),
        (
            plain_relay.as_str(),
            vec![
                "--tls",
                "--tls-ca-file",
                cert.to_str().unwrap(),
                "--tls-server-name",
                "localhost",
            ],
            "this agent speaks TLS but the relay's tunnel has no certificate",
            "speaks TLS but the relay's tunnel has no certificate",
        ),
    ];
    for (config, tls_flags, host_says, relay_says) in cases {
        let mut relay = RelayProc::start(config);
        let args = [
            "host",
            "--relay",
            &relay.agents,
            "--service",
            "echo",
            "--token-file",
            &token,
            "--echo",
        ];
        let mut host = Proc::start(&[&args[..], &tls_flags[..]].concat());
        assert_eq!(host.wait_exit().code(), Some(1), "{host_says}");
        host.wait_line(host_says);
        relay.proc.wait_line(relay_says);
        assert!(relay.proc.terminate().success());
    }
}
