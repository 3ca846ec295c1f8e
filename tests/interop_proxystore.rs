//! Proves ProxyStore 1.1.0's own Python `RelayClient` works unchanged against the Switchboard relay: registration, offer/answer forwarding with non-ASCII descriptions, the unknown-peer error echo, and 4004 replacement of a duplicate UUID.
//!
//! The relay runs in-process on 127.0.0.1:0, or, when `$SWITCHBOARD_BIN` names a
//! `switchboard` binary (scripts/test sets it to the one `pip install` of the
//! wheel put in a fresh venv), as that binary; `tests/interop/relay_clients.py` is
//! run with `$SWITCHBOARD_PYTHON` (a venv with `proxystore[endpoints]==1.1.0`,
//! created by `scripts/test`). The test fails, never skips, when it is unset.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::config::Settings;
use switchboard::node;

/// Hard limit on the Python script; it is killed when it runs longer.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A relay running on its own thread inside its own actix System, or as
/// the process of `$SWITCHBOARD_BIN`.
struct RunningRelay {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    process: Option<Child>,
}

impl RunningRelay {
    fn start() -> RunningRelay {
        match std::env::var("SWITCHBOARD_BIN") {
            Ok(bin) if !bin.trim().is_empty() => RunningRelay::start_binary(&bin),
            _ => RunningRelay::start_in_process(),
        }
    }

    /// Runs `bin --host 127.0.0.1 --port 0` (admin off) and reads its
    /// address from the "relay listening on" line of its log.
    fn start_binary(bin: &str) -> RunningRelay {
        eprintln!("relay: {bin}");
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "info"])
            .env("SWITCHBOARD__ADMIN__ENABLED", "false")
            .env("SWITCHBOARD__SERVER__WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run SWITCHBOARD_BIN={bin}: {e}"));
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = line_tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = line_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{bin} did not report its address"));
            if let Some(rest) = line.split("relay listening on ws://").nth(1) {
                let addr = rest.split(';').next().unwrap_or_default();
                break addr.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        };
        RunningRelay {
            addr,
            stop: None,
            thread: None,
            process: Some(child),
        }
    }

    fn start_in_process() -> RunningRelay {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut settings = Settings::default();
                settings.server.host = "127.0.0.1".into();
                settings.server.port = 0;
                settings.server.workers = 2;
                settings.admin.enabled = false;
                let started = TcpListener::bind((settings.server.host.as_str(), 0))
                    .map_err(|e| e.to_string())
                    .and_then(|public| {
                        node::start(settings, public, None).map_err(|e| e.to_string())
                    });
                let relay = match started {
                    Ok(relay) => relay,
                    Err(error) => {
                        let _ = addr_tx.send(Err(error));
                        return;
                    }
                };
                let _ = addr_tx.send(Ok(relay.public_addr()));
                let _ = stop_rx.await;
                relay.shutdown().await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay thread did not report its address")
            .expect("relay failed to start");
        RunningRelay {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            process: None,
        }
    }

    fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            if wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
                eprintln!("the relay process did not stop on SIGTERM and was killed");
            }
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Reads a child pipe to the end on a thread, so a chatty child never blocks.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` until `timeout`, killing it when the time is up.
/// Returns its status, or `None` when it had to be killed.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait on the Python script") {
            Some(status) => return Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn python() -> String {
    match std::env::var("SWITCHBOARD_PYTHON") {
        Ok(python) if !python.trim().is_empty() => python,
        _ => panic!(
            "SWITCHBOARD_PYTHON is not set: this test needs a Python with \
             proxystore[endpoints]==1.1.0. Run scripts/test, which creates the venv, \
             or set SWITCHBOARD_PYTHON to such an interpreter."
        ),
    }
}

#[test]
fn proxystore_relay_client_interoperates() {
    let python = python();
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "interop",
        "relay_clients.py",
    ]
    .iter()
    .collect();
    assert!(script.is_file(), "missing {}", script.display());

    let relay = RunningRelay::start();
    let url = format!("ws://{}", relay.addr);

    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&url)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run SWITCHBOARD_PYTHON={python}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, SCRIPT_TIMEOUT);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    relay.shutdown();

    print!("{stdout}");
    let report = format!(
        "--- relay_clients.py stdout ---\n{stdout}\n--- relay_clients.py stderr ---\n{stderr}"
    );
    match status {
        None => panic!(
            "relay_clients.py did not finish within {SCRIPT_TIMEOUT:?} and was killed\n{report}"
        ),
        Some(status) => assert!(
            status.success(),
            "relay_clients.py failed against {url} with {status}\n{report}"
        ),
    }
}
