//! Proves the `switchboard` binary as an operator runs it: the startup line
//! names the listen addresses, session log lines carry the UUID, bad input is
//! logged, SIGTERM and SIGINT close every session with 1001 and exit promptly,
//! `--log-level` beats RUST_LOG, an invalid config exits 2 naming the key, a
//! port in use is named with its listener, and the relay's TLS files are
//! checked before the tunnel listens.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::log_lines::LogLines;
use common::*;

struct Proc {
    child: Child,
    log: LogLines,
}

impl Proc {
    fn start(config: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, tempfile::NamedTempFile) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .arg("--config")
            .arg(file.path())
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let log = LogLines::follow(&mut child, WAIT);
        (Proc { child, log }, file)
    }

    /// Waits (≤ 5 s) for a log line containing `needle` and returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        self.log.wait_line(needle)
    }

    /// Parses the startup line: (ws url, admin address).
    fn addresses(&mut self) -> (String, std::net::SocketAddr) {
        let line = self.wait_line("relay listening on");
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let admin = line
            .split("admin on http://")
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (url, admin)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit within `limit`; returns the exit code.
    fn exit_within(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
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

const CONFIG: &str = r#"
[server]
host = "127.0.0.1"
port = 0
[admin]
port = 0
[log]
level = "info"
"#;

async fn shutdown_closes_sessions_with_1001(signal: &str) {
    let (mut proc, _file) = Proc::start(CONFIG, &[], &[]);
    let (url, admin) = proc.addresses();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let mut a = client(&url, "peer-A", UUID_A).await;
    let mut idle = connect(&url).await;
    let line = proc.wait_line("registered as \"peer-A\"");
    assert!(
        line.contains(UUID_A),
        "session lines carry the uuid: {line}"
    );
    assert!(
        line.contains("from 127.0.0.1:") && !line.contains("Some("),
        "the peer address is printed plainly: {line}"
    );
    assert_eq!(http_get(admin, "/health", None).await.0, 200);

    let started = Instant::now();
    proc.signal(signal);
    assert_eq!(expect_close(&mut a).await.0, 1001);
    assert_eq!(expect_close(&mut idle).await.0, 1001);
    assert_eq!(proc.exit_within(Duration::from_secs(5)), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    proc.wait_line(&format!("received {signal}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_with_1001_and_exits() {
    shutdown_closes_sessions_with_1001("SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_every_session_with_1001_and_exits() {
    shutdown_closes_sessions_with_1001("SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_logged_and_others_keep_working() {
    let (mut proc, _file) = Proc::start(CONFIG, &[], &[]);
    let (url, _) = proc.addresses();
    let mut bad = connect(&url).await;
    send(&mut bad, "[1, 2]").await;
    assert_eq!(expect_close(&mut bad).await.0, 4000);
    proc.wait_line("undecodable frame (frame is JSON but not an object); closing with 4000");
    let mut big = client(&url, "big", UUID_C).await;
    send(&mut big, "x".repeat(2 * 1024 * 1024)).await;
    assert_eq!(expect_close(&mut big).await.0, 4003);
    let line = proc.wait_line("larger than max_message_bytes");
    assert!(line.contains(UUID_C), "{line}");
    assert_still_serving(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_flag_beats_rust_log() {
    let quiet = CONFIG.replace("level = \"info\"", "level = \"error\"");
    let (mut proc, _file) =
        Proc::start(&quiet, &["--log-level", "debug"], &[("RUST_LOG", "error")]);
    proc.wait_line("relay listening on");
    proc.wait_line("DEBUG");
}

#[test]
fn cli_host_and_port_flags_override_the_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut proc, _file) = Proc::start(
        CONFIG,
        &["--host", "127.0.0.1", "--port", &port.to_string()],
        &[],
    );
    let (url, _) = proc.addresses();
    assert_eq!(url, format!("ws://127.0.0.1:{port}"));
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let (mut proc, _file) = Proc::start("[server]\nport = \"eighty\"\n", &[], &[]);
    assert_eq!(proc.exit_within(WAIT), 2);
    proc.wait_line("server.port");
}

/// A setting that only fails when it is used (a tokens file whose line has
/// no token) is still a configuration error: exit 2 naming the key, as for
/// one the loader refuses.
#[test]
fn a_tokens_file_that_does_not_parse_exits_2_naming_the_key() {
    let mut tokens = tempfile::NamedTempFile::new().unwrap();
    tokens.write_all(b"alice\n").unwrap();
    let config = format!(
        "{CONFIG}\n[auth]\nmethod = \"token\"\ntokens_file = \"{}\"\n",
        tokens.path().display()
    );
    let (mut proc, _file) = Proc::start(&config, &[], &[]);
    assert_eq!(proc.exit_within(WAIT), 2);
    proc.wait_line("auth.tokens_file");
}

/// A port already in use: the error names the listener and its address,
/// for the public, the admin and the tunnel agents' listener alike.
#[test]
fn a_port_in_use_is_named_with_its_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            format!("[server]\nhost = \"127.0.0.1\"\nport = {port}\n[admin]\nenabled = false\n"),
            format!("public listener 127.0.0.1:{port}"),
        ),
        (
            format!(
                "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nhost = \"127.0.0.1\"\nport = {port}\n"
            ),
            format!("admin listener 127.0.0.1:{port}"),
        ),
        (
            format!(
                "{CONFIG}\n[tunnel]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 [[tunnel.services]]\nname = \"web\"\ntoken = \"{}\"\nbind = \"127.0.0.1:0\"\n",
                "t".repeat(32)
            ),
            format!("tunnel agents listener 127.0.0.1:{port}"),
        ),
    ];
    for (config, named) in cases {
        let (mut proc, _file) = Proc::start(&config, &[], &[]);
        assert_eq!(proc.exit_within(WAIT), 1, "{named}");
        proc.wait_line(&named);
    }
    drop(taken);
}

/// The relay's TLS files are loaded before anything listens: with a bad
/// certificate and a tunnel configured, the process exits 1 naming TLS and
/// the tunnel never announced its listeners.
#[test]
fn a_bad_certificate_stops_the_start_before_the_tunnel_listens() {
    let mut cert = tempfile::NamedTempFile::new().unwrap();
    cert.write_all(b"not a certificate\n").unwrap();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\ncertfile = \"{0}\"\nkeyfile = \"{0}\"\n\
         [admin]\nenabled = false\n[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n\
         [[tunnel.services]]\nname = \"web\"\ntoken = \"{1}\"\nbind = \"127.0.0.1:0\"\n",
        cert.path().display(),
        "t".repeat(32)
    );
    let (mut proc, _file) = Proc::start(&config, &["--log-level", "info"], &[]);
    assert_eq!(proc.exit_within(WAIT), 1);
    proc.wait_line("TLS setup failed");
    assert!(
        !proc
            .log
            .seen()
            .iter()
            .any(|l| l.contains("agents connect to")),
        "the tunnel started before the relay's TLS files were checked: {:?}",
        proc.log.seen()
    );
}
