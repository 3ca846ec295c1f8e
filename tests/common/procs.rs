//! Real `switchboard` processes for tests: started with arguments, stderr
//! followed line by line, signalled (SIGSTOP, SIGCONT, SIGTERM), waited for
//! (bounded); killed on drop, after a SIGCONT in case a test froze them.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::log_lines::LogLines;

/// How long a process wait may take.
pub const PROC_WAIT: Duration = Duration::from_secs(10);

/// A running `switchboard` process.
pub struct Proc {
    pub child: Child,
    pub log: LogLines,
}

impl Proc {
    /// Starts `switchboard ARGS` with stderr piped (RUST_LOG unset).
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_env(args, &[])
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = LogLines::follow(&mut child, PROC_WAIT);
        Proc { child, log }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        self.log.wait_line(needle)
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROC_WAIT;
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
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The word after `marker` in `line` (up to `;`, `,` or white space).
pub fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .next()
        .unwrap()
}

/// A temporary file holding `text`.
pub fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// `GET path` over HTTP/1.1; the whole response (head and body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(PROC_WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// A relay process started from a TOML configuration, with the addresses
/// it logged at start-up.
pub struct RelayProc {
    pub proc: Proc,
    /// The tunnel agents' listener, `host:port`.
    pub agents: String,
    /// The admin listener.
    pub admin: SocketAddr,
    startup: String,
    _config: Option<tempfile::NamedTempFile>,
}

impl RelayProc {
    /// Starts `switchboard --config` with `config` and waits for its tunnel.
    pub fn start(config: &str) -> RelayProc {
        let file = write_temp(config);
        let mut relay = RelayProc::start_file(file.path());
        relay._config = Some(file);
        relay
    }

    /// Starts `switchboard --config path` (the caller keeps the file, e.g.
    /// to change it) and waits for its tunnel.
    pub fn start_file(path: &std::path::Path) -> RelayProc {
        let mut proc = Proc::start(&["--config", path.to_str().unwrap()]);
        let startup = proc.wait_line("tunnel: agents connect to");
        let agents = after(&startup, "agents connect to ").to_string();
        let admin = after(&proc.wait_line("admin on http://"), "admin on http://")
            .parse()
            .unwrap();
        RelayProc {
            proc,
            agents,
            admin,
            startup,
            _config: None,
        }
    }

    /// The public address of tunnel service `name`.
    pub fn service(&self, name: &str) -> SocketAddr {
        after(&self.startup, &format!("{name} on "))
            .parse()
            .unwrap()
    }

    /// `/tunnels` as JSON.
    pub async fn tunnels(&self) -> serde_json::Value {
        let response = http_get(self.admin, "/tunnels").await;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await
    }
}
