//! Proves the admin dashboard (`GET /` on the admin listener) in headless
//! Chromium (Debian's `/usr/bin/chromium`, driven by playwright-core through
//! `tests/browser/dashboard.mjs`) against real `switchboard` relay processes
//! with an admin token, token-authenticated WebSocket clients and a tunnel
//! with a real `switchboard host` agent: the page and its assets come from the
//! binary and carry no data; with the token (given as a `#token=` fragment,
//! then gone from the address bar) the health counts match `/health`, the
//! client rows match `/clients`, the filter narrows them by UUID, name, user
//! and node, the tunnel shows its agent and pool, the cluster section lists
//! the nodes; the forwards/s and tunnel bytes/s charts move after traffic;
//! a wrong token gets 401 and the page shows no data; a relay that stops
//! answering (SIGSTOP) leaves the last values dimmed under a "stale since"
//! note with no new chart point, and the mark goes when it answers again
//! (SIGCONT). The clustered run
//! saves a screenshot (`$CARGO_TARGET_TMPDIR/dashboard.png`, and
//! `SWITCHBOARD_DASHBOARD_PNG` when set: `docs/dashboard.png` is made so).
//!
//! Fails without Chromium or the npm driver (scripts/test installs both)
//! unless `SWITCHBOARD_SKIP_BROWSER=1`; the clustered run needs
//! `redis-server` (or `SWITCHBOARD_SKIP_REDIS=1`).

mod browser_common;
mod cluster_common;
mod common;
mod dashboard_common;
mod tunnel_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use browser_common::chromium;
use cluster_common::{redis_available, Redis};
use common::{connect_with, http_get, offer, recv_text, send, Ws, UUID_A, UUID_B, UUID_C};
use dashboard_common::{echo_agent, user_client, Node, Page, ADMIN_TOKEN};
use serde_json::{json, Value};
use tunnel_common::exchange;

/// Longest wait for the page to show something.
const SHOWN: Duration = Duration::from_secs(15);

/// The UUIDs of the client rows the page shows, sorted.
const SHOWN_UUIDS: &str =
    "[...document.querySelectorAll('#clients tbody tr')].map((r) => r.dataset.uuid).sort()";

/// The largest value a chart plots (0 when it has none).
fn chart_max(chart: &str) -> String {
    format!(
        "Math.max(0, ...window.switchboardDashboard.charts.{chart}.data.slice(1).flat()\
         .filter((v) => v !== null))"
    )
}

fn sorted(mut uuids: Vec<&str>) -> Value {
    uuids.sort();
    json!(uuids)
}

/// The health figures on the page equal `/health`'s; the rows, `/clients`'.
async fn assert_counts(page: &mut Page, node: &Node) {
    let health = node.admin_json("/health").await;
    for key in ["connected", "registered"] {
        let shown = page
            .eval(&format!(
                "document.getElementById('health-{key}').textContent"
            ))
            .await;
        assert_eq!(shown, health[key].to_string(), "{key}: {health}");
    }
    let clients = node.admin_json("/clients").await;
    let mut listed: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(page.eval(SHOWN_UUIDS).await, json!(listed));
    let plotted = page
        .eval("window.switchboardDashboard.charts.connections.data[1].at(-1)")
        .await;
    assert_eq!(plotted, health["connected"], "connections chart: {health}");
    let count = page
        .eval("document.getElementById('client-count').textContent")
        .await;
    assert_eq!(count, format!("{0} shown of {0}", listed.len()));
}

/// The filter narrows the rows by any field, then by UUID, name, user, node.
async fn assert_filter(page: &mut Page, clustered: bool) {
    let mut cases = vec![
        ("any", "bob", vec![UUID_B]),
        ("uuid", &UUID_C[..8], vec![UUID_C]),
        ("name", "LAPTOP", vec![UUID_A]),
        ("user", "alice", vec![UUID_A, UUID_C]),
        ("user", "nobody", vec![]),
    ];
    if clustered {
        cases.push(("node", "west", vec![UUID_C]));
        cases.push(("node", "east", vec![UUID_A, UUID_B]));
    }
    for (field, needle, want) in cases {
        page.select("#client-filter-field", field).await;
        page.fill("#client-filter", needle).await;
        assert_eq!(
            page.eval(SHOWN_UUIDS).await,
            sorted(want),
            "{field}: {needle}"
        );
    }
    page.select("#client-filter-field", "any").await;
    page.fill("#client-filter", "").await;
    assert_eq!(
        page.eval(SHOWN_UUIDS).await,
        sorted(vec![UUID_A, UUID_B, UUID_C])
    );
}

