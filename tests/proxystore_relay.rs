//! Proves a ProxyStore operator's relay files run unchanged as real
//! `switchboard --proxystore-config` processes with ProxyStore's CLI options:
//! the docs' logging example writes `server.log` (and warns about its
//! misnamed keys); the "Connected clients" line appears in ProxyStore's shape
//! on stderr and in the file, listing clients only below the limit; the docs'
//! Globus example authenticates against a loopback introspection stand-in
//! (good token: identity = `sub`; bad token or audience: 4002; no header:
//! 4001), as does a file taking its credentials from ProxyStore's environment
//! variables with ProxyStore's default audience; the docs' TLS example serves
//! `wss://` (also with the key inside the certificate file); ProxyStore's own
//! Python `RelayClient` works through such a relay, also with a Globus token
//! in its `extra_headers`; bad values exit 2 naming ProxyStore's key; our own
//! format has the same log file (`--log-dir`) and clients line (`[log]`); a
//! `server.log` last written in an earlier week is rotated to `server.log.1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::introspect::{Provider, ADA_SUB};
use common::log_lines::LogLines;
use common::procs::{after, Proc, PROC_WAIT};
use common::*;

/// Variables of the test's own environment that would change what is tested.
const CLEARED: &[&str] = &[
    "RUST_LOG",
    "PROXYSTORE_GLOBUS_CLIENT_ID",
    "PROXYSTORE_GLOBUS_CLIENT_SECRET",
    "SWITCHBOARD_GLOBUS_INTROSPECT_URL",
];

fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/proxystore",
        name,
    ]
    .iter()
    .collect();
    path.to_string_lossy().into_owned()
}

/// Runs `switchboard ARGS` in `cwd` with `env`.
fn spawn(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args).envs(env.iter().copied());
    for name in CLEARED {
        if !env.iter().any(|(k, _)| k == name) {
            command.env_remove(name);
        }
    }
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = LogLines::follow(&mut child, PROC_WAIT);
    Proc { child, log }
}

