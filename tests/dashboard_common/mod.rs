//! Helpers of the dashboard test: the `switchboard` relay processes it looks
//! at (admin token, token auth for clients, optionally a tunnel and a
//! cluster), a `switchboard host --echo` agent, and headless Chromium on the
//! dashboard through `tests/browser/dashboard.mjs`, one JSON line per command.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::procs::{after, write_temp, Proc};
use crate::common::{connect_with, http_get, register, Ws};

/// The admin token of every relay in the test.
pub const ADMIN_TOKEN: &str = "dashboard-admin-secret";
/// The echo service's agent token.
const TUNNEL_TOKEN: &str = "dashboard-tunnel-token";
/// Longest wait for Chromium to start.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one driver command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay's TOML: loopback listeners on port 0, the admin token, token
/// auth (users alice and bob), with `tunnel` an `echo` service, with
/// `cluster` (node id, Redis URL) a cluster node with fast timings.
pub fn relay_config(tunnel: bool, cluster: Option<(&str, &str)>) -> String {
    let mut config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n\
         [admin]\nhost = \"127.0.0.1\"\nport = 0\ntoken = \"{ADMIN_TOKEN}\"\n\
         [auth]\nmethod = \"token\"\n\
         [auth.tokens]\nalice = \"alice-token\"\nbob = \"bob-token\"\n\
         [log]\nlevel = \"info\"\n"
    );
    if tunnel {
        config.push_str(&format!(
            "[tunnel]\nhost = \"127.0.0.1\"\nport = 0\n\
             [[tunnel.services]]\nname = \"echo\"\nbind = \"127.0.0.1:0\"\ntoken = \"{TUNNEL_TOKEN}\"\n"
        ));
    }
    if let Some((node_id, redis_url)) = cluster {
        config.push_str(&format!(
            "[cluster]\nenabled = true\nredis_url = \"{redis_url}\"\nnode_id = \"{node_id}\"\n\
             key_prefix = \"sbdash:\"\nheartbeat_ms = 200\nnode_ttl_ms = 1500\n\
             command_timeout_ms = 400\nself_check_ms = 500\n"
        ));
    }
    config
}

/// A running relay process and the addresses it logged.
pub struct Node {
    pub proc: Proc,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The admin listener.
    pub admin: SocketAddr,
    /// With a tunnel: the agents' listener and the echo service's address.
    pub tunnel: Option<(String, SocketAddr)>,
    _config: tempfile::NamedTempFile,
}

impl Node {
    /// Starts `switchboard --config` with [`relay_config`].
    pub fn start(tunnel: bool, cluster: Option<(&str, &str)>) -> Node {
        let config = write_temp(&relay_config(tunnel, cluster));
        let mut proc = Proc::start(&["--config", config.path().to_str().unwrap()]);
        let line = proc.wait_line("relay listening on ");
        let url = after(&line, "relay listening on ").to_owned();
        let admin = after(&line, "admin on http://").parse().unwrap();
        let tunnel = tunnel.then(|| {
            let line = proc.wait_line("tunnel: agents connect to");
            let agents = after(&line, "agents connect to ").to_owned();
            (agents, after(&line, "echo on ").parse().unwrap())
        });
        if cluster.is_some() {
            proc.wait_line("cluster node ");
        }
        Node {
            proc,
            url,
            admin,
            tunnel,
            _config: config,
        }
    }

    /// `GET path` with the admin token, as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.admin, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// `/metrics` with the admin token.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics", Some(ADMIN_TOKEN)).await.1
    }

    /// Polls `GET path` until `want` holds (bounded).
    pub async fn wait_json(&self, path: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let json = self.admin_json(path).await;
            if want(&json) {
                return json;
            }
            assert!(Instant::now() < deadline, "{path} never as wanted: {json}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `switchboard host --echo --pool 2` for the echo service at `agents`.
pub fn echo_agent(agents: &str) -> (Proc, tempfile::NamedTempFile) {
    let token = write_temp(&format!("{TUNNEL_TOKEN}\n"));
    let mut proc = Proc::start(&[
        "host",
        "--relay",
        agents,
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
    proc.wait_line("serving \"echo\"");
    (proc, token)
}

/// A client authenticated as `token`'s user, registered as `name`.
pub async fn user_client(url: &str, token: &str, name: &str, uuid: &str) -> Ws {
    let mut ws = connect_with(url, &[("Authorization", &format!("Bearer {token}"))]).await;
    register(&mut ws, name, uuid).await;
    ws
}

/// The dashboard driver and its page; killed on drop.
pub struct Page {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Page {
    /// Starts the driver (and Chromium) and waits until it is ready.
    pub async fn launch(chromium: &Path) -> Page {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        let mut child = Command::new("node")
            .arg(dir.join("dashboard.mjs"))
            .arg("--chromium")
            .arg(chromium)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/dashboard.mjs (is Node.js installed?)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut page = Page {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            next_id: 0,
        };
        let ready = page.next_line(LAUNCH_TIMEOUT).await;
        assert_eq!(ready["event"], "driver-ready", "{ready}");
        page
    }

    async fn next_line(&mut self, limit: Duration) -> Value {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("dashboard driver: nothing within {limit:?}"))
            .expect("read the driver's output")
            .expect("the dashboard driver exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver line {line:?}: {e}"))
    }

    /// Runs one command; its result (a failed command fails the test).
    pub async fn run(&mut self, mut command: Value) -> Value {
        self.next_id += 1;
        command["id"] = json!(self.next_id);
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to driver");
        let answer = self.next_line(COMMAND_TIMEOUT).await;
        assert_eq!(answer["id"], self.next_id, "{answer}");
        assert_eq!(answer["event"], "done", "{command} failed: {answer}");
        answer["result"].clone()
    }

    /// Loads `url`; its HTTP status.
    pub async fn goto(&mut self, url: &str) -> Value {
        self.run(json!({"cmd": "goto", "url": url})).await
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expr: &str) -> Value {
        self.run(json!({"cmd": "eval", "expr": expr})).await
    }

    /// Waits (at most `limit`) until the expression is truthy in the page.
    pub async fn wait(&mut self, expr: &str, limit: Duration) {
        let ms = limit.as_millis() as u64;
        self.run(json!({"cmd": "wait", "expr": expr, "timeout_ms": ms}))
            .await;
    }

    /// Types `value` into the input at `selector`.
    pub async fn fill(&mut self, selector: &str, value: &str) {
        self.run(json!({"cmd": "fill", "selector": selector, "value": value}))
            .await;
    }

    /// Clicks the element at `selector`.
    pub async fn click(&mut self, selector: &str) {
        self.run(json!({"cmd": "click", "selector": selector}))
            .await;
    }

    /// Chooses `value` in the `<select>` at `selector`.
    pub async fn select(&mut self, selector: &str, value: &str) {
        self.run(json!({"cmd": "select", "selector": selector, "value": value}))
            .await;
    }

    /// Saves the whole page as a PNG at `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        self.run(json!({"cmd": "screenshot", "path": path})).await;
    }

    /// Uncaught errors the page threw so far.
    pub async fn errors(&mut self) -> Value {
        self.run(json!({"cmd": "errors"})).await
    }

    /// Closes the browser and waits (bounded) for the driver to exit.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
