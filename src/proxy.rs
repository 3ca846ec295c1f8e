//! Outbound connections through an HTTP proxy with `CONNECT` (RFC 9110
//! §9.3.6), for sites that allow only outbound HTTP through a proxy (common at
//! HPC centres): the host agent's connections to a relay's tunnel listener
//! and the peer library's relay WebSockets.
//!
//! Which proxy ([`ProxyConfig`]):
//! - [`ProxyConfig::Env`] (the default of `switchboard host`, `switchboard
//!   peer` and [`RelayClientConfig`](crate::client::relay_client::RelayClientConfig)):
//!   `HTTPS_PROXY`/`https_proxy`, else `ALL_PROXY`/`all_proxy`. Every
//!   connection is a `CONNECT` tunnel, the method those variables configure;
//!   `HTTP_PROXY` configures forwarding of plain `http://` requests, which
//!   Switchboard never makes, so it is not consulted.
//! - [`ProxyConfig::Url`]: one proxy for every destination (`--http-proxy`,
//!   the agent file's `http_proxy`).
//! - [`ProxyConfig::Direct`]: never a proxy.
//!
//! With `Env` and `Url` alike, `NO_PROXY`/`no_proxy` exempts destinations,
//! with curl's rules (hyper-util's matcher: `*`, host names and their
//! subdomains, IP addresses and CIDR ranges). A proxy URL is
//! `http://[user:password@]host[:port]` (percent-encoded credentials, sent as
//! `Proxy-Authorization: Basic`; port 1080 when absent, as curl); `https://`
//! and SOCKS proxies are refused at start, naming where the URL came from.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Port of a proxy URL without one (curl's default).
pub const DEFAULT_PROXY_PORT: u16 = 1080;
/// Largest answer to `CONNECT` read before giving up, in bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Headers parsed in the answer at most.
const MAX_ANSWER_HEADERS: usize = 64;

/// Where the proxy for outbound relay connections comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyConfig {
    /// `HTTPS_PROXY`/`https_proxy`, else `ALL_PROXY`/`all_proxy`; none set = direct.
    #[default]
    Env,
    /// This proxy URL (`http://[user:password@]host[:port]`).
    Url(String),
    /// Always connect directly.
    Direct,
}

/// Why a connection through (or the setting of) a proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy URL cannot be used; `origin` names where it came from
    /// (`--http-proxy`, `HTTPS_PROXY`, …).
    #[error("invalid proxy URL in {origin}: {reason}")]
    InvalidUrl {
        /// The flag, key or environment variable holding the URL.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination is not `host:port`.
    #[error("invalid destination `{target}`: {reason}")]
    InvalidTarget {
        /// The destination as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection (to the proxy, or directly to the destination) failed.
    #[error("cannot connect to {to}: {error}")]
    Connect {
        /// `the HTTP proxy host:port` or the destination.
        to: String,
        /// The socket error.
        error: std::io::Error,
    },
    /// The proxy answered `CONNECT` with a status other than 2xx.
    #[error("the HTTP proxy {proxy} refused a tunnel to {target}: HTTP {status} {reason}{hint}")]
    Refused {
        /// The proxy's `host:port`.
        proxy: String,
        /// The destination asked for.
        target: String,
        /// The HTTP status code.
        status: u16,
        /// The status line's reason phrase.
        reason: String,
        /// What to do about it (407: credentials).
        hint: &'static str,
    },
    /// The proxy's answer is not HTTP, too long, or followed by data.
    #[error("the HTTP proxy {proxy} gave an unusable answer to CONNECT {target}: {reason}")]
    BadAnswer {
        /// The proxy's `host:port`.
        proxy: String,
        /// The destination asked for.
        target: String,
        /// What was wrong.
        reason: String,
    },
    /// Connecting (and the proxy's answer) took longer than the caller's limit.
    #[error("timed out connecting to {target}{via}")]
    Timeout {
        /// The destination.
        target: String,
        /// ` through the HTTP proxy host:port`, or empty.
        via: String,
    },
}

/// A resolved proxy choice: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Proxy {
    matcher: Option<Arc<Matcher>>,
    /// Where the proxy URL came from, for messages.
    origin: String,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matcher's Debug would print credentials.
        f.debug_struct("Proxy")
            .field("origin", &self.origin)
            .field("enabled", &self.matcher.is_some())
            .finish()
    }
}

/// The first of `names` set in the environment (even if empty), with its value.
fn first_env(names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().map(|value| (*name, value)))
}

