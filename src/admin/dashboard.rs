//! The admin dashboard: `GET /` on the admin listener serves one page, and
//! `/dashboard/…` its script, style sheet and chart library, all built into
//! the binary (nothing is fetched from elsewhere).
//!
//! The page and its assets carry no data and need no token: a browser cannot
//! add a bearer header to a page load. The page asks for the admin token (a
//! password field, or a `#token=…` fragment in the address, which never
//! leaves the browser and which the page removes from the address bar),
//! keeps it in the tab's `sessionStorage`, and fetches `/health`,
//! `/clients`, `/tunnels` and `/metrics` with `Authorization: Bearer`. Those
//! endpoints answer 401 without the right token, and the page then shows
//! no data and says so. Every 2 s it reads them again; the charts'
//! rates (forwards/s, tunnel bytes/s) are differences of `/metrics`
//! counters between two reads.

use actix_web::{web, HttpResponse};

/// The page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// The page's script.
const APP_JS: &str = include_str!("dashboard/app.js");
/// The page's style sheet.
const APP_CSS: &str = include_str!("dashboard/app.css");
/// uPlot, vendored (see `dashboard/vendor/README.md`).
const UPLOT_JS: &str = include_str!("dashboard/vendor/uPlot.iife.min.js");
/// uPlot's style sheet.
const UPLOT_CSS: &str = include_str!("dashboard/vendor/uPlot.min.css");

/// What the page may load and where it may connect: this listener only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Adds the dashboard's routes (no token needed: they carry no data).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(index))
        .route("/dashboard/{file}", web::get().to(asset));
}

async fn index() -> HttpResponse {
    respond("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => return HttpResponse::NotFound().finish(),
    };
    respond(content_type, body)
}

fn respond(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}