/// The tunnel section names the service, its agent and its pool.
async fn assert_tunnel(page: &mut Page, node: &Node) {
    let tunnels = node.admin_json("/tunnels").await;
    let agent = tunnels["services"][0]["agents"][0]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = page
        .eval("document.getElementById('tunnels').textContent")
        .await;
    let text = text.as_str().unwrap();
    for part in ["echo (tcp)", "pool 2 idle", "agents: 1", agent.as_str()] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
}

/// Forwards C -> A (alice's two clients; in the cluster, from `west` to
/// `east`, which delivers and counts them) and echoes bytes through the
/// tunnel, a little more each round, across several of the page's reads.
async fn traffic(c: &mut Ws, a: &mut Ws, echo: std::net::SocketAddr) {
    for round in 1..=4usize {
        for _ in 0..5 * round {
            send(c, offer(UUID_C, UUID_A, "offer")).await;
            recv_text(a).await;
        }
        let payload = vec![round as u8; 16 * 1024 * round];
        assert_eq!(exchange(echo, &payload).await, payload);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// A wrong token: the endpoints answer 401 and the page shows nothing.
async fn assert_wrong_token(page: &mut Page, node: &Node) {
    for path in ["/health", "/clients", "/tunnels", "/metrics"] {
        assert_eq!(
            http_get(node.admin, path, Some("wrong")).await.0,
            401,
            "{path}"
        );
    }
    page.goto(&format!("http://{}/#token=wrong", node.admin))
        .await;
    page.wait("window.switchboardDashboard.state.denied === true", SHOWN)
        .await;
    let shown = page
        .eval(
            "({rows: document.querySelectorAll('#clients tbody tr, #cluster-nodes tbody tr').length,
              tunnels: document.getElementById('tunnels').children.length,
              connected: document.getElementById('health-connected').textContent,
              clients: window.switchboardDashboard.state.clients.length,
              points: window.switchboardDashboard.charts.forwards.data[0].length,
              status: document.getElementById('status').textContent,
              body: document.body.innerText})",
        )
        .await;
    assert_eq!(shown["rows"], 0, "{shown}");
    assert_eq!(shown["tunnels"], 0, "{shown}");
    assert_eq!(shown["connected"], "–", "{shown}");
    assert_eq!(shown["clients"], 0, "{shown}");
    assert_eq!(shown["points"], 0, "{shown}");
    assert!(shown["status"].as_str().unwrap().contains("401"), "{shown}");
    let body = shown["body"].as_str().unwrap();
    assert!(!body.contains("alice") && !body.contains(UUID_A), "{body}");

    // The right token typed into the form brings the data back.
    page.fill("#token", ADMIN_TOKEN).await;
    page.click("#token-form button").await;
    page.wait(
        "document.querySelectorAll('#clients tbody tr').length === 3",
        SHOWN,
    )
    .await;
}

/// The stale mark, the note, the rows and a health figure shown, and the
/// time of the last chart point.
const STALE_VIEW: &str = "({stale: window.switchboardDashboard.state.staleSince !== null,
    dimmed: document.getElementById('dashboard').classList.contains('stale'),
    note: document.getElementById('stale-note').hidden ? '' : document.getElementById('stale-note').textContent,
    rows: document.querySelectorAll('#clients tbody tr').length,
    connected: document.getElementById('health-connected').textContent,
    last: window.switchboardDashboard.state.series.t.at(-1) ?? null})";

/// The relay stops answering (SIGSTOP): the page keeps what it showed,
/// dimmed under "stale since …", and plots nothing new; it answers again
/// (SIGCONT): the mark goes and points come again.
async fn assert_stale(page: &mut Page, node: &Node) {
    page.wait(
        "window.switchboardDashboard.state.polls >= 1 && window.switchboardDashboard.state.staleSince === null",
        SHOWN,
    )
    .await;
    node.proc.signal("STOP");
    page.wait(
        "window.switchboardDashboard.state.staleSince !== null",
        SHOWN,
    )
    .await;
    let stale = page.eval(STALE_VIEW).await;
    // Two more poll periods without an answer.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let later = page.eval(STALE_VIEW).await;
    let status = page
        .eval("document.getElementById('status').textContent")
        .await;
    node.proc.signal("CONT");
    assert_eq!(stale["dimmed"], true, "{stale}");
    let note = stale["note"].as_str().unwrap();
    assert!(note.starts_with("stale since "), "{stale}");
    assert_eq!(stale["rows"], 3, "the last values stay: {stale}");
    assert_ne!(stale["connected"], "–", "the last values stay: {stale}");
    assert_eq!(later["last"], stale["last"], "no new point while stale");
    assert_eq!(
        later["note"], stale["note"],
        "the time of the first failure"
    );
    assert!(
        status.as_str().unwrap().contains("cannot read the relay"),
        "{status}"
    );

    page.wait(
        &format!(
            "window.switchboardDashboard.state.staleSince === null && \
             window.switchboardDashboard.state.series.t.at(-1) > {}",
            stale["last"]
        ),
        SHOWN,
    )
    .await;
    let fresh = page.eval(STALE_VIEW).await;
    assert_eq!(fresh["dimmed"], false, "{fresh}");
    assert_eq!(fresh["note"], "", "{fresh}");
}

