//! Relay client plumbing shared by the subcommands: target URL, connecting
//! (optionally from a chosen source address), registering, building frames of
//! an exact size, and reading `/proc` figures.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::protocol::pyjson::push_str;
use switchboard::protocol::relay::{encode_peer_connection, encode_registration};
use switchboard::protocol::{
    decode, DescriptionType, PeerConnection, RelayMessage, RelayRegistration,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// One client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// A relay to load: its URL (sent in the handshake) and its resolved address.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `ws://` URL as given.
    pub url: String,
    /// The first address the host resolved to.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and resolves a `ws://host:port[/path]` URL.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid relay URL {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => bail!("{url}: wss:// is not supported by the load generator; use ws://"),
            _ => bail!("{url}: the relay URL must start with ws://"),
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("{url}: the relay URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} resolved to no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
        })
    }
}

/// Buffer sizes for the client sockets: large for the flood, small for
/// thousands of idle clients.
pub fn ws_config(busy: bool) -> WebSocketConfig {
    if busy {
        WebSocketConfig::default()
            .read_buffer_size(128 * 1024)
            .write_buffer_size(128 * 1024)
    } else {
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
    }
}

/// Opens a TCP connection (from `source`, if given, with an ephemeral port)
/// and performs the WebSocket handshake.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> anyhow::Result<Ws> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("cannot create a TCP socket")?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind source address {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to {}", target.addr))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {} failed", target.url))?;
    Ok(ws)
}

/// Sends a `relay_registration` and waits for a successful `relay_response`.
pub async fn register(ws: &mut Ws, name: &str, uuid: Uuid) -> anyhow::Result<()> {
    let frame = encode_registration(&RelayRegistration {
        name: name.to_owned(),
        uuid,
    });
    ws.send(Message::text(frame))
        .await
        .context("cannot send relay_registration")?;
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("connection ended before relay_response"))?
            .context("connection failed before relay_response")?;
        match message {
            Message::Text(text) => match decode(text.as_str()) {
                Ok(RelayMessage::Response(response)) if response.success && !response.error => {
                    return Ok(())
                }
                Ok(RelayMessage::Response(response)) => {
                    bail!("registration refused: {:?}", response.message)
                }
                Ok(other) => bail!("expected relay_response, got {other:?}"),
                Err(error) => bail!("undecodable reply to relay_registration: {error}"),
            },
            Message::Close(frame) => {
                bail!("relay closed the connection on registration: {frame:?}")
            }
            // Pings are answered by tungstenite on the next read or write.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Binary(_) => bail!("unexpected binary frame before relay_response"),
        }
    }
}

/// Connects, registers as `name`/`uuid`, all within `timeout`.
pub async fn connect_registered(
    target: &Target,
    source: Option<IpAddr>,
    config: WebSocketConfig,
    name: &str,
    uuid: Uuid,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    tokio::time::timeout(timeout, async {
        let mut ws = connect(target, source, config).await?;
        register(&mut ws, name, uuid).await?;
        Ok(ws)
    })
    .await
    .map_err(|_| anyhow!("connect + register took longer than {timeout:?}"))?
}

/// Width of the sequence number written into every description.
const SEQ_WIDTH: usize = 10;

/// A `peer_connection` offer from `source` to `peer` whose encoded frame is
/// exactly `size` bytes: a plausible SDP carrying `seq`, padded with `x`.
pub fn peer_frame(
    source: Uuid,
    source_name: &str,
    peer: Uuid,
    seq: u64,
    size: usize,
) -> anyhow::Result<String> {
    let build = |pad: usize| {
        let mut sdp = String::with_capacity(size);
        sdp.push_str("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        sdp.push_str("a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        sdp.push_str("c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\n");
        sdp.push_str(&format!("a=x-seq:{seq:0width$}\r\n", width = SEQ_WIDTH));
        sdp.push_str("a=x-pad:");
        sdp.extend(std::iter::repeat_n('x', pad));
        sdp.push_str("\r\n");
        let mut description = String::with_capacity(size);
        description.push_str("{\"sdp\": ");
        push_str(&mut description, &sdp);
        description.push_str(", \"type\": \"offer\"}");
        encode_peer_connection(&PeerConnection {
            source_uuid: source,
            source_name: source_name.to_owned(),
            peer_uuid: peer,
            description_type: DescriptionType::Offer,
            description,
            error: None,
        })
    };
    let base = build(0).len();
    if size < base {
        bail!("--size {size} is too small: the smallest frame is {base} bytes");
    }
    let frame = build(size - base);
    if frame.len() != size {
        bail!(
            "internal error: built a {} byte frame, wanted {size}",
            frame.len()
        );
    }
    Ok(frame)
}

/// The sequence number written by [`peer_frame`] into a forwarded frame's description.
pub fn frame_seq(message: &PeerConnection) -> Option<u64> {
    let description: serde_json::Value = serde_json::from_str(&message.description).ok()?;
    let sdp = description.get("sdp")?.as_str()?;
    let start = sdp.find("a=x-seq:")? + "a=x-seq:".len();
    sdp.get(start..start + SEQ_WIDTH)?.parse().ok()
}

/// Checks that `text` is the forward of an offer from `source` to `peer`.
pub fn check_forwarded(text: &str, source: Uuid, peer: Uuid) -> anyhow::Result<PeerConnection> {
    match decode(text) {
        Ok(RelayMessage::PeerConnection(m)) => {
            if let Some(error) = &m.error {
                bail!("relay reported an error: {error}");
            }
            if m.source_uuid != source || m.peer_uuid != peer {
                bail!(
                    "forwarded frame has source {} / peer {}, expected {source} / {peer}",
                    m.source_uuid,
                    m.peer_uuid
                );
            }
            Ok(m)
        }
        Ok(other) => bail!("expected a peer_connection, got {other:?}"),
        Err(error) => bail!("undecodable forwarded frame: {error}"),
    }
}

/// Resident set of a process, in KiB: (VmRSS, RssAnon).
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| anyhow!("{path} has no {name} line"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// This process's soft limit on open files (`Max open files` in /proc/self/limits).
pub fn open_files_limit() -> anyhow::Result<u64> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or_else(|| anyhow!("/proc/self/limits has no `Max open files` line"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("malformed line {line:?}"))?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse()
        .with_context(|| format!("malformed open files limit {soft:?}"))
}
