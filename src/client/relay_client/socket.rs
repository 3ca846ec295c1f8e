//! The relay's address and the WebSocket handshake: URL and header
//! validation, TLS connector choice, connecting within a timeout, and turning
//! handshake failures into [`RelayClientError`]s.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{RelayClientConfig, RelayClientError};
use crate::client::tls;
use crate::defaults::RELAY_CLIENT_MAX_FRAME_BYTES;
use crate::protocol::close;
use crate::proxy::{Proxy, ProxyError};

/// An open relay WebSocket.
pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Everything needed to (re)connect, validated once in `RelayClient::new`.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// The URL as configured (for logs and events).
    pub(super) url: String,
    uri: Uri,
    headers: HeaderMap,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `host:port` to dial (the scheme's port when the URL has none).
    target: String,
    proxy: Proxy,
}

impl Endpoint {
    /// Every relay of `config` (`url`, then `fallback_urls`), each validated.
    pub(super) fn all(config: &RelayClientConfig) -> Result<Vec<Endpoint>, RelayClientError> {
        config
            .urls()
            .map(|url| Endpoint::new(config, url))
            .collect()
    }

    /// Validates `url` (`ws://` or `wss://` with a host) and the headers,
    /// and builds the TLS configuration for `wss://`.
    fn new(config: &RelayClientConfig, url: &str) -> Result<Endpoint, RelayClientError> {
        let invalid = |reason: &str| RelayClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri =
            url.parse()
                .map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| {
                    invalid(&e.to_string())
                })?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(_) => return Err(invalid("the scheme must be ws:// or wss://")),
            None => return Err(invalid("missing scheme (ws:// or wss://)")),
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(invalid("missing host"));
        };
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let target = format!("{host}:{port}");
        let proxy = Proxy::new(&config.http_proxy, "http_proxy")
            .map_err(|e| RelayClientError::InvalidProxy(e.to_string()))?;
        let tls = if secure {
            Some(
                tls::client_config(&config.tls)
                    .map_err(|e| RelayClientError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Endpoint {
            url: url.to_owned(),
            uri,
            headers: headers(&config.headers)?,
            tls,
            target,
            proxy,
        })
    }

    /// Opens the WebSocket (TCP, directly or through the HTTP proxy; TLS;
    /// upgrade with the extra headers) within `timeout`.
    pub(super) async fn connect(self, timeout: Duration) -> Result<Ws, RelayClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut request = self
            .uri
            .into_client_request()
            .map_err(|e| RelayClientError::Connect(e.to_string()))?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name, value.clone());
        }
        let tcp = match self.proxy.connect(&self.target, timeout).await {
            Ok(tcp) => tcp,
            Err(ProxyError::Timeout { .. }) => return Err(RelayClientError::Timeout),
            Err(error) => return Err(RelayClientError::Connect(error.to_string())),
        };
        let _ = tcp.set_nodelay(true);
        let connector = match self.tls {
            Some(config) => Connector::Rustls(config),
            None => Connector::Plain,
        };
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(RELAY_CLIENT_MAX_FRAME_BYTES))
            .max_frame_size(Some(RELAY_CLIENT_MAX_FRAME_BYTES));
        let handshake = tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(ws_config),
            Some(connector),
        );
        match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => Err(RelayClientError::Timeout),
            Ok(Err(error)) => Err(classify(error)),
            Ok(Ok((ws, _response))) => Ok(ws),
        }
    }
}

fn headers(pairs: &[(String, String)]) -> Result<HeaderMap, RelayClientError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let invalid = |reason: String| RelayClientError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        map.append(header, value);
    }
    Ok(map)
}

/// Sorts a handshake failure: HTTP 401/403 are rejections (never retried),
/// rustls failures are TLS errors, the rest are connection errors.
pub(super) fn classify(error: WsError) -> RelayClientError {
    match error {
        WsError::Http(response) => {
            let status = response.status();
            let reason = format!("HTTP {status} at the WebSocket upgrade");
            match status.as_u16() {
                401 => RelayClientError::Rejected {
                    code: close::UNAUTHORIZED,
                    reason,
                },
                403 => RelayClientError::Rejected {
                    code: close::FORBIDDEN,
                    reason,
                },
                _ => RelayClientError::Connect(reason),
            }
        }
        WsError::Tls(error) => RelayClientError::Tls(error.to_string()),
        WsError::Io(error) => {
            let rustls_error = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match rustls_error {
                Some(tls_error) => RelayClientError::Tls(tls_error.to_string()),
                None => RelayClientError::Connect(error.to_string()),
            }
        }
        other => RelayClientError::Connect(other.to_string()),
    }
}
