//! The relay node's live reload: on SIGHUP, or when the `--config` file's
//! bytes change, the settings are loaded again exactly as at start (file,
//! environment, flags; every key validated, token files re-read) and only
//! `[[tunnel.services]]` is applied (see `tunnel::relay`'s `reload.rs`).
//! Any other key that differs from the file the node started with is
//! named in one warning: it needs a restart. Settings that no longer load
//! are refused with the key named; the running services stay. A file
//! that is empty (nothing but whitespace and comments) is never applied:
//! it is what an editor leaves for a moment while it saves, and applying
//! it would stop every service; to remove every service, keep the file's
//! other settings and leave `[[tunnel.services]]` out. Every
//! reload is counted in `/tunnels` `reload` and in
//! `switchboard_tunnel_reloads_total{result}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Node;
use crate::config::{ConfigError, Overrides, Settings};

/// Reloads a node's tunnel services from its settings file.
pub struct Reloader {
    file: PathBuf,
    overrides: Overrides,
    /// The file's keys (dotted) and values as the node started with them,
    /// `tunnel.services` left out.
    started: BTreeMap<String, String>,
}

impl Reloader {
    /// A reloader of `file`, loaded with `overrides` as at start. Call it
    /// right after the settings were loaded: the file's keys now are the
    /// ones the node runs with.
    pub fn new(file: PathBuf, overrides: Overrides) -> Reloader {
        let started = file_keys(&file).unwrap_or_default();
        Reloader {
            file,
            overrides,
            started,
        }
    }

    /// Loads the settings again and applies the tunnel services to `node`
    /// (`why` names the trigger in the log).
    pub fn reload(&mut self, node: &mut Node, why: &str) {
        log::info!(
            "reloading the tunnel services of {} ({why})",
            self.file.display()
        );
        let loaded = Settings::load(Some(&self.file), &self.overrides);
        let Some(tunnel) = node.tunnel.as_mut() else {
            return match loaded {
                Err(e) => log::error!("reload refused: {e}"),
                Ok(s) if !s.tunnel.services.is_empty() => log::warn!(
                    "reload: the relay started without [[tunnel.services]]; \
                     starting the tunnel needs a restart"
                ),
                Ok(_) => log::info!("reload: no tunnel services, nothing to apply"),
            };
        };
        let settings = match loaded {
            Ok(settings) => settings,
            Err(e) => return refuse(tunnel, &e.to_string()),
        };
        let table = match file_table(&self.file) {
            Ok(table) => table,
            Err(e) => return refuse(tunnel, &e.to_string()),
        };
        if table.is_empty() {
            return refuse(
                tunnel,
                &format!(
                    "{} is empty (an editor in the middle of saving it?); an empty file is \
                     never applied: to remove every service, keep the other settings and \
                     leave [[tunnel.services]] out",
                    self.file.display()
                ),
            );
        }
        let changed = changed_keys(&self.started, &keys_of(table));
        if !changed.is_empty() {
            log::warn!(
                "reload: only [[tunnel.services]] is applied; changed key(s) that need a restart \
                 (not applied): {}",
                changed.join(", ")
            );
        }
        match tunnel.reload(&settings.tunnel.services) {
            Ok(summary) => log::info!(
                "tunnel reload {}: {summary}",
                tunnel.state().status().reload.count
            ),
            Err(e) => log::error!("tunnel reload refused, the running services stay: {e}"),
        }
    }
}

/// A refused reload: logged, counted; nothing changes.
fn refuse(tunnel: &crate::tunnel::relay::TunnelRelay, error: &str) {
    log::error!("tunnel reload refused, the running services stay: {error}");
    tunnel.record_reload(Some(error.to_string()));
}

/// The dotted keys of `before` and `now` whose values differ (either side missing counts).
fn changed_keys(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before
        .keys()
        .chain(now.keys())
        .filter(|k| before.get(*k) != now.get(*k))
        .collect();
    keys.into_iter().cloned().collect()
}

/// The TOML file's keys, dotted (`server.port`), each with its value as
/// text; `tunnel.services` is left out. Values are only compared, never logged.
fn file_keys(file: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    file_table(file).map(keys_of)
}

/// The TOML file's top-level table (empty for a file of only whitespace and comments).
fn file_table(file: &Path) -> Result<config::Map<String, config::Value>, ConfigError> {
    use config::Source;
    config::File::from(file)
        .format(config::FileFormat::Toml)
        .collect()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

/// `table`'s keys, dotted, with their values as text; `tunnel.services` left out.
fn keys_of(table: config::Map<String, config::Value>) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    flatten("", table, &mut keys);
    keys.remove("tunnel.services");
    keys
}

fn flatten(
    prefix: &str,
    table: config::Map<String, config::Value>,
    out: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value.kind {
            config::ValueKind::Table(inner) => flatten(&key, inner, out),
            kind => {
                out.insert(key, format!("{kind:?}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_added_removed_and_changed_keys_once() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let before = map(&[("a.x", "1"), ("a.y", "2"), ("b.z", "3")]);
        let now = map(&[("a.x", "1"), ("a.y", "5"), ("c.w", "4")]);
        assert_eq!(changed_keys(&before, &now), ["a.y", "b.z", "c.w"]);
    }

    #[test]
    fn a_file_of_whitespace_and_comments_is_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "\n  # being edited\n\n").unwrap();
        assert!(file_table(&path).unwrap().is_empty());
        std::fs::write(&path, "").unwrap();
        assert!(file_table(&path).unwrap().is_empty());
        std::fs::write(&path, "[tunnel]\n").unwrap();
        assert!(!file_table(&path).unwrap().is_empty());
    }

    #[test]
    fn file_keys_leaves_the_services_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "[server]\nport = 1\n[tunnel]\nport = 2\n[[tunnel.services]]\nname = \"a\"\n",
        )
        .unwrap();
        let keys = file_keys(&path).unwrap();
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            ["server.port", "tunnel.port"]
        );
    }
}
