//! The `RelayClient` actor: connect, register, read, write, reconnect.

use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::stream::{self, SplitSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use super::socket::{Endpoint, Ws};
use super::{RelayClientConfig, RelayClientError, RelayEvent};
use crate::client::backoff::Backoff;
use crate::defaults::{
    RELAY_CLIENT_CLOSE_WAIT_MS, RELAY_CLIENT_DEFAULT_NAME, RELAY_CLIENT_IDLE_TIMEOUT_MS,
    RELAY_CLIENT_QUEUE,
};
use crate::protocol::relay::encode_registration;
use crate::protocol::{close, decode, RelayMessage, RelayRegistration, RelayResponse};

mod handlers;

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the retry timer.
    Waiting,
    /// Opening the WebSocket.
    Connecting,
    /// Registration sent, waiting for the relay's response.
    Registering,
    /// Registered; descriptions can be sent.
    Registered,
    /// Closing for good (Shutdown or a fatal error).
    Closing,
}

/// One open WebSocket and the futures serving it.
struct Session {
    /// Frames for the writer; `None` once the writer must finish.
    out: Option<mpsc::Sender<Message>>,
    reader: SpawnHandle,
    writer: SpawnHandle,
    watchdog: SpawnHandle,
    register_timer: Option<SpawnHandle>,
    /// The relay's close frame, once received.
    close: Option<(u16, String)>,
    last_seen: Instant,
}

/// One item of the current socket's read side, tagged with its connection.
struct Inbound {
    generation: u64,
    /// `None` marks the end of the stream.
    item: Option<Result<Message, WsError>>,
}

/// One relay session, reconnecting with backoff until rejected or shut down.
pub struct RelayClient {
    /// Every relay, in the order they are tried; at least one.
    endpoints: Vec<Endpoint>,
    /// The one in use (or tried next).
    current: usize,
    /// Attempts that failed (or sessions lost) since a relay last accepted
    /// our registration: a whole round of them means back off.
    round_failures: usize,
    uuid: Uuid,
    name: String,
    connect_timeout: Duration,
    stable_after: Duration,
    subscriber: Recipient<RelayEvent>,
    backoff: Backoff,
    phase: Phase,
    /// Bumped for every connection attempt; callbacks of older ones are ignored.
    generation: u64,
    session: Option<Session>,
    /// The connect attempt or retry timer in flight.
    pending: Option<SpawnHandle>,
    attempts: u64,
    registrations: u64,
    last_error: Option<RelayClientError>,
    registered_at: Option<Instant>,
    /// Callers of `Shutdown`; dropped with the actor, which wakes them.
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl RelayClient {
    /// Validates the URL and headers, loads the TLS configuration and
    /// resolves the name (default: host name) and UUID (default: random).
    /// Nothing connects until the actor is started.
    pub fn new(
        config: RelayClientConfig,
        subscriber: Recipient<RelayEvent>,
    ) -> Result<Self, RelayClientError> {
        let endpoints = Endpoint::all(&config)?;
        let name = config.name.unwrap_or_else(|| {
            hostname::get()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| RELAY_CLIENT_DEFAULT_NAME.to_owned())
        });
        Ok(RelayClient {
            endpoints,
            current: 0,
            round_failures: 0,
            uuid: config.uuid.unwrap_or_else(Uuid::new_v4),
            name,
            connect_timeout: config.connect_timeout,
            stable_after: config.backoff.stable_after,
            subscriber,
            backoff: Backoff::new(config.backoff),
            phase: Phase::Waiting,
            generation: 0,
            session: None,
            pending: None,
            attempts: 0,
            registrations: 0,
            last_error: None,
            registered_at: None,
            stop_waiters: Vec::new(),
        })
    }

