//! Proves the admin listener: /health counts, /clients fields and its
//! `scope` values (anything but cluster/local is a 400), /metrics in
//! Prometheus text, the optional admin bearer token, the dashboard's page and
//! assets served without it (they hold no data), and that the public
//! listener never serves admin endpoints.

mod common;

use common::*;
use switchboard::config::Secret;

#[tokio::test]
async fn health_clients_and_metrics() {
    let relay = TestRelay::start(test_settings());
    let (status, body) = http_get(relay.admin, "/health", None).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connected"], 0);
    assert_eq!(health["registered"], 0);
    assert!(health["uptime_seconds"].as_f64().unwrap() >= 0.0);

    let mut a = client(&relay.url, "peer-A", UUID_A).await;
    let mut b = client(&relay.url, "peer-B", UUID_B).await;
    let _idle = connect(&relay.url).await;
    for _ in 0..3 {
        send(&mut a, offer(UUID_A, UUID_B, "offer")).await;
        recv_text(&mut b).await;
    }
    let (_, body) = http_get(relay.admin, "/health", None).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["connected"], 3, "{health}");
    assert_eq!(health["registered"], 2, "{health}");

    let clients = wait_clients(relay.admin, |j| j.as_array().unwrap().len() == 2).await;
    let a_info = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["uuid"] == UUID_A)
        .unwrap();
    assert_eq!(a_info["name"], "peer-A");
    assert_eq!(a_info["user"], serde_json::Value::Null);
    assert_eq!(a_info["messages_forwarded"], 3);
    assert!(a_info["remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let since = a_info["connected_since"].as_str().unwrap();
    assert!(
        since.ends_with('Z') && since.len() == 20,
        "RFC 3339: {since}"
    );

    let (status, metrics) = http_get(relay.admin, "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "switchboard_connected_clients 3",
        "switchboard_registered_clients 2",
        "switchboard_forwarded_messages_total 3",
        "switchboard_registrations_total 2",
        "# TYPE switchboard_slow_consumer_disconnects counter",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn clients_scope_is_cluster_or_local_and_anything_else_is_refused() {
    let relay = TestRelay::start(test_settings());
    let _a = client(&relay.url, "peer-A", UUID_A).await;
    wait_clients(relay.admin, |j| j.as_array().unwrap().len() == 1).await;
    for path in ["/clients", "/clients?scope=cluster", "/clients?scope=local"] {
        let (status, body) = http_get(relay.admin, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains(UUID_A), "{path}: {body}");
    }
    for path in [
        "/clients?scope=bogus",
        "/clients?scope=",
        "/clients?scope=LOCAL",
    ] {
        let (status, body) = http_get(relay.admin, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains("cluster") && body.contains("local"),
            "{path}: the answer names the allowed values: {body}"
        );
    }
}

#[tokio::test]
async fn admin_token_guards_every_endpoint() {
    let mut settings = test_settings();
    settings.admin.token = Some(Secret::new("ops-secret"));
    let relay = TestRelay::start(settings);
    for path in ["/health", "/clients", "/metrics"] {
        assert_eq!(http_get(relay.admin, path, None).await.0, 401, "{path}");
        assert_eq!(
            http_get(relay.admin, path, Some("wrong")).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http_get(relay.admin, path, Some("ops-secret")).await.0,
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn public_listener_never_serves_admin_endpoints() {
    let relay = TestRelay::start(test_settings());
    for path in ["/health", "/clients", "/metrics"] {
        let (status, body) = http_get(relay.addr, path, None).await;
        assert_eq!(status, 400, "{path} on the public listener: {body}");
        assert!(!body.contains("switchboard_"), "{body}");
    }
    assert_still_serving(&relay.url).await;
}

#[tokio::test]
async fn dashboard_page_and_assets_need_no_token_and_hold_no_data() {
    let mut settings = test_settings();
    settings.admin.token = Some(Secret::new("ops-secret"));
    let relay = TestRelay::start(settings);
    let _a = client(&relay.url, "peer-A", UUID_A).await;
    let (status, html) = http_get(relay.admin, "/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("<title>Switchboard admin</title>"), "{html}");
    assert!(!html.contains("peer-A") && !html.contains(UUID_A), "{html}");
    for (asset, needle) in [
        ("app.js", "switchboardDashboard"),
        ("app.css", "font"),
        ("uPlot.iife.min.js", "uPlot"),
        ("uPlot.min.css", ".uplot"),
    ] {
        let (status, body) = http_get(relay.admin, &format!("/dashboard/{asset}"), None).await;
        assert_eq!(status, 200, "{asset}");
        assert!(body.contains(needle), "{asset}");
    }
    assert_eq!(
        http_get(relay.admin, "/dashboard/nope.js", None).await.0,
        404
    );
    assert_eq!(
        http_get(relay.admin, "/dashboard/../health", None).await.0,
        404
    );
    assert_eq!(http_get(relay.admin, "/clients", None).await.0, 401);
    // The public listener serves no dashboard either.
    assert_eq!(http_get(relay.addr, "/", None).await.0, 400);
}
