//! An actix-web application that embeds a [`PeerManager`] and lets HTTP
//! clients talk to WebRTC peers.
//!
//! ```text
//! cargo run --example peer_http -- --relay ws://127.0.0.1:8700 --listen 127.0.0.1:8080
//! curl -X POST -H 'Content-Type: text/plain' -d 'hello' http://127.0.0.1:8080/send/<peer-uuid>
//! curl -X POST --data-binary @file.bin http://127.0.0.1:8080/send/<peer-uuid>
//! curl http://127.0.0.1:8080/recv          # next message as JSON, or 204 after 1 s
//! curl http://127.0.0.1:8080/status
//! ```
//!
//! `POST /send/{peer}` sends the body as text for `text/*` or
//! `application/json`, as bytes otherwise, and answers 200 once the message is
//! handed to the data channels. Errors are `{"error": kind, "message": text}`:
//! 400 bad UUID, non-UTF-8 text or our own UUID; 404 peer unknown to the relay;
//! 503 not registered with the relay; 504 timeout; 502 other failures. Flags
//! may come from the environment (`PEER_HTTP_RELAY`, `PEER_HTTP_LISTEN`, ...).
//! The manager is started once, in the application's System, before
//! `HttpServer::new`; every worker shares its `Addr` through `web::Data`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError};
use clap::Parser;
use serde_json::json;
use switchboard::client::connection::ConnectionError;
use switchboard::client::peer_manager::{
    Close, PeerError, PeerManager, PeerManagerConfig, Recv, Send, Status,
};
use switchboard::protocol::chunk::Payload;
use uuid::Uuid;

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send may take, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `GET /recv` waits for a message before answering 204.
const RECV_WAIT: Duration = Duration::from_secs(1);
/// Largest request body accepted by `POST /send`.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Parser, Debug)]
struct Args {
    /// Relay URL (ws:// or wss://).
    #[arg(long, env = "PEER_HTTP_RELAY")]
    relay: String,
    /// HTTP address to serve on.
    #[arg(long, env = "PEER_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// UUID to register under (default: random).
    #[arg(long, env = "PEER_HTTP_UUID")]
    uuid: Option<Uuid>,
    /// Local address for ICE candidates (repeatable; default: every interface).
    #[arg(long = "bind", env = "PEER_HTTP_BIND", value_delimiter = ',')]
    bind: Vec<IpAddr>,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(switchboard::logging::WEBRTC_QUIET),
    )
    .init();
    let args = Args::parse();
    let mut config = PeerManagerConfig::new(args.relay);
    config.relay.uuid = args.uuid;
    if !args.bind.is_empty() {
        config.connection.bind_addrs = args.bind;
    }
    config.connection.connect_timeout = CONNECT_TIMEOUT;
    // One manager for the whole application, started before the HTTP workers.
    let manager = PeerManager::new(config)
        .map_err(std::io::Error::other)?
        .start();
    let state = web::Data::new(manager.clone());
    log::info!("serving http://{}", args.listen);
    let served = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/send/{peer}", web::post().to(send))
            .route("/recv", web::get().to(recv))
            .route("/status", web::get().to(status))
    })
    .bind(args.listen)?
    .run()
    .await;
    // Close the peer connections cleanly before the System goes away.
    let _ = manager.send(Close).await;
    served
}

async fn send(
    manager: web::Data<Addr<PeerManager>>,
    peer: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let peer = Uuid::parse_str(&peer).map_err(|_| ApiError::BadUuid(peer.into_inner()))?;
    let payload = if is_text(&request) {
        Payload::Text(String::from_utf8(body.to_vec()).map_err(|_| ApiError::NotUtf8)?)
    } else {
        Payload::Bytes(body)
    };
    let len = payload.len();
    let sent = tokio::time::timeout(SEND_TIMEOUT, manager.send(Send { peer, payload }))
        .await
        .map_err(|_| ApiError::Timeout(SEND_TIMEOUT))?;
    match sent? {
        Ok(()) => {}
        // The manager reports "we are not registered" like a relay echo; tell them apart.
        Err(PeerError::Connection {
            error: ConnectionError::Relay(reason),
            ..
        }) if !manager.send(Status).await?.registered => return Err(ApiError::NoRelay(reason)),
        Err(error) => return Err(error.into()),
    }
    Ok(HttpResponse::Ok().json(json!({"peer": peer, "len": len})))
}

async fn recv(manager: web::Data<Addr<PeerManager>>) -> Result<HttpResponse, ApiError> {
    let message = match manager.send(Recv(Some(RECV_WAIT))).await? {
        Err(PeerError::RecvTimeout(_)) => return Ok(HttpResponse::NoContent().finish()),
        result => result?,
    };
    let body = match &message.payload {
        Payload::Text(text) => {
            json!({"peer": message.peer, "kind": "text", "len": text.len(), "text": text})
        }
        Payload::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!({"peer": message.peer, "kind": "bytes", "len": bytes.len(), "hex": hex})
        }
    };
    Ok(HttpResponse::Ok().json(body))
}

async fn status(manager: web::Data<Addr<PeerManager>>) -> Result<HttpResponse, ApiError> {
    let s = manager.send(Status).await?;
    let body = json!({"uuid": s.uuid, "name": s.name, "registered": s.registered,
                      "peers": s.peers, "relay_sessions": s.relay_sessions});
    Ok(HttpResponse::Ok().json(body))
}

/// `text/*` and `application/json` bodies are sent as text.
fn is_text(request: &HttpRequest) -> bool {
    let content_type = request.content_type();
    content_type.starts_with("text/") || content_type == "application/json"
}

/// Everything a request can fail with, as an HTTP status and a JSON body.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0:?} is not a UUID")]
    BadUuid(String),
    #[error("a text body must be UTF-8")]
    NotUtf8,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not registered with the relay: {0}")]
    NoRelay(String),
    #[error("the peer manager has stopped")]
    Stopped(#[from] MailboxError),
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl ApiError {
    /// The HTTP status and the `error` field of the JSON body.
    fn kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadUuid(_) => (StatusCode::BAD_REQUEST, "bad_uuid"),
            ApiError::NotUtf8 => (StatusCode::BAD_REQUEST, "not_utf8"),
            ApiError::Peer(PeerError::SelfSend(_)) => (StatusCode::BAD_REQUEST, "self_send"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::NoRelay(_) => (StatusCode::SERVICE_UNAVAILABLE, "relay_unavailable"),
            ApiError::Stopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
            ApiError::Peer(PeerError::Connection { error, .. }) => match error {
                ConnectionError::Relay(_) => (StatusCode::NOT_FOUND, "unknown_peer"),
                ConnectionError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                _ => (StatusCode::BAD_GATEWAY, "connection_failed"),
            },
            // A final verdict of the relay (4001/4002/4004): the manager is done.
            ApiError::Peer(PeerError::Relay(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "relay_rejected")
            }
            ApiError::Peer(_) => (StatusCode::BAD_GATEWAY, "peer_manager"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, kind) = self.kind();
        HttpResponse::build(status).json(json!({"error": kind, "message": self.to_string()}))
    }
}
