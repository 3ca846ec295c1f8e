//! `switchboard peer`: a WebRTC peer on the command line.
//!
//! `listen` prints one JSON line per message that arrives (sender UUID, kind,
//! length, the text or a hex preview of bytes); `send` delivers one message
//! and exits 0 only once the peer's SCTP stack has acknowledged every chunk
//! of it (else 1, saying how many bytes of how many were acknowledged).
//!
//! Every exit (done, `--count` reached, an error, SIGINT or SIGTERM) closes
//! the peer manager: connections flush, and the relay WebSocket ends with a
//! close handshake (1000), so the relay sees a normal close. A second signal
//! during that close exits at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use clap::{Args, Subcommand};
use switchboard::client::connection::ice::turn_rest_credentials;
use switchboard::client::connection::{ConnectionError, IceServer};
use switchboard::client::peer_manager::{
    Close, Flush, PeerError, PeerEvent, PeerManager, PeerManagerConfig, PeerMessage, Recv, Send,
    SubscribeEvents,
};
use switchboard::logging;
use switchboard::protocol::chunk::Payload;
use switchboard::proxy::ProxyConfig;
use uuid::Uuid;

/// `eprintln!` that never panics: with stderr closed (a pipe whose reader
/// went away) the line is dropped, where `eprintln!` would abort with 101.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics (see `say_err!`); the line is flushed at once
/// so that a reader sees each event as it happens.
macro_rules! say_out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// Arguments of `switchboard peer`.
#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Relay URL (ws:// or wss://); repeat it for the nodes of a cluster:
    /// after a lost session the peer tries the next one at once, in turn.
    #[arg(long, value_name = "URL", required = true)]
    relay: Vec<String>,
    /// UUID to register under (default: random).
    #[arg(long, value_name = "UUID")]
    uuid: Option<Uuid>,
    /// Name to register under (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Data channels per outgoing connection.
    #[arg(long, default_value_t = switchboard::defaults::PEER_CHANNELS)]
    channels: usize,
    /// Local address to gather ICE candidates on (repeatable; default: every interface).
    #[arg(long = "bind", value_name = "IP")]
    bind: Vec<IpAddr>,
    /// STUN/TURN server URL (repeatable), e.g. stun:stun.example.org:3478.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// TURN user name for every --ice-server (with --turn-credential), or the
    /// user part of --turn-secret's credentials.
    #[arg(long, value_name = "USER")]
    turn_username: Option<String>,
    /// TURN credential for every --ice-server.
    #[arg(long, value_name = "SECRET", env = "SWITCHBOARD_TURN_CREDENTIAL")]
    turn_credential: Option<String>,
    /// TURN REST API shared secret (coturn's static-auth-secret): time-limited
    /// credentials are made from it for every turn: --ice-server, with
    /// --turn-username (default "switchboard") as the user part.
    #[arg(
        long,
        value_name = "SECRET",
        env = "SWITCHBOARD_TURN_SECRET",
        hide_env_values = true,
        conflicts_with = "turn_credential"
    )]
    turn_secret: Option<String>,
    /// Lifetime of the credentials made from --turn-secret, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 86_400,
        requires = "turn_secret"
    )]
    turn_ttl: u64,
    /// Extra upgrade header "Name: value" (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// File holding a bearer token, sent as "Authorization: Bearer <token>".
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA to trust for wss:// (instead of the web PKI roots).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Accept any relay certificate (testing only).
    #[arg(long)]
    insecure: bool,
    /// Reach the relay through this HTTP proxy (CONNECT):
    /// http://[user:password@]host[:port]. Default: HTTPS_PROXY, else
    /// ALL_PROXY; NO_PROXY exempts relays.
    #[arg(long, value_name = "URL")]
    http_proxy: Option<String>,
    /// Seconds to wait for the relay and for a peer connection.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Log filter (default: warn).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    action: PeerAction,
}

