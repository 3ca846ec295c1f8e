//! The admin HTTP listener: `GET /health`, `GET /clients`, `GET /metrics`,
//! and `GET /tunnels` (the TCP tunnel's services, agents and pools).
//!
//! [`serve`] is a function of a [`View`], the admin token and an
//! already-bound listener; it returns the (not yet spawned) HTTP server.
//! The admin listener knows nothing of the relay or the tunnel: it shows
//! only what the `View` the relay node builds gives it (the relay's counts
//! and registered clients, the tunnel's state, the process's [`Metrics`]
//! and uptime). [`metrics`] is the one struct holding every metric of the
//! process; the relay and the tunnel are handed it to count into.
//!
//! `/health` also says whether the node's cluster link is `"up"`,
//! `"degraded"` or `"off"` and how many nodes are alive (a degraded cluster
//! still answers 200: a Redis outage must not fail every node's health
//! check); `/clients` lists the whole cluster, each entry naming its node
//! (`?scope=local`: this node's only); `/metrics` adds the cluster engine's
//! counters.
//!
//! `GET /` is the [`dashboard`], a page that reads those endpoints.
//!
//! It runs on its own listener (loopback by default), never on the public
//! one. With `admin.token` set, every request for data needs
//! `Authorization: Bearer <token>` or gets 401 (the dashboard's page and
//! assets carry no data and are served without it).

pub mod dashboard;
pub mod metrics;

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;
use serde_json::json;

use crate::config::Secret;
use metrics::Metrics;

/// Open and registered counts, as `/health` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Open WebSocket sessions.
    pub connected: usize,
    /// Registered UUIDs.
    pub registered: usize,
}

/// The node's link to a cluster, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// `"up"`, `"degraded"` or `"off"` (cluster disabled).
    pub state: &'static str,
    /// The ids of the live nodes in the cluster; `None` when off or when
    /// Redis cannot say.
    pub nodes: Option<Vec<String>>,
}

/// Which clients `/clients` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every node's (the default; this node's alone with the cluster off).
    Cluster,
    /// This node's only (`?scope=local`).
    Local,
}

/// What the admin endpoints read, built by whoever composes the process
/// (the relay node). Each method answers one endpoint.
pub trait View: Send + Sync + 'static {
    /// One registered client as `/clients` lists it.
    type Client: Serialize;
    /// The tunnel's state as `/tunnels` shows it.
    type Tunnels: Serialize;

    /// How long the process has been serving (`/health`).
    fn uptime(&self) -> Duration;
    /// Open and registered counts (`/health`); `None` when the relay's
    /// registry cannot answer.
    fn counts(&self) -> impl Future<Output = Option<Counts>>;
    /// The registered clients (`/clients`) of `scope`; `None` when the
    /// relay's registry cannot answer.
    fn clients(&self, scope: Scope) -> impl Future<Output = Option<Vec<Self::Client>>>;
    /// The cluster link (`/health`).
    fn cluster(&self) -> impl Future<Output = ClusterHealth>;
    /// More metrics in the OpenMetrics text format, without `# EOF`
    /// (`/metrics`, after [`View::metrics`]); empty by default.
    fn extra_metrics(&self) -> String {
        String::new()
    }
    /// The tunnel's state (`/tunnels`); `None` when no tunnel runs.
    fn tunnels(&self) -> Option<Self::Tunnels>;
    /// Every metric (`/metrics`).
    fn metrics(&self) -> &Metrics;
}

/// What the handlers share: the view and the token.
struct Admin<V> {
    view: V,
    token: Option<Secret>,
}

/// Starts the admin server on `listener` (one worker: it serves operators,
/// not clients); with `token`, every request must carry it.
pub fn serve<V: View>(
    view: V,
    token: Option<Secret>,
    listener: TcpListener,
) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let data = web::Data::new(Admin { view, token });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/health", web::get().to(health::<V>))
            .route("/clients", web::get().to(clients::<V>))
            .route("/metrics", web::get().to(metrics::<V>))
            .route("/tunnels", web::get().to(tunnels::<V>))
            .configure(dashboard::routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

/// `Some(401 response)` when an admin token is configured and the request lacks it.
fn denied<V>(req: &HttpRequest, admin: &Admin<V>) -> Option<HttpResponse> {
    let token = admin.token.as_ref()?;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::protocol::bearer::bearer_token);
    if given == Some(token.expose()) {
        None
    } else {
        log::warn!(
            "admin request to {} without a valid token from {}",
            req.path(),
            crate::addr::shown(req.peer_addr())
        );
        Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({"error": "admin token required"})),
        )
    }
}

async fn health<V: View>(req: HttpRequest, admin: web::Data<Admin<V>>) -> HttpResponse {
    if let Some(response) = denied(&req, &admin) {
        return response;
    }
    let cluster = admin.view.cluster().await;
    match admin.view.counts().await {
        Some(c) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "uptime_seconds": admin.view.uptime().as_secs_f64(),
            "connected": c.connected,
            "registered": c.registered,
            "cluster": cluster.state,
            "cluster_nodes": cluster.nodes.as_ref().map(Vec::len),
            "cluster_node_ids": cluster.nodes,
        })),
        None => HttpResponse::ServiceUnavailable().json(json!({"status": "registry unavailable"})),
    }
}

async fn clients<V: View>(req: HttpRequest, admin: web::Data<Admin<V>>) -> HttpResponse {
    if let Some(response) = denied(&req, &admin) {
        return response;
    }
    let scope = match scope_of(req.query_string()) {
        Ok(scope) => scope,
        Err(given) => {
            return HttpResponse::BadRequest().json(json!({
                "error": format!("scope {given:?} is neither \"cluster\" nor \"local\""),
                "allowed": ["cluster", "local"],
            }))
        }
    };
    match admin.view.clients(scope).await {
        Some(list) => HttpResponse::Ok().json(list),
        None => HttpResponse::ServiceUnavailable().json(json!({"status": "registry unavailable"})),
    }
}

/// The `scope` query parameter of `/clients` (default `cluster`); `Err`
/// carries a value that is neither `cluster` nor `local`.
fn scope_of(query: &str) -> Result<Scope, String> {
    let mut scope = Scope::Cluster;
    for value in query.split('&').filter_map(|p| p.strip_prefix("scope=")) {
        scope = match value {
            "cluster" => Scope::Cluster,
            "local" => Scope::Local,
            other => return Err(other.to_owned()),
        };
    }
    Ok(scope)
}

async fn metrics<V: View>(req: HttpRequest, admin: web::Data<Admin<V>>) -> HttpResponse {
    if let Some(response) = denied(&req, &admin) {
        return response;
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(with_extra(
            admin.view.metrics().render(),
            &admin.view.extra_metrics(),
        ))
}

async fn tunnels<V: View>(req: HttpRequest, admin: web::Data<Admin<V>>) -> HttpResponse {
    if let Some(response) = denied(&req, &admin) {
        return response;
    }
    match admin.view.tunnels() {
        Some(tunnels) => HttpResponse::Ok().json(tunnels),
        None => HttpResponse::Ok().json(json!({"services": [], "active": 0})),
    }
}

/// `rendered` (ending with `# EOF`) with `extra` before its end marker.
fn with_extra(rendered: String, extra: &str) -> String {
    if extra.is_empty() {
        return rendered;
    }
    let body = rendered
        .strip_suffix("# EOF\n")
        .unwrap_or(&rendered)
        .to_owned();
    format!("{body}{extra}# EOF\n")
}
