//! Proves the systemd units under deploy/ are valid and hardened: `systemd-analyze verify` (Debian's `systemd`, installed by scripts/test) accepts `switchboard-relay.service` and an instance of `switchboard-host@.service` pointed at the built binary without a single warning, each unit carries the hardening directives (dedicated user, no new privileges, read-only system, empty capability sets, address families, system call filter), both reload with SIGHUP, and the check itself catches a unit with a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the units expect the binary (scripts/install's default for root).
const INSTALLED: &str = "/usr/local/bin/switchboard";

/// Every unit must set these, exactly.
const HARDENING: &[&str] = &[
    "User=switchboard",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
];

fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("deploy").join(name))
        .unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// Writes `text` as `name` into `dir` with the binary's path replaced by the
/// built one (verify checks that ExecStart is executable).
fn copy_for_verify(dir: &Path, name: &str, text: &str) -> PathBuf {
    assert!(text.contains(INSTALLED), "{name} does not run {INSTALLED}");
    let path = dir.join(name);
    std::fs::write(&path, text.replace(INSTALLED, BIN)).expect("write unit copy");
    path
}

/// Runs `systemd-analyze verify` on `units`; returns (success, stderr).
fn verify(dir: &Path, units: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .current_dir(dir)
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| format!("./{u}")))
        .output()
        .expect("systemd-analyze is missing: scripts/test installs Debian's `systemd`");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stderr + &stdout)
}

#[test]
fn units_verify_without_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_for_verify(
        dir.path(),
        "switchboard-relay.service",
        &unit("switchboard-relay.service"),
    );
    copy_for_verify(
        dir.path(),
        "switchboard-host@.service",
        &unit("switchboard-host@.service"),
    );
    let (ok, output) = verify(
        dir.path(),
        &[
            "switchboard-relay.service",
            "switchboard-host@.service",
            "switchboard-host@web.service",
        ],
    );
    assert!(ok, "systemd-analyze verify failed:\n{output}");
    assert!(
        output.trim().is_empty(),
        "systemd-analyze verify warned:\n{output}"
    );
}

#[test]
fn units_are_hardened() {
    for name in ["switchboard-relay.service", "switchboard-host@.service"] {
        let text = unit(name);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for directive in HARDENING {
            assert!(lines.contains(directive), "{name} lacks `{directive}`");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ExecReload=") && l.contains("check-config")),
            "{name} does not check its settings before a reload"
        );
        // RestartPreventExitStatus= sees only the main process's status: a
        // check in ExecStartPre= that fails would still be restarted.
        assert!(
            !lines.iter().any(|l| l.starts_with("ExecStartPre=")),
            "{name} checks in ExecStartPre=, whose failure restarts"
        );
        assert!(
            lines.contains(&"RestartPreventExitStatus=2"),
            "{name} restarts on bad settings"
        );
    }
    let host = unit("switchboard-host@.service");
    assert!(
        host.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "agent reload"
    );
    assert!(
        host.contains("/etc/switchboard/host/%i.toml"),
        "instance names its file"
    );
    let users = unit("switchboard.sysusers");
    assert!(
        users.lines().any(|l| l.starts_with("u switchboard ")),
        "sysusers entry"
    );
}

#[test]
fn verify_step_catches_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = unit("switchboard-relay.service").replace("[Service]\n", "[Service]\nNoSuchKey=1\n");
    copy_for_verify(dir.path(), "switchboard-relay.service", &bad);
    let (_, output) = verify(dir.path(), &["switchboard-relay.service"]);
    assert!(
        output.contains("NoSuchKey"),
        "a warning went unnoticed:\n{output}"
    );
}
