//! Proves `switchboard check-config` (the real binary): every bad fixture (tests/fixtures/check-config/bad and tests/fixtures/config/invalid) exits 2 naming the key of its `# key:` line, including what only a start finds (a certificate that is not PEM, a key of another certificate, a bad tokens file, an empty token file, an unparsable Redis URL); a good file exits 0 and prints its settings with every secret masked, in TOML that loads again and in JSON; the environment and flags layer as for a start; `--agent` checks a host agent's file the same way; a log directory a start could not write is refused naming `log.dir`; the printed `log.level` is the filter a start would use (RUST_LOG counts); an unwritable stdout is exit 1, not a panic; and `--proxystore-config` a ProxyStore relay TOML as a start reads it (warnings on stderr, Globus's client secret masked, each bad ProxyStore fixture exit 2 naming ProxyStore's key). Also that `switchboard completions` and `switchboard man` describe the subcommands, each man page with EXIT STATUS and ENVIRONMENT.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the binary in the repository root (the fixtures' paths are relative
/// to it) with no environment but `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.current_dir(ROOT).env_clear().args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run switchboard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

/// Asserts `check-config <flag> file` exits 2 and names the file's `# key:`.
fn assert_refused(flag: &str, file: &Path) {
    let body = std::fs::read_to_string(file).expect("read fixture");
    let key = body
        .lines()
        .find_map(|l| l.strip_prefix("# key: "))
        .unwrap_or_else(|| panic!("{} has no `# key:` line", file.display()))
        .trim();
    let out = run(&["check-config", flag, &file.to_string_lossy()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
    assert!(
        stderr.contains(key),
        "{}: stderr {stderr:?} does not name {key:?}",
        file.display()
    );
    assert!(
        out.stdout.is_empty(),
        "{}: printed settings",
        file.display()
    );
}

#[test]
fn every_bad_fixture_exits_2_naming_the_key() {
    let mut count = 0;
    for dir in [
        "tests/fixtures/check-config/bad",
        "tests/fixtures/config/invalid",
    ] {
        for file in toml_files(dir) {
            let agent = file
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agent_"));
            assert_refused(if agent { "--agent" } else { "--config" }, &file);
            count += 1;
        }
    }
    assert!(count >= 50, "only {count} bad fixtures");
}

#[test]
fn proxystore_files_are_checked_as_a_start_reads_them() {
    for file in toml_files("tests/fixtures/proxystore/invalid") {
        assert_refused("--proxystore-config", &file);
    }
    let globus = "tests/fixtures/proxystore/valid/every_key.toml";
    let body = std::fs::read_to_string(Path::new(ROOT).join(globus)).expect("read");
    assert!(
        body.contains("client_secret"),
        "{globus} has no client secret"
    );
    let out = run(&["check-config", "--proxystore-config", globus], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("client_secret = \"***\""), "{stdout}");
    assert!(stdout.contains("auth.globus.org"), "{stdout}");
    // Keys ProxyStore ignores are warnings on stderr, not errors.
    let unknown = "tests/fixtures/proxystore/valid/unknown_keys.toml";
    let out = run(&["check-config", "--proxystore-config", unknown], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    // ProxyStore's flags layer on top, as for a start.
    let out = run(
        &[
            "check-config",
            "--proxystore-config",
            unknown,
            "--port",
            "9123",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["server"]["port"], 9123);
}

#[test]
fn log_dir_log_level_and_stdout_as_a_start_sees_them() {
    // A directory a start could not create its log file in.
    let out = run(&["check-config", "--log-dir", "/proc/no/such"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("log.dir"),
        "{}",
        text(&out.stderr)
    );
    // A writable one passes, and check-config writes nothing into it.
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let out = run(&["check-config", "--log-dir", &logs.to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!logs.exists(), "check-config created the log directory");
    // RUST_LOG is what a start logs at when --log-level is not given.
    let out = run(&["check-config"], &[("RUST_LOG", "debug")]);
    assert!(
        text(&out.stdout).contains("level = \"debug\""),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        &["check-config", "--log-level", "warn"],
        &[("RUST_LOG", "debug")],
    );
    assert!(
        text(&out.stdout).contains("level = \"warn\""),
        "{}",
        text(&out.stdout)
    );
    // ProxyStore mode takes our filters as well as ProxyStore's names.
    let ps = "tests/fixtures/proxystore/valid/docstring_minimal.toml";
    for (given, shown) in [
        ("WARNING", "warn"),
        ("off", "off"),
        ("info,actix_server=warn", "info,actix_server=warn"),
    ] {
        let out = run(
            &[
                "check-config",
                "--proxystore-config",
                ps,
                "--log-level",
                given,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{given}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("level = \"{shown}\"")),
            "{given}"
        );
    }
    let out = run(
        &[
            "check-config",
            "--proxystore-config",
            ps,
            "--log-level",
            "loud",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--log-level"),
        "{}",
        text(&out.stderr)
    );
    // Settings that cannot be written out: exit 1 with a message, no panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(BIN)
        .current_dir(ROOT)
        .env_clear()
        .arg("check-config")
        .stdout(full)
        .output()
        .expect("run switchboard");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write the settings"),
        "{}",
        text(&out.stderr)
    );
}

const SECRETS: &str = "tests/fixtures/check-config/good/secrets.toml";

#[test]
fn good_file_prints_settings_with_secrets_masked() {
    let out = run(&["check-config", "--config", SECRETS], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for n in 1..=6 {
        assert!(
            !stdout.contains(&format!("SECRET{n}")),
            "secret {n} printed:\n{stdout}"
        );
    }
    for shown in [
        "token = \"***\"",
        "client_secret = \"***\"",
        "alice = \"***\"",
        "https://relay:***@idp.example.org/introspect",
        "redis://ops:***@127.0.0.1:6379/0",
        "client_id = \"relay-client\"",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{stdout}");
    }
    // The TOML printed is a settings file that checks again.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("effective.toml");
    std::fs::write(&copy, &stdout).expect("write");
    let again = run(&["check-config", "-c", &copy.to_string_lossy()], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout, "printing is stable");
}

#[test]
fn json_output_and_layers_as_for_a_start() {
    let json = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["check-config", "--config", SECRETS, "--format", "json"];
        all.extend_from_slice(args);
        let out = run(&all, env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let file = json(&[], &[]);
    assert_eq!(file["server"]["port"], 8700);
    assert_eq!(file["admin"]["token"], "***");
    assert_eq!(file["tunnel"]["services"][0]["token"], "***");
    assert_eq!(
        file["cluster"]["redis_url"],
        "redis://ops:***@127.0.0.1:6379/0"
    );
    let env = [
        ("SWITCHBOARD__SERVER__PORT", "9123"),
        ("SWITCHBOARD__LOG__LEVEL", "debug"),
    ];
    let with_env = json(&[], &env);
    assert_eq!(with_env["server"]["port"], 9123, "environment over file");
    assert_eq!(with_env["log"]["level"], "debug");
    let with_flags = json(&["--port", "9124", "--host", "::1"], &env);
    assert_eq!(with_flags["server"]["port"], 9124, "flag over environment");
    assert_eq!(with_flags["server"]["host"], "::1");

    let bad_env = run(
        &["check-config", "--config", SECRETS],
        &[("SWITCHBOARD__SERVER__MAX_CLIENTS", "0")],
    );
    assert_eq!(bad_env.status.code(), Some(2));
    assert!(text(&bad_env.stderr).contains("server.max_clients"));
    let bad_flag = run(&["check-config", "--log-level", "loud"], &[]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(
        text(&bad_flag.stderr).contains("`--log-level`"),
        "a bad flag value names the flag"
    );
    let bad_host = run(&["check-config", "--host", "bad host"], &[]);
    assert_eq!(bad_host.status.code(), Some(2));
    assert!(text(&bad_host.stderr).contains("`--host`"));
    let missing = run(
        &["check-config", "--config", "/nonexistent/relay.toml"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/relay.toml"));
}

#[test]
fn agent_file_is_checked_and_printed_masked() {
    let good = "tests/fixtures/check-config/good/agent.toml";
    let out = run(&["check-config", "--agent", good], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !stdout.contains("SECRET7") && !stdout.contains("SECRET8"),
        "{stdout}"
    );
    assert!(
        stdout.contains("http://proxyuser:***@127.0.0.1:3128"),
        "{stdout}"
    );
    assert!(stdout.contains("name = \"echo\""), "{stdout}");
    let relay_flags = run(&["check-config", "--agent", good, "--port", "1"], &[]);
    assert_eq!(
        relay_flags.status.code(),
        Some(2),
        "--agent takes no relay flags"
    );
}

#[test]
fn completions_and_man_page_describe_the_subcommands() {
    let bash = run(&["completions", "bash"], &[]);
    assert_eq!(bash.status.code(), Some(0));
    let script = text(&bash.stdout);
    for sub in ["check-config", "completions", "man", "host", "peer"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("check-config"), "{shell}");
    }

    let man = run(&["man"], &[]);
    assert_eq!(man.status.code(), Some(0));
    let page = text(&man.stdout);
    assert!(page.contains(".TH switchboard 1"), "{page}");
    assert!(page.contains("check\\-config"), "{page}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&["man", "--out-dir", &dir.path().to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "switchboard.1",
        "switchboard-check-config.1",
        "switchboard-host.1",
        "switchboard-peer-send.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page} not written: {e}"));
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", "RUST_LOG"] {
            assert!(text.contains(section), "{page} lacks {section}");
        }
    }
    let host = std::fs::read_to_string(dir.path().join("switchboard-host.1")).unwrap();
    assert!(
        host.contains("HTTPS_PROXY"),
        "the agent's page names the proxy variables"
    );
    let relay = std::fs::read_to_string(dir.path().join("switchboard.1")).unwrap();
    assert!(relay.contains("SWITCHBOARD__SECTION__KEY"), "{relay}");
    assert_eq!(
        page.matches(".SH \"EXIT STATUS\"").count(),
        1,
        "stdout page has it once"
    );
    // Rendered by man(1) when it is installed (`man -l`).
    let manual = ["/usr/bin/man", "/bin/man"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    if let Some(man) = manual {
        let rendered = Command::new(man)
            .args(["-l", "-P", "cat"])
            .arg(dir.path().join("switchboard.1"))
            .env("MANWIDTH", "100")
            .output()
            .expect("run man");
        assert!(rendered.status.success(), "{}", text(&rendered.stderr));
        assert!(text(&rendered.stdout).contains("check-config"));
    }
}