/// A relay from ProxyStore file `config` on 127.0.0.1:0: (process, its URL).
fn relay(config: &str, extra: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> (Proc, String) {
    let mut args = vec![
        "--proxystore-config",
        config,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ];
    args.extend_from_slice(extra);
    let mut proc = spawn(&args, env, cwd);
    let line = proc.wait_line("relay listening on ");
    let url = after(&line, "relay listening on ").to_string();
    (proc, url)
}

/// Waits (bounded) until `path` contains `needle`; returns the contents.
fn wait_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + PROC_WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn authed(url: &str, token: &str) -> Ws {
    connect_with(url, &[("Authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn docs_logging_example_runs_unchanged_and_writes_server_log() {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().join("relay");
    let (mut proc, url) = relay(
        &fixture("valid/docs_logging.toml"),
        &["--log-dir", dir.to_str().unwrap()],
        &[],
        None,
    );
    proc.wait_line("`logging.default_log_level` is not a setting of ProxyStore's relay");
    let _a = client(&url, "logged", UUID_A).await;
    let file = dir.join("server.log");
    let text = wait_file(&file, "relay listening on ws://127.0.0.1:");
    assert!(
        text.contains("did you mean logging.websockets_level?"),
        "{text}"
    );
    assert!(proc.terminate().success());
    wait_file(&file, "relay stopped");
}

#[tokio::test]
async fn connected_clients_line_as_proxystore_prints_it() {
    let logs = tempfile::tempdir().unwrap();
    let config = procs::write_temp(&format!(
        "[logging]\nlog_dir = {:?}\ncurrent_client_interval = 1\ncurrent_client_limit = 3\n",
        logs.path().display().to_string()
    ));
    let (mut proc, url) = relay(config.path().to_str().unwrap(), &[], &[], None);
    let _b = client(&url, "ps-line-b", UUID_B).await;
    let _a = client(&url, "ps-line-a", UUID_A).await;
    proc.wait_line("Connected clients: 2");
    // Sorted by name, one line each, ProxyStore's repr shape.
    // (env_logger indents a message's continuation lines by four spaces.)
    let first = proc.wait_line("Client(name=").trim_start().to_owned();
    let want =
        format!("Client(name=ps-line-a, uuid={UUID_A}, user=NullUser(), address=('127.0.0.1', ");
    assert!(first.starts_with(&want), "{first}");
    assert!(first.ends_with(" UTC)"), "{first}");
    proc.wait_line(&format!("Client(name=ps-line-b, uuid={UUID_B}"));
    let file = logs.path().join("server.log");
    wait_file(&file, &want);

    // At the limit (3 < 3 is false) only the count is logged.
    let _c = client(&url, "ps-line-c", UUID_C).await;
    proc.wait_line("Connected clients: 3");
    let text = wait_file(&file, "Connected clients: 3");
    let after_count = text.rsplit("Connected clients: 3").next().unwrap();
    let next = after_count.lines().nth(1).unwrap_or_default().trim_start();
    assert!(
        !next.starts_with("Client("),
        "listed at the limit: {next}\n{text}"
    );
}

#[tokio::test]
async fn globus_docs_example_against_the_stand_in() {
    let provider = Provider::start_for("...", "...");
    let url = provider.url();
    let env = [
        ("SWITCHBOARD_GLOBUS_INTROSPECT_URL", url.as_str()),
        ("SWITCHBOARD__ADMIN__ENABLED", "true"),
        ("SWITCHBOARD__ADMIN__HOST", "127.0.0.1"),
        ("SWITCHBOARD__ADMIN__PORT", "0"),
    ];
    let (mut proc, relay_url) = relay(&fixture("valid/docs_globus.toml"), &[], &env, None);
    proc.wait_line("SWITCHBOARD_GLOBUS_INTROSPECT_URL is set (it is for tests only)");
    let admin = after(&proc.wait_line("admin on http://"), "admin on http://")
        .parse()
        .unwrap();

    let mut ada = authed(&relay_url, "globus-ada").await;
    register(&mut ada, "ada-endpoint", UUID_A).await;
    let json = wait_clients(admin, |j| lists(j, UUID_A)).await;
    assert_eq!(json[0]["user"], ADA_SUB, "the identity is the token's sub");

    for (token, code, why) in [
        ("revoked", 4002, "not active"),
        ("globus-elsewhere", 4002, "audience does not include ..."),
    ] {
        let mut ws = authed(&relay_url, token).await;
        send(&mut ws, registration("x", UUID_B)).await;
        let (got, reason) = expect_close(&mut ws).await;
        assert_eq!(got, code, "{token}: {reason}");
        assert!(
            reason.starts_with("ForbiddenError") && reason.contains(why),
            "{reason}"
        );
    }
    let mut anonymous = connect(&relay_url).await;
    send(&mut anonymous, registration("x", UUID_B)).await;
    assert_eq!(expect_close(&mut anonymous).await.0, 4001);
    assert!(provider.calls.load(std::sync::atomic::Ordering::SeqCst) >= 3);

    // ProxyStore's own client, with its token in `extra_headers`.
    let stdout = run_python("globus_client.py", &relay_url);
    assert!(
        stdout.contains("ok: a revoked token is refused with 4002"),
        "{stdout}"
    );
}

#[tokio::test]
async fn globus_credentials_from_proxystores_environment_variables() {
    let provider = Provider::start_for("env-app", "env-secret");
    let url = provider.url();
    let config = procs::write_temp("[auth]\nmethod = \"globus\"\n");
    let env = [
        ("SWITCHBOARD_GLOBUS_INTROSPECT_URL", url.as_str()),
        ("PROXYSTORE_GLOBUS_CLIENT_ID", "env-app"),
        ("PROXYSTORE_GLOBUS_CLIENT_SECRET", "env-secret"),
    ];
    let (_proc, relay_url) = relay(config.path().to_str().unwrap(), &[], &env, None);
    // globus-ada's audience includes ProxyStore's relay's; globus-elsewhere's does not.
    let mut ada = authed(&relay_url, "globus-ada").await;
    register(&mut ada, "ada", UUID_A).await;
    let mut other = authed(&relay_url, "globus-elsewhere").await;
    send(&mut other, registration("x", UUID_B)).await;
    let (code, reason) = expect_close(&mut other).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(
        reason.contains(common::introspect::PROXYSTORE_AUDIENCE),
        "{reason}"
    );
}

fn tls_client(der: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn wss_registers(url: &str, der: &rustls::pki_types::CertificateDer<'static>) {
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let connector = tokio_tungstenite::Connector::Rustls(tls_client(der));
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)),
    )
    .await
    .expect("wss connect timed out")
    .expect("wss connect failed");
    register(&mut ws, "tls-endpoint", UUID_A).await;
}

#[tokio::test]
async fn docs_tls_example_serves_wss() {
    let pem = fixtures::self_signed();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::copy(pem.cert.path(), cwd.path().join("cert.pem")).unwrap();
    std::fs::copy(pem.key.path(), cwd.path().join("privkey.pem")).unwrap();
    let (_proc, url) = relay(&fixture("valid/docs_tls.toml"), &[], &[], Some(cwd.path()));
    wss_registers(&url, &pem.der).await;

    // ProxyStore: without keyfile, the key is taken from the certfile.
    let both = [
        std::fs::read_to_string(pem.cert.path()).unwrap(),
        std::fs::read_to_string(pem.key.path()).unwrap(),
    ]
    .concat();
    std::fs::write(cwd.path().join("both.pem"), both).unwrap();
    std::fs::write(cwd.path().join("relay.toml"), "certfile = \"both.pem\"\n").unwrap();
    let (_proc, url) = relay("relay.toml", &[], &[], Some(cwd.path()));
    wss_registers(&url, &pem.der).await;
}

/// Runs `tests/interop/SCRIPT URL` with `$SWITCHBOARD_PYTHON` (bounded);
/// asserts it exits 0 and returns its stdout.
fn run_python(script: &str, url: &str) -> String {
    let python = match std::env::var("SWITCHBOARD_PYTHON") {
        Ok(python) if !python.trim().is_empty() => python,
        _ => panic!(
            "SWITCHBOARD_PYTHON is not set: this test needs a Python with \
             proxystore[endpoints]==1.1.0 (scripts/test creates it)"
        ),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut child = Command::new(python)
        .arg(&script)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not finish within 60 s", script.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn proxystore_python_client_through_a_proxystore_config_relay() {
    let config = procs::write_temp("port = 8700\n\n[logging]\ndefault_level = \"DEBUG\"\n");
    let (mut proc, url) = relay(
        config.path().to_str().unwrap(),
        &["--log-level", "INFO"],
        &[],
        None,
    );
    let stdout = run_python("relay_clients.py", &url);
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count() >= 4,
        "{stdout}"
    );
    assert!(proc.terminate().success());
}

#[test]
fn bad_values_exit_2_naming_proxystores_key() {
    for (args, key) in [
        (vec![fixture("invalid/port_range.toml")], "`port`"),
        (vec![fixture("invalid/auth_method.toml")], "`auth.method`"),
        (
            vec![
                fixture("valid/every_key.toml"),
                "--log-level".into(),
                "LOUD".into(),
            ],
            "`--log-level`",
        ),
        (
            vec![
                fixture("valid/every_key.toml"),
                "--log-dir".into(),
                "/proc/no/such".into(),
            ],
            "cannot write the log file /proc/no/such",
        ),
    ] {
        let mut all = vec!["--proxystore-config".to_string()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut proc = spawn(&all, &[], None);
        let line = proc.wait_line("switchboard: ");
        assert_eq!(proc.wait_exit().code(), Some(2), "{all:?}: {line}");
        assert!(line.contains(key), "{all:?}: {line}");
    }
}

#[test]
fn our_own_format_has_the_same_log_file_and_clients_line() {
    let logs = tempfile::tempdir().unwrap();
    let config = procs::write_temp(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[admin]\nport = 0\n\
         [log]\nclients_interval_secs = 1\nclients_limit = 5\n",
    );
    let mut proc = spawn(
        &[
            "--config",
            config.path().to_str().unwrap(),
            "--log-dir",
            logs.path().to_str().unwrap(),
        ],
        &[],
        None,
    );
    proc.wait_line("Connected clients: 0");
    wait_file(&logs.path().join("server.log"), "Connected clients: 0");
    assert!(proc.terminate().success());
}

#[test]
fn server_log_from_an_earlier_week_is_rotated() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("server.log");
    std::fs::write(&file, "a line from last week\n").unwrap();
    let last_week = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(last_week)
        .unwrap();
    let config = procs::write_temp("[logging]\ncurrent_client_interval = 1\n");
    // (No SIGTERM here: right after start-up it could beat the handlers.)
    let (_proc, _url) = relay(
        config.path().to_str().unwrap(),
        &["--log-dir", logs.path().to_str().unwrap()],
        &[],
        None,
    );
    let text = wait_file(&file, "relay listening on");
    assert!(!text.contains("last week"), "not rotated: {text}");
    let rotated = std::fs::read_to_string(logs.path().join("server.log.1")).unwrap();
    assert_eq!(rotated, "a line from last week\n");
}