#[derive(Subcommand, Debug)]
enum PeerAction {
    /// Print every message that arrives, with its sender's UUID.
    Listen {
        /// Exit after this many messages (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Send every message back to its sender.
        #[arg(long)]
        echo: bool,
    },
    /// Send one message to a peer.
    Send {
        /// The receiver's UUID.
        peer: Uuid,
        /// Text to send.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Send this file's bytes instead.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// Runs `switchboard peer`.
pub fn run(args: PeerArgs) -> ExitCode {
    logging::init(args.log_level.as_deref(), logging::WEBRTC_QUIET);
    // Settings errors (a bad URL, header or file) exit 2, like the relay's.
    let manager = match build_config(&args).and_then(|c| Ok(PeerManager::new(c)?)) {
        Ok(manager) => manager,
        Err(error) => {
            say_err!("switchboard peer: {error}");
            return ExitCode::from(2);
        }
    };
    let result = actix_rt::System::new().block_on(drive(manager, args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say_err!("switchboard peer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(args: &PeerArgs) -> anyhow::Result<PeerManagerConfig> {
    let mut config = PeerManagerConfig::new(args.relay[0].clone());
    config.relay.fallback_urls = args.relay[1..].to_vec();
    config.relay.uuid = args.uuid;
    config.relay.name = args.name.clone();
    config.relay.tls.ca_file = args.ca_file.clone();
    config.relay.tls.insecure_skip_verify = args.insecure;
    if let Some(url) = &args.http_proxy {
        // Checked here so the message names the flag.
        switchboard::proxy::Proxy::new(&ProxyConfig::Url(url.clone()), "--http-proxy")?;
        config.relay.http_proxy = ProxyConfig::Url(url.clone());
    }
    // Each relay gets its share of --timeout (at most the library's 10 s per
    // attempt), so a relay that accepts and never answers cannot use up the
    // whole registration budget before the next --relay is tried.
    let share = Duration::from_secs(args.timeout) / args.relay.len().max(1) as u32;
    config.relay.connect_timeout = share
        .min(Duration::from_millis(
            switchboard::defaults::RELAY_CONNECT_TIMEOUT_MS,
        ))
        .max(Duration::from_millis(100));
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header {header:?} is not \"Name: value\""))?;
        config
            .relay
            .headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
        config
            .relay
            .headers
            .push(("Authorization".into(), format!("Bearer {}", token.trim())));
    }
    config.connection.channels = args.channels;
    if !args.bind.is_empty() {
        config.connection.bind_addrs = args.bind.clone();
    }
    config.connection.connect_timeout = Duration::from_secs(args.timeout);
    let has_turn = args.ice_servers.iter().any(|u| u.starts_with("turn"));
    if !has_turn
        && (args.turn_secret.is_some()
            || args.turn_credential.is_some()
            || args.turn_username.is_some())
    {
        anyhow::bail!("TURN credentials given but no turn: --ice-server to use them with");
    }
    if args.turn_secret.as_deref() == Some("") {
        anyhow::bail!("--turn-secret (SWITCHBOARD_TURN_SECRET) is empty");
    }
    if args.turn_ttl == 0 {
        anyhow::bail!("--turn-ttl must be at least 1 second");
    }
    let (username, credential) = match &args.turn_secret {
        Some(secret) => turn_rest_credentials(
            secret,
            args.turn_username.as_deref().unwrap_or("switchboard"),
            Duration::from_secs(args.turn_ttl),
            std::time::SystemTime::now(),
        ),
        None => (
            args.turn_username.clone().unwrap_or_default(),
            args.turn_credential.clone().unwrap_or_default(),
        ),
    };
    config.connection.ice_servers = args
        .ice_servers
        .iter()
        .map(|url| IceServer {
            urls: vec![url.clone()],
            username: username.clone(),
            credential: credential.clone(),
        })
        .collect();
    Ok(config)
}

async fn drive(manager: PeerManager, args: PeerArgs) -> anyhow::Result<()> {
    let mut interrupted = watch_signals()?;
    let manager = manager.start();
    let sending = matches!(args.action, PeerAction::Send { .. });
    let outcome = tokio::select! {
        outcome = act(&manager, args) => outcome,
        Ok(()) = interrupted.changed() => {
            let signal = interrupted.borrow().unwrap_or("a signal");
            log::info!("received {signal}; closing");
            if sending {
                Err(anyhow::anyhow!("interrupted by {signal} before the peer acknowledged the message"))
            } else {
                Ok(())
            }
        }
    };
    // Flushes every connection and ends the relay session with a close handshake.
    let closed = manager.send(Close).await?;
    match closed {
        // `listen` promises the messages it printed, not its echoes: a peer
        // that exits as soon as it has the echo (ProxyStore's peers do) may
        // close before acknowledging the last packets. Said, not failed.
        Err(error) if !sending => {
            log::warn!("{error}");
            outcome
        }
        closed => outcome.and(closed.map_err(Into::into)),
    }
}

/// Watches SIGTERM and SIGINT: the first is reported through the returned
/// channel, a second one exits at once (without closing).
fn watch_signals() -> anyhow::Result<tokio::sync::watch::Receiver<Option<&'static str>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if tx.borrow().is_some() {
                say_err!("switchboard peer: {signal} again; exiting without closing");
                std::process::exit(1);
            }
            tx.send_replace(Some(signal));
        }
    });
    Ok(rx)
}

/// Registers, then listens or sends.
async fn act(manager: &Addr<PeerManager>, args: PeerArgs) -> anyhow::Result<()> {
    let uuid = wait_registered(manager, Duration::from_secs(args.timeout)).await?;
    match args.action {
        PeerAction::Listen { count, echo } => {
            say_out!("{}", serde_json::json!({"event": "ready", "uuid": uuid}));
            listen(manager, count, echo).await
        }
        PeerAction::Send { peer, text, file } => {
            let payload = match (text, file) {
                (_, Some(path)) => Payload::Bytes(
                    std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                        .into(),
                ),
                (Some(text), None) => Payload::Text(text),
                (None, None) => Payload::Text(String::new()),
            };
            let len = payload.len();
            send(manager, peer, payload).await?;
            say_err!("sent {len} bytes to {peer}");
            Ok(())
        }
    }
}

