//! Helpers of the relay fault test: the relay and host agents as real
//! `switchboard` processes (read without blocking the actix thread), peer
//! managers, a numbered message stream per connection and an inbox that
//! checks them.
#![allow(dead_code)]

mod messages;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard::client::peer_manager::PeerManagerConfig;
use switchboard::client::relay_client::BackoffConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::common::peers::peer_config;
pub use messages::{collector, Inbox, Stream};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The tunnel services the relay serves, one agent each.
pub const SERVICES: [&str; 2] = ["alpha", "beta"];

/// Pooled connections each agent keeps.
pub const AGENT_POOL: usize = 4;

/// How long the relay gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Attempts at restarting on the same ports while the old ones are not free.
const BIND_ATTEMPTS: u32 = 50;

fn token(service: &str) -> String {
    format!("fault-token-{service}")
}

/// Every listener of a relay process.
#[derive(Clone, Debug)]
pub struct Ports {
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    pub agents: SocketAddr,
    pub services: Vec<(String, SocketAddr)>,
}

impl Ports {
    pub fn url(&self) -> String {
        format!("ws://{}", self.ws)
    }

    pub fn service(&self, name: &str) -> SocketAddr {
        self.services.iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// The relay's settings: port 0 everywhere the first time, `ports` after.
fn relay_config(ports: Option<&Ports>) -> String {
    let port = |addr: Option<SocketAddr>| addr.map_or(0, |a| a.port());
    let mut text = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {}\n[admin]\nhost = \"127.0.0.1\"\nport = {}\n\
         [log]\nlevel = \"info\"\n[tunnel]\nhost = \"127.0.0.1\"\nport = {}\n",
        port(ports.map(|p| p.ws)),
        port(ports.map(|p| p.admin)),
        port(ports.map(|p| p.agents)),
    );
    for service in SERVICES {
        let bind = port(ports.map(|p| p.service(service)));
        text += &format!(
            "[[tunnel.services]]\nname = \"{service}\"\nbind = \"127.0.0.1:{bind}\"\ntoken = \"{}\"\n",
            token(service)
        );
    }
    text
}

/// `switchboard` with piped stderr, killed when dropped and, should the test
/// process die without unwinding (e.g. SIGPIPE), when the spawning thread ends.
fn switchboard() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and changes only the child's own state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A child's stderr lines, forwarded by a task so nothing blocks.
fn follow(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stderr = child.stderr.take().expect("stderr must be piped");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The text after `marker` up to the next `;`, `,` or space.
fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split([';', ',', ' ']).next().unwrap()
}

/// A running relay process.
pub struct RelayProc {
    child: Child,
    _config: tempfile::NamedTempFile,
    pub ports: Ports,
    /// Restarts that found a port still taken and tried again.
    pub bind_retries: u32,
}

/// What one start attempt came to.
enum Started {
    Listening(Box<(Child, Ports)>),
    /// The process exited before listening; its stderr.
    Exited(Vec<String>),
}

impl RelayProc {
    /// Starts the relay on `ports` (free ports when `None`), retrying (bounded)
    /// while a port is still in use; returns once it listens.
    pub async fn start(ports: Option<&Ports>) -> RelayProc {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        config.write_all(relay_config(ports).as_bytes()).unwrap();
        for attempt in 0..BIND_ATTEMPTS {
            match start_once(&config).await {
                Started::Listening(started) => {
                    let (child, ports) = *started;
                    return RelayProc {
                        child,
                        _config: config,
                        ports,
                        bind_retries: attempt,
                    };
                }
                Started::Exited(lines) if lines.iter().any(|l| l.contains("in use")) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Started::Exited(lines) => panic!("relay exited:\n{}", lines.join("\n")),
            }
        }
        panic!("the relay's ports stayed in use");
    }

    /// SIGKILL, then reap.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

async fn start_once(config: &tempfile::NamedTempFile) -> Started {
    let mut child = switchboard()
        .arg("--config")
        .arg(config.path())
        .spawn()
        .unwrap();
    let mut lines = follow(&mut child);
    let mut seen = Vec::new();
    let (mut tunnel, deadline) = (None, Instant::now() + START_LIMIT);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline.into(), lines.recv()).await {
        seen.push(line.clone());
        if line.contains("tunnel: agents connect to") {
            tunnel = Some(line);
        } else if line.contains("relay listening on") {
            let tunnel = tunnel.expect("the tunnel line comes first");
            let services = SERVICES
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        after(&tunnel, &format!("{s} on ")).parse().unwrap(),
                    )
                })
                .collect();
            let ports = Ports {
                ws: after(&line, "ws://").parse().unwrap(),
                admin: after(&line, "admin on http://").parse().unwrap(),
                agents: after(&tunnel, "agents connect to ").parse().unwrap(),
                services,
            };
            // Keep draining stderr so the relay never blocks on a full pipe.
            tokio::spawn(async move { while lines.recv().await.is_some() {} });
            return Started::Listening(Box::new((child, ports)));
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    Started::Exited(seen)
}

/// A running `switchboard host --echo` process.
pub struct AgentProc {
    child: Child,
    _token: tempfile::NamedTempFile,
    pid: Option<u32>,
}

impl AgentProc {
    /// Whether the very process started at first is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && self.child.id() == self.pid
    }
}

/// Starts an echo agent for `service` with a pool of [`AGENT_POOL`].
pub async fn agent(ports: &Ports, service: &str) -> AgentProc {
    let mut token_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(token_file, "{}", token(service)).unwrap();
    let mut child = switchboard()
        .args([
            "host",
            "--relay",
            &ports.agents.to_string(),
            "--service",
            service,
        ])
        .arg("--token-file")
        .arg(token_file.path())
        .args([
            "--echo",
            "--pool",
            &AGENT_POOL.to_string(),
            "--log-level",
            "info",
        ])
        .spawn()
        .unwrap();
    let mut lines = follow(&mut child);
    tokio::spawn(async move { while lines.recv().await.is_some() {} });
    let pid = child.id();
    AgentProc {
        child,
        _token: token_file,
        pid,
    }
}

/// Polls `/tunnels` until every service has one agent and a full pool.
pub async fn both_pools_full(admin: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = crate::common::http_get(admin, "/tunnels", None).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let full = |s: &serde_json::Value| {
            s["pool_idle"] == AGENT_POOL && s["agents"].as_array().is_some_and(|a| a.len() == 1)
        };
        let services = json["services"].as_array();
        if status == 200
            && services.is_some_and(|s| s.len() == SERVICES.len() && s.iter().all(full))
        {
            return;
        }
        assert!(Instant::now() < deadline, "pools never filled: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A manager config on loopback with the given reconnect delays.
pub fn manager_config(url: &str, initial: Duration, max: Duration) -> PeerManagerConfig {
    let mut config = peer_config(url, 1);
    config.relay.backoff = BackoffConfig {
        initial,
        max,
        stable_after: Duration::from_secs(30),
    };
    config
}

pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
