//! Helpers of the cluster tests: a real `redis-server` (Debian's) on a free
//! loopback port, killed with the test, and a TCP proxy in front of it that
//! can silence pub/sub connections without closing them.
#![allow(dead_code)]

pub mod engine;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a started `redis-server` gets to answer PING.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Free ports tried when another process takes the one picked.
const PORT_ATTEMPTS: u32 = 5;

/// Whether the cluster tests can run: `redis-server` is installed. When it
/// is not, the test fails saying so, unless `SWITCHBOARD_SKIP_REDIS=1`
/// (then this prints SKIPPED and returns false).
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("SWITCHBOARD_SKIP_REDIS").as_deref() == Ok("1") {
        eprintln!("SKIPPED (SWITCHBOARD_SKIP_REDIS=1): redis-server is not installed");
        return false;
    }
    panic!(
        "redis-server is not installed (Debian: apt-get install redis-server; scripts/test \
         installs it). Set SWITCHBOARD_SKIP_REDIS=1 to skip the cluster tests explicitly."
    );
}

/// A `redis-server` of this test on 127.0.0.1, no persistence; SIGKILLed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port (another on a lost race for the port).
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temporary directory");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path()) {
                return Redis {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// Starts one that speaks TLS only (`--port 0 --tls-port`), with the
    /// PEM files `cert` and `key`, trusting `ca` and asking clients for no
    /// certificate; ready once it accepts TCP connections.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let dir = tempfile::tempdir().expect("temporary directory");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut args: Vec<std::ffi::OsString> = vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string().into(),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
            for (flag, path) in [
                ("--tls-cert-file", cert),
                ("--tls-key-file", key),
                ("--tls-ca-cert-file", ca),
            ] {
                args.push(flag.into());
                args.push(path.into());
            }
            if let Some(child) = spawn_with(&args, dir.path(), || accepts(port)) {
                return Redis {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server (TLS) did not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash: no shutdown, no save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if let Some(child) = spawn(self.port, self.dir.path()) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    /// Runs one command with `redis-cli` and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A plain (blocking) connection, for what a test writes by hand.
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("raw connection to the test's Redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Starts `redis-server` on `port` and waits for PING; `None` if it exited
/// (the port was taken) or never answered.
fn spawn(port: u16, dir: &Path) -> Option<Child> {
    let args: Vec<std::ffi::OsString> = vec!["--port".into(), port.to_string().into()];
    spawn_with(&args, dir, || ping(port))
}

/// Starts `redis-server` with `args` (on 127.0.0.1, no persistence, in
/// `dir`) and waits until `ready`; `None` if it exited or never was.
fn spawn_with(args: &[std::ffi::OsString], dir: &Path, ready: impl Fn() -> bool) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let deadline = Instant::now() + START_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if ready() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Whether something accepts TCP connections on `port`.
fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// A TCP proxy on 127.0.0.1 in front of a Redis. Connections that sent a
/// `SUBSCRIBE` can be muted: from then on, what Redis sends them is read
/// and thrown away, and the connection stays open: a subscription that
/// silently stops delivering.
pub struct Proxy {
    /// The proxy's port.
    pub port: u16,
    subscribers: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts one in front of `redis_port` (on the current tokio runtime).
    pub async fn start(redis_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let subscribers: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let list = subscribers.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                tokio::spawn(carry(client, server, list.clone()));
            }
        });
        Proxy {
            port,
            subscribers,
            task,
        }
    }

    /// `redis://127.0.0.1:{port}` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Mutes every connection that subscribed so far; returns how many.
    pub fn mute_subscribers(&self) -> usize {
        let list = self.subscribers.lock().unwrap();
        for muted in list.iter() {
            muted.store(true, Ordering::SeqCst);
        }
        list.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    subscribers: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
) {
    let muted = Arc::new(AtomicBool::new(false));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_muted = muted.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut listed = false;
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if !listed
                && buf[..n]
                    .windows(9)
                    .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
            {
                listed = true;
                subscribers.lock().unwrap().push(up_muted.clone());
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if muted.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