/// Sends one message and waits until the peer acknowledged all of it; an
/// error says how many of its bytes the peer acknowledged.
async fn send(manager: &Addr<PeerManager>, peer: Uuid, payload: Payload) -> anyhow::Result<()> {
    let len = payload.len();
    let mut result = manager.send(Send { peer, payload }).await?;
    if result.is_ok() {
        // Handed over is not delivered: wait for the peer's acknowledgement.
        result = manager.send(Flush(peer)).await?;
    }
    let Err(error) = result else {
        return Ok(());
    };
    // A connection that ended (or was closed on a relay verdict) during the
    // hand-over recorded how far the peer got; a failure before it sent nothing.
    let error = match acknowledged(&error) {
        Some(_) => error,
        None => match manager.send(Flush(peer)).await? {
            Err(lost) if acknowledged(&lost).is_some() => lost,
            _ => error,
        },
    };
    match acknowledged(&error) {
        Some((acked, reason)) => Err(anyhow::anyhow!(
            "connection to {peer}: the peer acknowledged {acked} of {len} bytes ({reason})"
        )),
        None => Err(anyhow::anyhow!(
            "{error} (the peer acknowledged 0 of {len} bytes)"
        )),
    }
}

/// The bytes acknowledged and the reason, if `error` is about unacknowledged data.
fn acknowledged(error: &PeerError) -> Option<(u64, &str)> {
    match error {
        PeerError::Connection {
            error: ConnectionError::Unacknowledged { acked, reason, .. },
            ..
        } => Some((*acked, reason.as_str())),
        _ => None,
    }
}

/// Waits for the first registration, or fails with the relay's reason.
async fn wait_registered(manager: &Addr<PeerManager>, limit: Duration) -> anyhow::Result<Uuid> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    manager
        .send(SubscribeEvents(Forward(tx).start().recipient()))
        .await?;
    let wait = async {
        while let Some(event) = rx.recv().await {
            match event {
                PeerEvent::Registered { uuid } => {
                    tokio::spawn(print_connections(rx));
                    return Ok(uuid);
                }
                PeerEvent::RelayFailed(error) => return Err(anyhow::anyhow!("relay: {error}")),
                // The library has already warned, with the retry delay.
                PeerEvent::RelayLost { reason } => log::debug!("relay: {reason}; retrying"),
                _ => {}
            }
        }
        Err(anyhow::anyhow!("peer manager stopped"))
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| anyhow::anyhow!("not registered with the relay within {limit:?}"))?
}

/// Prints a `connected` JSON line on stdout for every peer connection that
/// opens: the peer, the candidate pair ICE selected and the set-up time.
async fn print_connections(mut events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) {
    while let Some(event) = events.recv().await {
        if let PeerEvent::Connected { peer, route } = event {
            let line = match route {
                Some(route) => serde_json::json!({
                    "event": "connected",
                    "peer": peer,
                    "local_candidate": route.local.as_str(),
                    "remote_candidate": route.remote.as_str(),
                    "local_addr": route.local_addr.map(|a| a.to_string()),
                    "remote_addr": route.remote_addr.map(|a| a.to_string()),
                    "setup_ms": (route.setup.as_secs_f64() * 1e4).round() / 10.0,
                }),
                None => serde_json::json!({"event": "connected", "peer": peer}),
            };
            say_out!("{line}");
        }
    }
}

async fn listen(manager: &Addr<PeerManager>, count: Option<u64>, echo: bool) -> anyhow::Result<()> {
    let mut seen = 0u64;
    while count.is_none_or(|limit| seen < limit) {
        let message = manager.send(Recv(None)).await??;
        say_out!("{}", describe(&message));
        seen += 1;
        if echo {
            let reply = Send {
                peer: message.peer,
                payload: message.payload,
            };
            if let Err(error) = manager.send(reply).await? {
                log::warn!("echo to {} failed: {error}", message.peer);
            }
        }
    }
    Ok(())
}

/// One JSON line describing a received message; `sha256` hashes its bytes
/// (UTF-8 for text), so a large message can be checked without printing it.
fn describe(message: &PeerMessage) -> serde_json::Value {
    use sha2::Digest;
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let sha256 = hex(&sha2::Sha256::digest(message.payload.as_bytes()));
    match &message.payload {
        Payload::Text(text) => serde_json::json!({
            "event": "recv", "peer": message.peer, "kind": "text", "len": text.len(), "text": text,
            "sha256": sha256,
        }),
        Payload::Bytes(bytes) => serde_json::json!({
            "event": "recv", "peer": message.peer, "kind": "bytes", "len": bytes.len(),
            "hex_preview": hex(&bytes[..bytes.len().min(32)]), "sha256": sha256,
        }),
    }
}

/// Forwards PeerEvents to a channel.
struct Forward(tokio::sync::mpsc::UnboundedSender<PeerEvent>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<PeerEvent> for Forward {
    type Result = ();
    fn handle(&mut self, event: PeerEvent, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}
