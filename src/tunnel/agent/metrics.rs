//! The host agent's own metrics listener (`metrics_listen`): `GET /metrics`
//! (Prometheus text: every running agent's [`AgentStats`], labelled by
//! `service` and `relay`) and `GET /health` (each agent's connected state).
//!
//! [`AgentMetrics`] is the table of agents that `switchboard host` keeps
//! as it starts, restarts and stops them, live reloads included. A scrape
//! renders the agents in the table at that moment: the series of a service
//! a reload removed are gone from the next scrape, and a restarted agent
//! (its settings changed) counts from 0 again, a counter reset as after a
//! process restart. An agent the relay refused for good stays, shown
//! disconnected with its reason in `/health`, until a reload removes it.
//!
//! [`MetricsServer::start`] serves the table on an already-bound listener
//! from a thread of its own (one actix-web worker: it serves operators and
//! scrapers, not clients); with a token, each request needs
//! `Authorization: Bearer <token>` or gets 401.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::settings::AgentStats;
use crate::admin::metrics::ResultLabels;
use crate::config::Secret;

/// Label set of every per-agent series: the service and the relay node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    /// The service name.
    pub service: String,
    /// The relay node's agents listener, as configured (`host:port`).
    pub relay: String,
}

/// One agent in the table.
struct Entry {
    stats: Arc<AgentStats>,
    udp: bool,
    refused: Option<String>,
}

/// The running agents by (service, relay), and the reload counts.
#[derive(Default)]
pub struct AgentMetrics {
    agents: Mutex<BTreeMap<(String, String), Entry>>,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
}

impl AgentMetrics {
    /// A new, empty table.
    pub fn new() -> Arc<AgentMetrics> {
        Arc::new(AgentMetrics::default())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An agent started (or restarted: its predecessor's counters are dropped).
    pub fn insert(&self, service: &str, relay: &str, stats: Arc<AgentStats>, udp: bool) {
        let entry = Entry {
            stats,
            udp,
            refused: None,
        };
        self.table()
            .insert((service.to_owned(), relay.to_owned()), entry);
    }

    /// An agent a reload removed: its series go.
    pub fn remove(&self, service: &str, relay: &str) {
        self.table().remove(&(service.to_owned(), relay.to_owned()));
    }

    /// An agent the relay refused for good: kept, with `reason`.
    pub fn refused(&self, service: &str, relay: &str, reason: &str) {
        if let Some(entry) = self
            .table()
            .get_mut(&(service.to_owned(), relay.to_owned()))
        {
            entry.refused = Some(reason.to_owned());
        }
    }

    /// Counts one reload: applied (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus (OpenMetrics) text of every agent in the table now.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("switchboard_agent");
        let r = &mut registry;
        let connected = gauges(r, "connected", "Control channel up (1) or not (0)");
        let idle = gauges(r, "idle_connections", "Idle pooled data connections");
        let sessions = counters(r, "sessions", "Control sessions established");
        let served = counters(
            r,
            "clients_served",
            "Clients connected to the local service",
        );
        let failures = counters(r, "local_failures", "Clients whose local dial failed");
        let to_local = counters(
            r,
            "udp_datagrams_to_local",
            "Datagrams from the relay sent to the local UDP service",
        );
        let from_local = counters(
            r,
            "udp_datagrams_from_local",
            "Datagrams from the local UDP service carried to the relay",
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        r.register(
            "reloads",
            "Live reloads of the settings, by result (ok: applied; error: refused)",
            reloads.clone(),
        );
        for (result, count) in [("ok", &self.reloads_ok), ("error", &self.reloads_error)] {
            reloads
                .get_or_create(&ResultLabels { result })
                .inc_by(count.load(Ordering::Relaxed));
        }
        for ((service, relay), entry) in self.table().iter() {
            let labels = AgentLabels {
                service: service.clone(),
                relay: relay.clone(),
            };
            let s = &entry.stats;
            let up = s.connected.load(Ordering::Acquire);
            connected.get_or_create(&labels).set(i64::from(up));
            let pooled = i64::try_from(s.idle.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            idle.get_or_create(&labels).set(pooled);
            let add = |family: &Family<AgentLabels, Counter>, value: &AtomicU64| {
                family
                    .get_or_create(&labels)
                    .inc_by(value.load(Ordering::Relaxed));
            };
            add(&sessions, &s.sessions);
            add(&served, &s.served);
            add(&failures, &s.local_failures);
            if entry.udp {
                add(&to_local, &s.datagrams_to_local);
                add(&from_local, &s.datagrams_from_local);
            }
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// `/health`: each agent's connected state (and a refusal's reason);
    /// `status` is `ok` when every agent is connected, else `degraded`.
    pub fn health(&self) -> serde_json::Value {
        let table = self.table();
        let agents: Vec<serde_json::Value> = table
            .iter()
            .map(|((service, relay), entry)| {
                json!({
                    "service": service,
                    "relay": relay,
                    "connected": entry.stats.connected.load(Ordering::Acquire),
                    "refused": entry.refused,
                })
            })
            .collect();
        let up = agents.iter().filter(|a| a["connected"] == true).count();
        json!({
            "status": if up == agents.len() { "ok" } else { "degraded" },
            "connected": up,
            "agents": agents,
        })
    }
}

fn gauges(r: &mut Registry, name: &str, help: &str) -> Family<AgentLabels, Gauge> {
    let family = Family::<AgentLabels, Gauge>::default();
    r.register(name, help, family.clone());
    family
}

fn counters(r: &mut Registry, name: &str, help: &str) -> Family<AgentLabels, Counter> {
    let family = Family::<AgentLabels, Counter>::default();
    r.register(name, help, family.clone());
    family
}

/// What the handlers share.
struct Shared {
    metrics: Arc<AgentMetrics>,
    token: Option<Secret>,
}

/// The HTTP server of `metrics` on `listener`; must run inside an actix System.
fn serve(
    metrics: Arc<AgentMetrics>,
    token: Option<Secret>,
    listener: TcpListener,
) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let data = web::Data::new(Shared { metrics, token });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(render))
            .route("/health", web::get().to(health))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}

/// `Some(401)` when a token is set and the request does not carry it.
fn denied(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    let token = shared.token.as_ref()?;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::protocol::bearer::bearer_token);
    if given == Some(token.expose()) {
        return None;
    }
    log::warn!("agent metrics: request to {} without the token", req.path());
    Some(
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(json!({"error": "metrics token required"})),
    )
}

async fn render(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(response) = denied(&req, &shared) {
        return response;
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(shared.metrics.render())
}

async fn health(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(response) = denied(&req, &shared) {
        return response;
    }
    HttpResponse::Ok().json(shared.metrics.health())
}

/// The metrics listener, running on a thread of its own.
pub struct MetricsServer {
    handle: ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `metrics` on `listener` (already bound) until [`stop`](Self::stop).
    pub fn start(
        metrics: Arc<AgentMetrics>,
        token: Option<Secret>,
        listener: TcpListener,
    ) -> std::io::Result<MetricsServer> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("agent-metrics".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match serve(metrics, token, listener) {
                        Ok(server) => {
                            let _ = tx.send(Ok(server.handle()));
                            if let Err(e) = server.await {
                                log::error!("agent metrics: the listener failed: {e}");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the metrics thread ended at start"))??;
        Ok(MetricsServer { handle, thread })
    }

    /// Stops serving (open requests get a second) and waits for the thread.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}