/// Where the screenshot goes: the test's directory, and the path in
/// `SWITCHBOARD_DASHBOARD_PNG` when set (relative to the repository).
fn screenshot_paths() -> Vec<PathBuf> {
    let mut paths = vec![Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")];
    if let Some(extra) = std::env::var_os("SWITCHBOARD_DASHBOARD_PNG") {
        paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(extra));
    }
    paths
}

/// The whole scenario: one relay, or with `redis` two clustered relays
/// (`east` with the tunnel, `west`); the dashboard of `east`.
async fn scenario(chromium: &Path, redis: Option<&Redis>) {
    let url = redis.map(Redis::url);
    let east = Node::start(true, url.as_deref().map(|u| ("east", u)));
    let west = url
        .as_deref()
        .map(|u| Node::start(false, Some(("west", u))));
    let (agents, echo) = east.tunnel.clone().unwrap();
    let (_agent, _agent_token) = echo_agent(&agents);
    east.wait_json("/tunnels", |t| t["services"][0]["pool_idle"] == 2)
        .await;

    let mut a = user_client(&east.url, "alice-token", "alice-laptop", UUID_A).await;
    let _b = user_client(&east.url, "bob-token", "bob-desktop", UUID_B).await;
    let c_url = west.as_ref().map_or(&east.url, |w| &w.url);
    let mut c = user_client(c_url, "alice-token", "alice-gpu", UUID_C).await;
    let _unregistered = connect_with(&east.url, &[("Authorization", "Bearer bob-token")]).await;
    east.wait_json("/clients", |c| c.as_array().is_some_and(|l| l.len() == 3))
        .await;
    let here = if redis.is_some() { 3 } else { 4 };
    east.wait_json("/health", |h| h["connected"] == here).await;
    if redis.is_some() {
        east.wait_json("/health", |h| h["cluster_nodes"] == 2).await;
    }

    // The page comes without the token and holds no data (tests/admin.rs
    // checks its assets).
    let (status, html) = http_get(east.admin, "/", None).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("/dashboard/app.js") && !html.contains("alice"),
        "{html}"
    );

    let mut page = Page::launch(chromium).await;
    let status = page
        .goto(&format!("http://{}/#token={ADMIN_TOKEN}", east.admin))
        .await;
    assert_eq!(status, 200);
    page.wait("window.switchboardDashboard.state.polls >= 2", SHOWN)
        .await;
    assert_eq!(
        page.eval("location.href").await,
        format!("http://{}/", east.admin)
    );
    assert_counts(&mut page, &east).await;
    assert_filter(&mut page, redis.is_some()).await;
    assert_tunnel(&mut page, &east).await;
    if redis.is_some() {
        let nodes = page
            .eval("[...document.querySelectorAll('#cluster-nodes tbody tr')].map((r) => r.textContent)")
            .await;
        assert_eq!(
            nodes,
            json!(["east2", "west1"]),
            "node and its client count"
        );
    }

    // The charts move with traffic.
    assert_eq!(page.eval(&chart_max("forwards")).await, 0);
    assert_eq!(page.eval(&chart_max("tunnel")).await, 0);
    traffic(&mut c, &mut a, echo).await;
    page.wait(&format!("{} > 0", chart_max("forwards")), SHOWN)
        .await;
    page.wait(&format!("{} > 0", chart_max("tunnel")), SHOWN)
        .await;
    assert!(east
        .metrics()
        .await
        .contains("switchboard_forwarded_messages_total 50"));
    if redis.is_some() {
        for path in screenshot_paths() {
            page.screenshot(&path).await;
            let png = std::fs::read(&path).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
        }
    }

    assert_wrong_token(&mut page, &east).await;
    assert_stale(&mut page, &east).await;
    assert_eq!(page.errors().await, json!([]));
    page.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_one_relay() {
    let Some(chromium) = chromium() else { return };
    scenario(&chromium, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_cluster() {
    let Some(chromium) = chromium() else { return };
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    scenario(&chromium, Some(&redis)).await;
}
