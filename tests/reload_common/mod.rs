//! Helpers shared by the relay reload tests (tunnel_relay_reload.rs,
//! tunnel_reload_refusals.rs): editing the relay's file as an editor does and
//! reading a service's entry of `/tunnels` and the reload counter from the
//! real relay process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use crate::common::procs::RelayProc;
use crate::tunnel_common::metric;

/// Writes `text` to `path` by a rename, as editors do.
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `/tunnels`' entry for `name`, if the relay runs it.
pub async fn entry(relay: &RelayProc, name: &str) -> Option<serde_json::Value> {
    let tunnels = relay.tunnels().await;
    tunnels["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// The public address of `name` as `/tunnels` shows it.
pub async fn addr(relay: &RelayProc, name: &str) -> SocketAddr {
    let entry = entry(relay, name).await.expect("service running");
    entry["bind"].as_str().unwrap().parse().unwrap()
}

/// The control sessions of `name`'s agents (none when it is not running).
pub async fn sessions(relay: &RelayProc, name: &str) -> Vec<u64> {
    let entry = entry(relay, name).await.unwrap_or_default();
    entry["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|a| a["session"].as_u64()).collect())
        .unwrap_or_default()
}

/// `switchboard_tunnel_reloads_total` with `result` (`ok` or `error`).
pub async fn reloads(relay: &RelayProc, result: &str) -> f64 {
    let metrics = relay.metrics().await;
    metric(
        &metrics,
        "switchboard_tunnel_reloads_total",
        &format!("result=\"{result}\""),
    )
}
