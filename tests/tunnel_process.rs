//! Proves the tunnel as an operator runs it: the `switchboard` relay process
//! with a `[tunnel]` config and a `switchboard host --echo` agent process
//! serve a TCP client; `/tunnels` and `/metrics` on the admin listener show
//! the service, the agent and the pool; a wrong token makes the agent exit 1
//! with the reason on stderr; SIGTERM stops both; the shipped host example
//! config parses.

mod common;
mod tunnel_common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::log_lines::LogLines;
use switchboard::tunnel::host_config::HostConfig;
use tunnel_common::{exchange, metric, WAIT};

struct Proc {
    child: Child,
    log: LogLines,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = LogLines::follow(&mut child, WAIT);
        Proc { child, log }
    }

    fn wait_line(&mut self, needle: &str) -> String {
        self.log.wait_line(needle)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .next()
        .unwrap()
}

const RELAY_CONFIG: &str = r#"
[server]
host = "127.0.0.1"
port = 0
[admin]
host = "127.0.0.1"
port = 0
[log]
level = "info"
[tunnel]
host = "127.0.0.1"
port = 0
[[tunnel.services]]
name = "echo"
bind = "127.0.0.1:0"
token = "process-test-token"
"#;

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

async fn get(admin: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_host_processes_serve_a_client() {
    let config = write_temp(RELAY_CONFIG);
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
    let config = write_temp(RELAY_CONFIG);
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
