//! A real OAuth 2.0 token introspection endpoint (RFC 7662) on
//! 127.0.0.1:0 in its own thread: the stand-in for an identity provider
//! (and for Globus Auth, whose endpoint a test-only setting redirects here).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;

use super::WAIT;

/// The audience ProxyStore's relay requires by default (Globus method).
pub const PROXYSTORE_AUDIENCE: &str = "ebd5bbed-95e2-47cf-9c80-39e2064274bd";
/// The Globus identity (`sub`) of token `globus-ada`.
pub const ADA_SUB: &str = "7c2f4e1a-9b3d-4c8e-a1f0-5d6e7f8a9b0c";

#[derive(serde::Deserialize)]
struct IntrospectForm {
    token: String,
}

/// The `Authorization` header the relay must send: Basic `id:secret`.
struct Expected(String);

async fn introspect(
    req: HttpRequest,
    form: web::Form<IntrospectForm>,
    calls: web::Data<AtomicUsize>,
    expected: web::Data<Expected>,
) -> HttpResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let auth = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(expected.0.as_str()) {
        return HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_client"}));
    }
    HttpResponse::Ok().json(answer(&form.token))
}

/// What the provider knows about each token.
fn answer(token: &str) -> serde_json::Value {
    use serde_json::json;
    match token {
        "alice-oauth" => {
            json!({"active": true, "sub": "alice-id", "aud": ["switchboard", "other"], "username": "alice"})
        }
        "alice-again" => json!({"active": true, "sub": "alice-id", "aud": "switchboard"}),
        "bob-oauth" => json!({"active": true, "sub": "bob-id", "aud": "switchboard"}),
        "wrong-aud" => json!({"active": true, "sub": "eve-id", "aud": "another-service"}),
        "no-sub" => json!({"active": true, "aud": "switchboard"}),
        // Globus-shaped answers: ProxyStore's audience (and the docs' "...").
        "globus-ada" => json!({
            "active": true, "sub": ADA_SUB, "username": "ada@example.org",
            "aud": [PROXYSTORE_AUDIENCE, "..."], "scope": "relay_all"
        }),
        "globus-elsewhere" => json!({
            "active": true, "sub": "3e9d1c2b-0000-4000-8000-000000000001",
            "aud": ["another-resource-server"]
        }),
        _ => json!({"active": false}),
    }
}

/// A running stand-in; stopped on drop.
pub struct Provider {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Provider {
    /// A provider that knows the relay as `relay-app` / `s3cret`.
    pub fn start() -> Provider {
        Provider::start_for("relay-app", "s3cret")
    }

    /// A provider that knows the relay as `client_id` / `client_secret`.
    pub fn start_for(client_id: &str, client_secret: &str) -> Provider {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{client_secret}"));
        let expected = web::Data::new(Expected(format!("Basic {basic}")));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let calls = web::Data::new(AtomicUsize::new(0));
                let shared = calls.clone().into_inner();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(calls.clone())
                        .app_data(expected.clone())
                        .route("/oauth2/introspect", web::post().to(introspect))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                tx.send((addr, shared, server.handle())).unwrap();
                let _ = server.await;
            })
        });
        let (addr, calls, handle) = rx.recv_timeout(WAIT).unwrap();
        Provider {
            addr,
            calls,
            handle,
        }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/oauth2/introspect", self.addr)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        std::thread::spawn(move || actix_rt::System::new().block_on(handle.stop(false)));
    }
}
