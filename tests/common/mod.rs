//! Shared test helpers: a real relay on 127.0.0.1:0 in its own actix System,
//! real WebSocket clients (tokio-tungstenite) and a tiny HTTP GET for admin.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard::config::Settings;
use switchboard::node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub const UUID_A: &str = "0b02e3e1-3e68-41e9-9712-6aedce7b75db";
pub const UUID_B: &str = "fce0cb8b-0f0a-4378-9ead-6136be5877b7";
pub const UUID_C: &str = "5a4f9b1e-8a8b-4c52-9d55-1f0e4d2c7b10";

/// Settings for tests: loopback, ephemeral ports, two workers.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.workers = 2;
    settings.admin.host = "127.0.0.1".into();
    settings.admin.port = 0;
    settings
}

/// A relay running in a background thread; stopped (gracefully) on drop.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRelay {
    pub fn start(settings: Settings) -> TestRelay {
        let public = TcpListener::bind("127.0.0.1:0").unwrap();
        TestRelay::start_on(settings, public)
    }

    /// Starts a relay on an already-bound public listener.
    pub fn start_on(settings: Settings, public: TcpListener) -> TestRelay {
        let _ = env_logger::builder().is_test(true).try_init();
        let tls = settings.server.certfile.is_some();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let admin = TcpListener::bind("127.0.0.1:0").unwrap();
                let relay = node::start(settings, public, Some(admin)).unwrap();
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                tx.send((relay.public_addr(), relay.admin_addr().unwrap(), stop_tx))
                    .unwrap();
                let _ = stop_rx.await;
                relay.shutdown().await;
            })
        });
        let (addr, admin, stop) = rx.recv_timeout(WAIT).expect("relay did not start");
        let scheme = if tls { "wss" } else { "ws" };
        TestRelay {
            addr,
            admin,
            url: format!("{scheme}://127.0.0.1:{}", addr.port()),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Asks the relay to shut down (sessions get 1001) and waits for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn connect(url: &str) -> Ws {
    connect_with(url, &[]).await
}

/// Connects with extra request headers (e.g. Authorization).
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Ws {
    let host = url.split("//").nth(1).unwrap_or(url).to_string();
    let mut request = Request::builder()
        .uri(url)
        .header("Host", host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(request.body(()).unwrap()),
    )
    .await
    .expect("connect timed out")
    .expect("connect failed");
    ws
}

pub fn registration(name: &str, uuid: &str) -> String {
    format!(r#"{{"name": "{name}", "uuid": "{uuid}", "message_type": "relay_registration"}}"#)
}

pub const SUCCESS: &str =
    r#"{"success": true, "message": null, "error": false, "message_type": "relay_response"}"#;

pub fn offer(source: &str, peer: &str, kind: &str) -> String {
    format!(
        r#"{{"source_uuid": "{source}", "source_name": "peer-A", "peer_uuid": "{peer}", "description_type": "{kind}", "description": "{{\"sdp\": \"v=0\\r\\n...\", \"type\": \"{kind}\"}}", "error": null, "message_type": "peer_connection"}}"#
    )
}

pub async fn send(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::text(text.into()))
        .await
        .expect("send failed");
}

/// Next text frame (pings are answered by tungstenite); panics on close or timeout.
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("recv timed out");
        match next {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Registers and asserts the relay's exact success frame.
pub async fn register(ws: &mut Ws, name: &str, uuid: &str) {
    send(ws, registration(name, uuid)).await;
    assert_eq!(recv_text(ws).await, SUCCESS);
}

/// Connects and registers.
pub async fn client(url: &str, name: &str, uuid: &str) -> Ws {
    let mut ws = connect(url).await;
    register(&mut ws, name, uuid).await;
    ws
}

/// Waits for the server's close frame and returns (code, reason).
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close within 5 s");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Proves the relay still serves: two fresh clients exchange an offer.
pub async fn assert_still_serving(url: &str) {
    let a = uuid::Uuid::new_v4().to_string();
    let b = uuid::Uuid::new_v4().to_string();
    let mut ca = client(url, "check-a", &a).await;
    let mut cb = client(url, "check-b", &b).await;
    let frame = offer(&a, &b, "offer");
    send(&mut ca, frame.clone()).await;
    assert_eq!(recv_text(&mut cb).await, frame);
    let _ = ca.close(None).await;
    let _ = cb.close(None).await;
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Bodies from actix may be chunked; tests only look for substrings or
    // parse JSON, so strip chunk framing when present.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `/clients` until `pred` holds on its JSON, or panics after 5 s.
pub async fn wait_clients(
    admin: SocketAddr,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(admin, "/clients", None).await;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if pred(&json) {
            return json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition on /clients never held: {json}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether `/clients` lists `uuid`.
pub fn lists(json: &serde_json::Value, uuid: &str) -> bool {
    json.as_array().unwrap().iter().any(|c| c["uuid"] == uuid)
}

impl TestRelay {
    /// Starts a relay on `addr` (e.g. the address of a relay just stopped),
    /// retrying the bind for up to [`WAIT`] while the old socket goes away.
    pub fn start_at(settings: Settings, addr: SocketAddr) -> TestRelay {
        let deadline = std::time::Instant::now() + WAIT;
        let public = loop {
            match TcpListener::bind(addr) {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() < deadline => {
                    log::debug!("rebinding {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        TestRelay::start_on(settings, public)
    }
}
pub mod fixtures;
pub mod forwarder;
pub mod introspect;
pub mod log_lines;
pub mod peers;
pub mod procs;
pub mod raw_ws;
pub mod refusing;
pub mod relay_client;

#[allow(unused_imports)]
pub use fixtures::{self_signed, tls_settings, token_settings, Pem};
