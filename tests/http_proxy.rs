//! Proves host agents and peers reach the relay through a real HTTP proxy
//! (Debian's tinyproxy, started by the test on 127.0.0.1): `switchboard host
//! --http-proxy` with proxy credentials serves a tunnelled client; `switchboard
//! peer` registers through `--http-proxy` and through `HTTPS_PROXY`, and
//! `NO_PROXY` sends it direct; an agent's TLS to the relay runs inside the
//! proxy's tunnel; a proxy that refuses (407 without credentials,
//! 403 for the port) is reported with its status and retried with backoff,
//! the agent staying up; a dead proxy is named; proxy URLs that are not
//! http:// are refused at start (exit 2) naming the flag, key or variable.

mod common;
mod tunnel_common;

use std::net::TcpStream as StdTcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::procs::{after, write_temp, Proc, RelayProc};
use common::refusing::Refusing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_common::echo_relay_config;
use uuid::Uuid;

const TOKEN: &str = "proxy-test-token";

/// A tinyproxy process on a free loopback port, logging every request.
struct TinyProxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyProxy {
    /// Starts tinyproxy with `extra` config lines (`BasicAuth u p`,
    /// `ConnectPort 443`); `None` (test skipped) only when it is missing and
    /// `SWITCHBOARD_SKIP_TINYPROXY=1`.
    fn start(extra: &str) -> Option<TinyProxy> {
        let binary = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            if std::env::var("SWITCHBOARD_SKIP_TINYPROXY").as_deref() == Ok("1") {
                eprintln!("SKIPPED (SWITCHBOARD_SKIP_TINYPROXY=1): tinyproxy is not installed");
                return None;
            }
            panic!(
                "tinyproxy is not installed (apt-get install tinyproxy; scripts/test installs \
                 it). Set SWITCHBOARD_SKIP_TINYPROXY=1 to skip these tests explicitly."
            );
        };
        // The port is free when chosen; another process may take it before
        // tinyproxy binds it, so a failed start is retried on a new port.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("tinyproxy.conf");
            let log = dir.path().join("tinyproxy.log");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n\
                     LogFile \"{}\"\nMaxClients 50\nAllow 127.0.0.1\n{extra}\n",
                    log.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(binary)
                .arg("-d")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if StdTcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(TinyProxy {
                        child,
                        port,
                        log,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start on a free port in 5 tries");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many `CONNECT` requests for `target` the proxy logged.
    fn connects_to(&self, target: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("CONNECT {target} ");
        text.lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay process (WebSocket relay + tunnel with service `echo`) and its relay URL.
fn relay() -> (RelayProc, String) {
    let relay = RelayProc::start(&echo_relay_config(TOKEN));
    let line = relay
        .proc
        .log
        .seen()
        .iter()
        .find(|l| l.contains("relay listening on "))
        .cloned()
        .expect("the relay logs its URL");
    let url = after(&line, "relay listening on ")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (relay, url)
}

/// `switchboard host` serving the built-in echo for `agents` with extra args and env.
fn host(
    agents: &str,
    token: &tempfile::NamedTempFile,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let token = token.path().to_str().unwrap();
    let args = [
        "host",
        "--relay",
        agents,
        "--service",
        "echo",
        "--token-file",
        token,
        "--echo",
        "--pool",
        "2",
        "--log-level",
        "info",
    ];
    Proc::start_env(&[&args[..], extra].concat(), env)
}

/// `switchboard peer --relay URL ARGS send <unknown uuid> hi`, run to the end.
fn peer_send(relay: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["peer", "--relay", relay, "--timeout", "5"])
        .args(extra)
        .args(["send", &Uuid::new_v4().to_string(), "hi"])
        .env_remove("RUST_LOG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().copied());
    command.output().unwrap()
}

/// The peer registered (the relay then reported the unknown peer).
fn registered(output: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&output.stderr);
    output.status.code() == Some(1) && stderr.contains("because this peer is not registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_agent_serves_through_the_proxy_with_credentials() {
    let Some(proxy) = TinyProxy::start("BasicAuth alice s3cret") else {
        return;
    };
    let (relay, _) = relay();
    let token = write_temp(&format!("{TOKEN}\n"));
    let with_credentials = format!("http://alice:s3cret@127.0.0.1:{}", proxy.port);
    let mut agent = host(
        &relay.agents,
        &token,
        &["--http-proxy", &with_credentials],
        &[],
    );
    agent.wait_line("serving \"echo\"");
    // Two round trips on one connection, without a half-close: tinyproxy,
    // like many proxies, ends the whole tunnel at the first FIN (README).
    let mut client = TcpStream::connect(relay.service("echo")).await.unwrap();
    for message in [&b"through the proxy"[..], b"and back again"] {
        client.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed))
            .await
            .expect("the echo came back in time")
            .unwrap();
        assert_eq!(echoed, message);
    }
    // The control channel and the pooled connections all went through it.
    assert!(
        proxy.connects_to(&relay.agents) >= 3,
        "{}",
        proxy.connects_to(&relay.agents)
    );
    assert!(
        !agent.log.seen().iter().any(|l| l.contains("s3cret")),
        "the proxy password was logged"
    );
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_relay_runs_end_to_end_inside_the_proxy_tunnel() {
    let Some(proxy) = TinyProxy::start("") else {
        return;
    };
    let pem = common::fixtures::self_signed();
    let (cert, key) = (pem.cert.path(), pem.key.path());
    let config = echo_relay_config(TOKEN).replace(
        "[tunnel]\n",
        &format!("[tunnel]\ncertfile = {cert:?}\nkeyfile = {key:?}\n"),
    );
    let relay = RelayProc::start(&config);
    let token = write_temp(&format!("{TOKEN}\n"));
    let ca = cert.to_str().unwrap();
    let tls = [
        "--http-proxy",
        &proxy.url(),
        "--tls-ca-file",
        ca,
        "--tls-server-name",
        "localhost",
    ];
    let mut agent = host(&relay.agents, &token, &tls, &[]);
    agent.wait_line("serving \"echo\"");
    let mut client = TcpStream::connect(relay.service("echo")).await.unwrap();
    client.write_all(b"over TLS over CONNECT").await.unwrap();
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed))
        .await
        .expect("the echo came back in time")
        .unwrap();
    assert_eq!(&echoed, b"over TLS over CONNECT");
    assert!(proxy.connects_to(&relay.agents) >= 2);
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_proxy_is_reported_and_retried_without_a_crash() {
    let Some(needs_auth) = TinyProxy::start("BasicAuth alice s3cret") else {
        return;
    };
    let Some(only_443) = TinyProxy::start("ConnectPort 443") else {
        return;
    };
    let (relay, _) = relay();
    let token = write_temp(&format!("{TOKEN}\n"));
    // No credentials: 407, said so, and retried (twice seen) while the agent lives.
    let fast = ["--http-proxy", &needs_auth.url()];
    let mut agent = host(&relay.agents, &token, &fast, &[]);
    let line = agent.log.wait_count("HTTP 407", 2);
    assert!(
        line.contains("give user:password in the proxy URL"),
        "{line}"
    );
    assert!(
        line.contains(&format!("127.0.0.1:{}", needs_auth.port)),
        "{line}"
    );
    agent.wait_line("reconnecting to");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
    assert!(agent.terminate().success());
    // Wrong credentials: 407 again, saying the credentials were refused.
    let wrong = format!("http://alice:wrong@127.0.0.1:{}", needs_auth.port);
    let mut agent = host(&relay.agents, &token, &["--http-proxy", &wrong], &[]);
    let line = agent.wait_line("refused the credentials");
    assert!(
        line.contains("HTTP 401") || line.contains("HTTP 407"),
        "{line}"
    );
    assert!(agent.terminate().success());
    // A proxy whose policy forbids the port: 403 named, retried.
    let mut agent = host(
        &relay.agents,
        &token,
        &["--http-proxy", &only_443.url()],
        &[],
    );
    let line = agent.log.wait_count("HTTP 403", 2);
    assert!(line.contains(&relay.agents), "{line}");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
    assert!(agent.terminate().success());
    // Nothing listening where the proxy should be: named as the proxy.
    let dead = Refusing::new();
    let dead_url = format!("http://{}", dead.addr());
    let mut agent = host(&relay.agents, &token, &["--http-proxy", &dead_url], &[]);
    let line = agent.wait_line("cannot connect to the HTTP proxy");
    assert!(line.contains(&dead.addr().to_string()), "{line}");
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_register_through_the_proxy_by_flag_and_by_environment() {
    let Some(proxy) = TinyProxy::start("") else {
        return;
    };
    let (_relay, url) = relay();
    let target = url.trim_start_matches("ws://").to_string();
    let output = peer_send(&url, &["--http-proxy", &proxy.url()], &[]);
    assert!(registered(&output), "{output:?}");
    assert_eq!(
        proxy.connects_to(&target),
        1,
        "{}",
        std::fs::read_to_string(&proxy.log).unwrap_or_default()
    );
    // HTTPS_PROXY, as at a site that sets it for every program.
    let output = peer_send(&url, &[], &[("HTTPS_PROXY", &proxy.url())]);
    assert!(registered(&output), "{output:?}");
    assert_eq!(proxy.connects_to(&target), 2);
    // NO_PROXY exempts the relay's host: direct, the proxy sees nothing new.
    let output = peer_send(
        &url,
        &[],
        &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")],
    );
    assert!(registered(&output), "{output:?}");
    assert_eq!(proxy.connects_to(&target), 2);
    // A dead proxy: the peer gives up within --timeout, naming the proxy.
    let dead = Refusing::new();
    let output = peer_send(
        &url,
        &["--http-proxy", &format!("http://{}", dead.addr())],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the HTTP proxy"),
        "{stderr}"
    );
    // Each failed attempt is one warning, with its retry delay.
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot connect to the HTTP proxy"))
        .count();
    let attempts = stderr.matches("; retrying in ").count();
    assert!(attempts >= 1, "{stderr}");
    assert_eq!(warnings, attempts, "one warning per attempt: {stderr}");
}

#[test]
fn proxy_urls_that_are_not_http_are_refused_at_start_naming_their_source() {
    let relay = "ws://127.0.0.1:9";
    for (extra, env, names) in [
        (
            vec!["--http-proxy", "socks5://127.0.0.1:1080"],
            vec![],
            "--http-proxy",
        ),
        (
            vec!["--http-proxy", "https://proxy:3128"],
            vec![],
            "--http-proxy",
        ),
        (
            vec![],
            vec![("HTTPS_PROXY", "ftp://proxy:21")],
            "HTTPS_PROXY",
        ),
        (vec![], vec![("ALL_PROXY", "http://")], "ALL_PROXY"),
    ] {
        let output = peer_send(relay, &extra, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?} {env:?}: {stderr}");
        assert!(stderr.contains(names), "{extra:?} {env:?}: {stderr}");
    }
    let token = write_temp("t\n");
    let agent_file = write_temp(&format!(
        "relay = \"127.0.0.1:9\"\nservice = \"s\"\ntoken_file = \"{}\"\necho = true\n\
         http_proxy = \"socks5h://proxy:1080\"\n",
        token.path().display()
    ));
    for (args, env, names) in [
        (
            vec!["--config", agent_file.path().to_str().unwrap()],
            vec![],
            "http_proxy",
        ),
        (
            vec!["--relay", "127.0.0.1:9", "--service", "s", "--echo"],
            vec![("https_proxy", "socks4://p:1")],
            "https_proxy",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command.arg("host").args(&args).envs(env.iter().copied());
        if !args.contains(&"--config") {
            command.args(["--token-file", token.path().to_str().unwrap()]);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
        assert!(stderr.contains("only http://"), "{args:?}: {stderr}");
    }
}
