//! The admin HTTP listener: `GET /health`, `GET /clients`, `GET /metrics`,
//! and `GET /tunnels` (the TCP tunnel's services, agents and pools).
//!
//! It runs on its own listener (loopback by default), never on the public
//! one. With `admin.token` set, every request needs
//! `Authorization: Bearer <token>` or gets 401.

pub mod metrics;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use crate::server::messages::ListClients;
use crate::server::{counts, ServerState};

/// Starts the admin server on `listener` (one worker: it serves operators, not clients).
pub fn serve(state: Arc<ServerState>, listener: TcpListener) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/health", web::get().to(health))
            .route("/clients", web::get().to(clients))
            .route("/metrics", web::get().to(metrics))
            .route("/tunnels", web::get().to(tunnels))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

/// `Some(401 response)` when an admin token is configured and the request lacks it.
fn denied(req: &HttpRequest, state: &ServerState) -> Option<HttpResponse> {
    let token = state.settings.admin.token.as_ref()?;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given == Some(token.expose()) {
        None
    } else {
        log::warn!(
            "admin request to {} without a valid token from {:?}",
            req.path(),
            req.peer_addr().map(crate::addr::canonical)
        );
        Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({"error": "admin token required"})),
        )
    }
}

async fn health(req: HttpRequest, state: web::Data<ServerState>) -> HttpResponse {
    if let Some(response) = denied(&req, &state) {
        return response;
    }
    match counts(&state).await {
        Some(c) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "uptime_seconds": state.started.elapsed().as_secs_f64(),
            "connected": c.connected,
            "registered": c.registered,
        })),
        None => HttpResponse::ServiceUnavailable().json(json!({"status": "registry unavailable"})),
    }
}

async fn clients(req: HttpRequest, state: web::Data<ServerState>) -> HttpResponse {
    if let Some(response) = denied(&req, &state) {
        return response;
    }
    let list = match state.registry.get() {
        Some(registry) => registry.send(ListClients).await.ok(),
        None => None,
    };
    match list {
        Some(list) => HttpResponse::Ok().json(list),
        None => HttpResponse::ServiceUnavailable().json(json!({"status": "registry unavailable"})),
    }
}

async fn metrics(req: HttpRequest, state: web::Data<ServerState>) -> HttpResponse {
    if let Some(response) = denied(&req, &state) {
        return response;
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

async fn tunnels(req: HttpRequest, state: web::Data<ServerState>) -> HttpResponse {
    if let Some(response) = denied(&req, &state) {
        return response;
    }
    match &state.tunnel {
        Some(tunnel) => HttpResponse::Ok().json(tunnel.status()),
        None => HttpResponse::Ok().json(json!({"services": [], "active": 0})),
    }
}