    /// The UUID this client registers under.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The name this client registers under.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        // At most one socket and one attempt at a time (a second registration
        // of our UUID would take the first over with 4004).
        self.teardown(ctx);
        self.generation += 1;
        self.attempts += 1;
        self.phase = Phase::Connecting;
        let generation = self.generation;
        let endpoint = self.endpoints[self.current].clone();
        log::debug!(
            "relay client {}: connecting to {} (attempt {})",
            self.uuid,
            endpoint.url,
            self.attempts
        );
        let attempt = endpoint.connect(self.connect_timeout);
        let handle = ctx.spawn(
            wrap_future(attempt).map(move |result, act: &mut Self, ctx| {
                if act.generation != generation || act.phase != Phase::Connecting {
                    return;
                }
                act.pending = None;
                match result {
                    Ok(ws) => act.open(ws, ctx),
                    Err(error) => act.attempt_failed(error, ctx),
                }
            }),
        );
        self.pending = Some(handle);
    }

    fn attempt_failed(&mut self, error: RelayClientError, ctx: &mut Context<Self>) {
        if error.is_final() {
            self.fail(error, ctx);
        } else {
            self.retry(error, None, ctx);
        }
    }

    /// Starts reading and writing the new socket and sends the registration.
    fn open(&mut self, ws: Ws, ctx: &mut Context<Self>) {
        let generation = self.generation;
        let (sink, source) = ws.split();
        let (out, queue) = mpsc::channel(RELAY_CLIENT_QUEUE);
        let tagged = source
            .map(move |item| Inbound {
                generation,
                item: Some(item),
            })
            .chain(stream::once(async move {
                Inbound {
                    generation,
                    item: None,
                }
            }));
        let reader = ctx.add_stream(tagged);
        let writer = ctx.spawn(
            wrap_future(write_all(sink, queue))
                .map(move |result, act: &mut Self, ctx| act.writer_done(generation, result, ctx)),
        );
        let idle = Duration::from_millis(RELAY_CLIENT_IDLE_TIMEOUT_MS);
        let watchdog = ctx.run_interval(idle / 4, move |act, ctx| act.check_idle(generation, ctx));
        let register_timer = ctx.run_later(self.connect_timeout, move |act, ctx| {
            if act.generation == generation && act.phase == Phase::Registering {
                act.session_ended(Some(RelayClientError::Timeout), ctx);
            }
        });
        let registration = encode_registration(&RelayRegistration {
            name: self.name.clone(),
            uuid: self.uuid,
        });
        if out.try_send(Message::text(registration)).is_err() {
            log::error!(
                "relay client {}: a fresh queue refused the registration",
                self.uuid
            );
        }
        self.session = Some(Session {
            out: Some(out),
            reader,
            writer,
            watchdog,
            register_timer: Some(register_timer),
            close: None,
            last_seen: Instant::now(),
        });
        self.phase = Phase::Registering;
        log::debug!(
            "relay client {}: connected, registering as {:?}",
            self.uuid,
            self.name
        );
    }

    fn check_idle(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let idle = Duration::from_millis(RELAY_CLIENT_IDLE_TIMEOUT_MS);
        let silent = match &self.session {
            Some(session) if self.generation == generation => session.last_seen.elapsed() > idle,
            _ => false,
        };
        if silent {
            let error = format!("nothing heard from the relay for {} s", idle.as_secs());
            self.session_ended(Some(RelayClientError::Socket(error)), ctx);
        }
    }

    fn writer_done(
        &mut self,
        generation: u64,
        result: Result<(), WsError>,
        ctx: &mut Context<Self>,
    ) {
        let Err(error) = result else { return };
        if self.generation != generation || self.session.is_none() {
            return;
        }
        log::debug!("relay client {}: write failed: {error}", self.uuid);
        if let Some(session) = self.session.as_mut() {
            session.out = None;
        }
        // The read side usually ends right after (with the relay's close frame,
        // if any); give it a moment before calling the session lost.
        let error = RelayClientError::Socket(error.to_string());
        ctx.run_later(
            Duration::from_millis(RELAY_CLIENT_CLOSE_WAIT_MS),
            move |act, ctx| {
                if act.generation == generation && act.session.is_some() {
                    act.session_ended(Some(error), ctx);
                }
            },
        );
    }

    /// The socket is gone: stop, fail or retry depending on how it ended.
    fn session_ended(&mut self, error: Option<RelayClientError>, ctx: &mut Context<Self>) {
        let close = self.session.as_mut().and_then(|s| s.close.take());
        self.teardown(ctx);
        if self.phase == Phase::Closing {
            ctx.stop();
            return;
        }
        match close {
            Some((code, reason))
                if [close::UNAUTHORIZED, close::FORBIDDEN, close::REPLACED].contains(&code) =>
            {
                self.fail(RelayClientError::Rejected { code, reason }, ctx)
            }
            Some((code, reason)) => self.retry(
                RelayClientError::ClosedByRelay { code, reason },
                Some(code),
                ctx,
            ),
            None => {
                let error = error.unwrap_or_else(|| {
                    RelayClientError::Socket("connection closed without a close frame".into())
                });
                self.retry(error, None, ctx)
            }
        }
    }

    fn teardown(&mut self, ctx: &mut Context<Self>) {
        if let Some(session) = self.session.take() {
            ctx.cancel_future(session.reader);
            ctx.cancel_future(session.writer);
            ctx.cancel_future(session.watchdog);
            if let Some(timer) = session.register_timer {
                ctx.cancel_future(timer);
            }
        }
        if let Some(pending) = self.pending.take() {
            ctx.cancel_future(pending);
        }
    }

    /// Reports a transient loss and schedules the next attempt.
    fn retry(&mut self, error: RelayClientError, code: Option<u16>, ctx: &mut Context<Self>) {
        if let Some(since) = self.registered_at.take() {
            if since.elapsed() >= self.stable_after {
                self.backoff.reset();
            }
        }
        // The next relay at once while some of this round are untried; a
        // whole round failed: back off, then start the next round.
        self.round_failures += 1;
        self.current = (self.current + 1) % self.endpoints.len();
        let retry_in = if self.round_failures < self.endpoints.len() {
            Duration::ZERO
        } else {
            self.round_failures = 0;
            self.backoff.next_delay()
        };
        let reason = match &error {
            RelayClientError::ClosedByRelay { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        log::warn!(
            "relay client {}: {error}; retrying in {} ms on {}",
            self.uuid,
            retry_in.as_millis(),
            self.endpoints[self.current].url
        );
        self.last_error = Some(error);
        self.phase = Phase::Waiting;
        // One retry timer at a time.
        if let Some(pending) = self.pending.take() {
            ctx.cancel_future(pending);
        }
        self.subscriber.do_send(RelayEvent::Disconnected {
            code,
            reason,
            retry_in,
        });
        self.pending = Some(ctx.run_later(retry_in, |act, ctx| act.connect(ctx)));
    }

    /// Reports a fatal error and stops.
    fn fail(&mut self, error: RelayClientError, ctx: &mut Context<Self>) {
        self.teardown(ctx);
        log::error!("relay client {}: {error}; not retrying", self.uuid);
        self.last_error = Some(error.clone());
        self.phase = Phase::Closing;
        self.subscriber.do_send(RelayEvent::Failed(error));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match decode(text) {
            Err(error) => log::warn!("relay client {}: skipping a frame: {error}", self.uuid),
            Ok(RelayMessage::Response(response)) => self.on_response(response, ctx),
            Ok(RelayMessage::PeerConnection(request)) => {
                log::debug!(
                    "relay client {}: {} from {} (error: {})",
                    self.uuid,
                    request.description_type.as_str(),
                    request.source_uuid,
                    request.error.as_deref().unwrap_or("none")
                );
                self.subscriber.do_send(RelayEvent::Peer(request));
            }
            Ok(RelayMessage::Registration(_)) => {
                log::warn!(
                    "relay client {}: skipping a registration sent by the relay",
                    self.uuid
                )
            }
        }
    }

    fn on_response(&mut self, response: RelayResponse, ctx: &mut Context<Self>) {
        let message = response.message.unwrap_or_default();
        if self.phase != Phase::Registering {
            if !response.success || response.error {
                log::warn!("relay client {}: relay reports: {message}", self.uuid);
            }
            return;
        }
        if !response.success {
            let reason = if message.is_empty() {
                "no reason given".to_owned()
            } else {
                message
            };
            self.fail(RelayClientError::Registration(reason), ctx);
            return;
        }
        if let Some(timer) = self.session.as_mut().and_then(|s| s.register_timer.take()) {
            ctx.cancel_future(timer);
        }
        self.phase = Phase::Registered;
        self.registrations += 1;
        self.registered_at = Some(Instant::now());
        self.round_failures = 0;
        let relay = self.endpoints[self.current].url.clone();
        log::info!(
            "relay client {}: registered as {:?} on {relay}",
            self.uuid,
            self.name
        );
        self.subscriber.do_send(RelayEvent::Registered {
            uuid: self.uuid,
            name: self.name.clone(),
            relay,
        });
    }
}

/// Writes queued frames in order until the queue closes or a write fails.
async fn write_all(
    mut sink: SplitSink<Ws, Message>,
    mut queue: mpsc::Receiver<Message>,
) -> Result<(), WsError> {
    while let Some(frame) = queue.recv().await {
        sink.send(frame).await?;
    }
    Ok(())
}

impl Actor for RelayClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        log::info!("relay client {}: starting as {:?}", self.uuid, self.name);
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        log::info!("relay client {}: stopped", self.uuid);
    }
}