/// Checks `url` is `http://[user:password@]host[:port]` (no scheme = http).
fn check_url(origin: &str, url: &str) -> Result<(), ProxyError> {
    let invalid = |reason: String| ProxyError::InvalidUrl {
        origin: origin.to_owned(),
        reason,
    };
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(format!("`{}`: {e}", mask(url))))?;
    match uri.scheme_str() {
        None | Some("http") => {}
        Some(other) => {
            return Err(invalid(format!(
                "scheme `{other}://` is not supported: only http:// proxies (HTTP CONNECT)"
            )))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("no host:port".into()))?;
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if host_port.is_empty() || authority.host().is_empty() {
        return Err(invalid("no host".into()));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(invalid("a proxy URL has no path".into()));
    }
    Ok(())
}

/// `url` with any `user:password@` replaced by `***@`, for messages.
pub fn mask(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

impl Proxy {
    /// Never a proxy.
    pub fn direct() -> Proxy {
        Proxy {
            matcher: None,
            origin: "no proxy".into(),
        }
    }

    /// Resolves `config` (reading the environment for `Env` and for
    /// `NO_PROXY`); `origin` names the flag or key of a `Url`.
    ///
    /// Errors: [`ProxyError::InvalidUrl`] naming `origin` or the variable.
    pub fn new(config: &ProxyConfig, origin: &str) -> Result<Proxy, ProxyError> {
        let (origin, url) = match config {
            ProxyConfig::Direct => return Ok(Proxy::direct()),
            ProxyConfig::Url(url) => (origin.to_owned(), url.clone()),
            ProxyConfig::Env => {
                match first_env(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]) {
                    Some((name, value)) if !value.trim().is_empty() => (name.to_owned(), value),
                    _ => return Ok(Proxy::direct()),
                }
            }
        };
        check_url(&origin, &url)?;
        let no = first_env(&["NO_PROXY", "no_proxy"]).map_or(String::new(), |(_, v)| v);
        let matcher = Matcher::builder().https(url.trim()).no(no).build();
        Ok(Proxy {
            matcher: Some(Arc::new(matcher)),
            origin,
        })
    }

    /// The proxy `host:port` a connection to `target` (`host:port`) goes
    /// through, with its `Proxy-Authorization` value; `None` = direct.
    fn route(&self, target: &Authority) -> Option<(String, Option<http::HeaderValue>)> {
        let matcher = self.matcher.as_ref()?;
        let uri = Uri::builder()
            .scheme("https")
            .authority(target.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let intercept = matcher.intercept(&uri)?;
        let proxy = intercept.uri().authority()?;
        let port = proxy.port_u16().unwrap_or(DEFAULT_PROXY_PORT);
        Some((
            format!("{}:{port}", proxy.host()),
            intercept.basic_auth().cloned(),
        ))
    }

    /// Whether connections to `target` (`host:port`) go through a proxy.
    pub fn is_used_for(&self, target: &str) -> bool {
        target
            .parse::<Authority>()
            .ok()
            .and_then(|a| self.route(&a))
            .is_some()
    }

    /// A TCP stream to `target` (`host:port`): direct, or a tunnel through
    /// the proxy, all within `timeout`.
    ///
    /// Errors: [`ProxyError::InvalidTarget`], [`ProxyError::Connect`],
    /// [`ProxyError::Refused`] (status, reason; 407 says to give
    /// credentials), [`ProxyError::BadAnswer`], [`ProxyError::Timeout`].
    pub async fn connect(&self, target: &str, timeout: Duration) -> Result<TcpStream, ProxyError> {
        let authority: Authority =
            target
                .parse()
                .map_err(|e: http::uri::InvalidUri| ProxyError::InvalidTarget {
                    target: target.to_owned(),
                    reason: e.to_string(),
                })?;
        if authority.port_u16().is_none() {
            return Err(ProxyError::InvalidTarget {
                target: target.to_owned(),
                reason: "no port".into(),
            });
        }
        let Some((proxy, auth)) = self.route(&authority) else {
            let dial = TcpStream::connect(target);
            return match tokio::time::timeout(timeout, dial).await {
                Err(_) => Err(ProxyError::Timeout {
                    target: target.to_owned(),
                    via: String::new(),
                }),
                Ok(result) => result.map_err(|error| ProxyError::Connect {
                    to: target.to_owned(),
                    error,
                }),
            };
        };
        log::debug!(
            "connecting to {target} through the HTTP proxy {proxy} (from {})",
            self.origin
        );
        let tunnel = open_tunnel(&proxy, target, auth.as_ref());
        match tokio::time::timeout(timeout, tunnel).await {
            Err(_) => Err(ProxyError::Timeout {
                target: target.to_owned(),
                via: format!(" through the HTTP proxy {proxy}"),
            }),
            Ok(result) => result,
        }
    }
}

/// Connects to `proxy`, asks for a tunnel to `target`, reads the answer.
async fn open_tunnel(
    proxy: &str,
    target: &str,
    auth: Option<&http::HeaderValue>,
) -> Result<TcpStream, ProxyError> {
    let mut stream = TcpStream::connect(proxy)
        .await
        .map_err(|error| ProxyError::Connect {
            to: format!("the HTTP proxy {proxy}"),
            error,
        })?;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = auth {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let io_error = |error| ProxyError::Connect {
        to: format!("the HTTP proxy {proxy}"),
        error,
    };
    stream.write_all(&request).await.map_err(io_error)?;
    let bad = |reason: String| ProxyError::BadAnswer {
        proxy: proxy.to_owned(),
        target: target.to_owned(),
        reason,
    };
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io_error)?;
        if n == 0 {
            return Err(bad(format!(
                "the connection closed after {} bytes of the answer",
                answer.len()
            )));
        }
        answer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&answer) {
            Err(e) => return Err(bad(format!("not an HTTP answer ({e})"))),
            Ok(httparse::Status::Partial) if answer.len() > MAX_ANSWER_BYTES => {
                return Err(bad(format!("headers longer than {MAX_ANSWER_BYTES} bytes")))
            }
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(length)) => {
                let status = response.code.unwrap_or(0);
                if !(200..300).contains(&status) {
                    return Err(ProxyError::Refused {
                        proxy: proxy.to_owned(),
                        target: target.to_owned(),
                        status,
                        reason: response.reason.unwrap_or("").to_owned(),
                        // tinyproxy answers bad credentials with 401, not 407.
                        hint: match (status, auth.is_some()) {
                            (407, false) => " (give user:password in the proxy URL)",
                            (401 | 407, true) => " (the proxy refused the credentials given)",
                            _ => "",
                        },
                    });
                }
                if length < answer.len() {
                    // Both relay protocols have the client speak first: bytes
                    // here were not sent by the relay.
                    return Err(bad(format!(
                        "{} bytes followed the answer before anything was sent",
                        answer.len() - length
                    )));
                }
                return Ok(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_proxy_urls_are_accepted() {
        for good in [
            "http://proxy:3128",
            "proxy.example.org:8080",
            "http://u:p%40ss@proxy:3128/",
        ] {
            assert!(check_url("k", good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("https://proxy:3128", "https://"),
            ("socks5://proxy:1080", "socks5://"),
            ("ftp://proxy", "ftp://"),
            ("http://", "empty"),
            ("http://:3128", "host"),
            ("http://proxy:3128/path", "no path"),
            ("http://pro xy:1", "invalid"),
        ] {
            let error = check_url("--http-proxy", bad).unwrap_err().to_string();
            assert!(error.contains("--http-proxy"), "{error}");
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn credentials_are_masked() {
        assert_eq!(mask("http://u:secret@p:1"), "http://***@p:1");
        assert_eq!(mask("u:secret@p:1"), "***@p:1");
        assert_eq!(mask("http://p:1"), "http://p:1");
        let proxy = Proxy::new(&ProxyConfig::Url("http://u:secret@p:1".into()), "k").unwrap();
        assert!(!format!("{proxy:?}").contains("secret"));
    }

    #[test]
    fn a_url_proxy_routes_with_its_port_credentials_and_default_port() {
        let proxy = Proxy::new(&ProxyConfig::Url("http://a:b@proxy:3128".into()), "k").unwrap();
        let (at, auth) = proxy.route(&"relay:8702".parse().unwrap()).unwrap();
        assert_eq!(at, "proxy:3128");
        assert_eq!(auth.unwrap(), "Basic YTpi");
        let proxy = Proxy::new(&ProxyConfig::Url("proxy".into()), "k").unwrap();
        let (at, auth) = proxy.route(&"relay:8702".parse().unwrap()).unwrap();
        assert_eq!(at, format!("proxy:{DEFAULT_PROXY_PORT}"));
        assert!(auth.is_none());
        assert!(!Proxy::direct().is_used_for("relay:8702"));
    }
}
