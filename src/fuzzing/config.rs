//! Targets for the settings files: the relay's TOML (`config`) and the host
//! agent's (`tunnel::agent::host_config`).
//!
//! Both read the files a setting names (token files, certificates, a CA).
//! A fuzzer must not read whatever path it invents (`/dev/zero` never ends),
//! so every path is replaced, before validation, by one of a few fixed
//! fixtures chosen by the path's length: a missing file, a directory, a
//! token file, and a file that is not a token or a certificate. Every
//! branch of validation stays reachable; the contents of those files are
//! not fuzzed here.

use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::tunnel::agent::host_config::HostConfig;

/// Files every invented path is replaced by (see the module docs).
const FIXTURES: [&str; 4] = [
    "tests/fixtures/config/no-such-file",
    "tests/fixtures/config",
    "tests/fixtures/config/tunnel.token",
    "tests/fixtures/config/valid/minimal.toml",
];

fn fixture(path: &Path) -> PathBuf {
    let pick = FIXTURES[path.as_os_str().len() % FIXTURES.len()];
    Path::new(env!("CARGO_MANIFEST_DIR")).join(pick)
}

fn sandbox(path: &mut Option<PathBuf>) {
    if let Some(p) = path.as_mut() {
        *p = fixture(p);
    }
}

/// The relay's settings file: TOML text → [`Settings::parse_toml`] →
/// [`Settings::validate`] (paths replaced by fixtures first).
///
/// Checks: no panic, hang or unbounded allocation on any text; a
/// validated result validates again.
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut settings) = Settings::parse_toml(text) else {
        return;
    };
    sandbox(&mut settings.server.certfile);
    sandbox(&mut settings.server.keyfile);
    sandbox(&mut settings.auth.tokens_file);
    sandbox(&mut settings.tunnel.certfile);
    sandbox(&mut settings.tunnel.keyfile);
    for service in &mut settings.tunnel.services {
        sandbox(&mut service.token_file);
    }
    if settings.validate().is_ok() {
        assert!(settings.validate().is_ok(), "validation is not repeatable");
    }
}

/// The host agent's settings file: TOML text → [`HostConfig::parse`] →
/// [`HostConfig::into_settings`] (paths replaced by fixtures first).
///
/// Checks: no panic, hang or unbounded allocation on any text; settings it
/// accepts keep the promises of `into_settings` (a valid service name, a
/// pool of at least 1, heartbeat timeout above the interval, and
/// 0 < backoff min <= backoff max).
pub fn host_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = HostConfig::parse(text) else {
        return;
    };
    sandbox(&mut config.token_file);
    sandbox(&mut config.tls_ca_file);
    let Ok(s) = config.into_settings() else {
        return;
    };
    assert!(crate::protocol::tunnel::valid_service_name(&s.service));
    assert!(s.pool >= 1, "pool {}", s.pool);
    assert!(s.heartbeat_timeout > s.heartbeat_interval);
    assert!(!s.backoff_min.is_zero() && s.backoff_min <= s.backoff_max);
}