impl StreamHandler<Inbound> for RelayClient {
    fn handle(&mut self, inbound: Inbound, ctx: &mut Context<Self>) {
        // A socket that ended abruptly yields an error and then its end marker
        // in the same poll, before the cancelled reader stops: once the session
        // is over, later items of its socket are ignored, so a loss is handled
        // (reported, backed off, retried) exactly once.
        if inbound.generation != self.generation || self.session.is_none() {
            return;
        }
        if let Some(session) = self.session.as_mut() {
            session.last_seen = Instant::now();
        }
        match inbound.item {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str(), ctx),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                log::debug!(
                    "relay client {}: relay closes with {code}: {reason}",
                    self.uuid
                );
                if let Some(session) = self.session.as_mut() {
                    session.close = Some((code, reason));
                    session.out = None;
                }
            }
            Some(Ok(Message::Binary(_))) => {
                log::warn!("relay client {}: skipping a binary frame", self.uuid)
            }
            // tungstenite answers pings itself; pongs and raw frames need nothing.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(error)) => {
                self.session_ended(Some(RelayClientError::Socket(error.to_string())), ctx)
            }
            None => self.session_ended(None, ctx),
        }
    }

    /// Each socket's stream ends with its own `None` item; the actor lives on.
    fn finished(&mut self, _: &mut Context<Self>) {}
}
