//! `WsSession`: one actor per WebSocket, fed by its [`InboundStream`](super::inbound::InboundStream).
//!
//! The actor decodes frames, authenticates and registers through the
//! [`Registry`], checks forwards against its own registrations, and answers
//! with close codes. Outbound frames are encoded into a bounded [`Outbound`]
//! queue that the connection takes from; a writer future inside the actor
//! learns when that side is done. A full queue marks a slow consumer, which
//! is disconnected. Inbound messages come from an
//! [`InboundStream`](super::inbound::InboundStream) in arrival order; when
//! the client's stream ends without a close frame, everything it sent before
//! is still handled and the session ends as an abnormal closure (1006) after
//! handing over what is queued. Every close path ends in `stopping`, which
//! tells the registry to drop all of this socket's UUIDs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use std::pin::Pin;
use std::task::Poll;

use actix::fut::ActorFuture;
use actix_http::ws::{CloseCode, CloseReason, Message};
use actix_web::web::Bytes;
use bytestring::ByteString;
use uuid::Uuid;

mod ending;

use super::auth::AuthError;
use super::inbound::{Inbound, InboundError};
use super::messages::*;
use super::outbound::{Outbound, WriterDone};
use super::registry::Registry;
use super::state::ServerState;
use crate::protocol::relay::{decode_relayed, encode_forwarded, DescriptionLiteral};
use crate::protocol::{
    close, encode, PeerConnection, RelayMessage, RelayRegistration, RelayResponse,
};

/// One WebSocket connection.
pub struct WsSession {
    id: SessionId,
    state: Arc<ServerState>,
    registry: Addr<Registry>,
    authorization: Option<String>,
    remote: Option<SocketAddr>,
    out: Outbound,
    /// The client sent its close frame.
    peer_closed: bool,
    /// Our close frame is queued for the client.
    close_sent: bool,
    /// The client's stream has ended or can no longer be read: nothing more
    /// will arrive, so there is no close answer to wait for.
    input_done: bool,
    /// The authenticated user, once the first registration succeeded.
    user: Option<User>,
    /// UUIDs registered on this socket.
    uuids: Vec<Uuid>,
    name: String,
    last_seen: Instant,
    /// Log prefix: session id and registered UUIDs.
    tag: String,
}

impl WsSession {
    /// A session for an accepted upgrade, writing through `out`.
    pub fn new(
        state: Arc<ServerState>,
        registry: Addr<Registry>,
        authorization: Option<String>,
        remote: Option<SocketAddr>,
        out: Outbound,
    ) -> Self {
        let id = state.next_session_id.fetch_add(1, Ordering::Relaxed);
        WsSession {
            id,
            state,
            registry,
            authorization,
            remote,
            out,
            peer_closed: false,
            close_sent: false,
            input_done: false,
            user: None,
            uuids: Vec::new(),
            name: String::new(),
            last_seen: Instant::now(),
            tag: format!("[session {id}]"),
        }
    }

    fn closing(&self) -> bool {
        self.out.closing()
    }

    /// Starts a close handshake of the relay's own, counted in
    /// `switchboard_closes_total` by code; the actor stops when the client
    /// answers or after the flush period, whichever comes first.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: impl Into<String>) {
        if self.closing() {
            return;
        }
        self.state.metrics.closed_with(code);
        self.send_close(ctx, code, reason);
    }

    /// Hands a close frame to the writer and bounds the wait for the client.
    /// A slow consumer's unread frames are dropped first: it would not read
    /// them, and they would hold memory until its connection goes.
    fn send_close(&mut self, ctx: &mut Context<Self>, code: u16, reason: impl Into<String>) {
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.into()),
        };
        if code == close::SLOW_CONSUMER {
            self.out.abandon(reason);
        } else {
            self.out.close(reason);
        }
        ctx.run_later(self.state.close_flush, |_, ctx| ctx.stop());
    }

    /// Queues a text frame; a full queue means a slow consumer.
    fn send_text(&mut self, ctx: &mut Context<Self>, text: ByteString) {
        if self.out.push(Message::Text(text)).is_err() {
            log::warn!(
                "{} slow consumer: {} frames queued and unread; disconnecting",
                self.tag,
                self.state.settings.server.outbound_queue
            );
            self.state.metrics.slow_consumers.inc();
            self.close(ctx, close::SLOW_CONSUMER, close::REASON_SLOW_CONSUMER);
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.closing() {
            return;
        }
        let timeout = Duration::from_millis(self.state.settings.server.heartbeat_timeout_ms);
        if self.last_seen.elapsed() > timeout {
            log::warn!(
                "{} silent for {timeout:?}: heartbeat timeout, disconnecting",
                self.tag
            );
            self.state.metrics.heartbeat_timeouts.inc();
            self.close(ctx, close::HEARTBEAT_TIMEOUT, close::REASON_HEARTBEAT);
            return;
        }
        // A full queue here is handled by the next delivery; pings are best effort.
        self.out.push_control(Message::Ping(Bytes::new()));
    }

    fn handle_text(&mut self, ctx: &mut Context<Self>, text: &str) {
        match decode_relayed(text) {
            Err(error) => {
                log::warn!(
                    "{} undecodable frame ({error}); closing with 4000",
                    self.tag
                );
                self.close(ctx, close::UNKNOWN_MESSAGE, close::REASON_UNKNOWN_MESSAGE);
            }
            Ok(RelayMessage::Registration(request)) => self.register(ctx, request),
            Ok(RelayMessage::PeerConnection(request)) => self.forward(ctx, request),
            Ok(RelayMessage::Response(_)) => {
                log::warn!(
                    "{} client sent a relay_response; closing with 4000",
                    self.tag
                );
                self.close(ctx, close::UNKNOWN_MESSAGE, close::REASON_UNKNOWN_MESSAGE);
            }
        }
    }

    fn forward(&mut self, ctx: &mut Context<Self>, request: PeerConnection<DescriptionLiteral>) {
        if self.uuids.is_empty() {
            log::warn!(
                "{} forward (claimed source {}) before registering; closing with 4002",
                self.tag,
                request.source_uuid
            );
            self.close(ctx, close::FORBIDDEN, close::REASON_NOT_REGISTERED);
            return;
        }
        if !self.uuids.contains(&request.source_uuid) {
            log::warn!(
                "{} spoofed source_uuid {} (not registered on this socket); echoing error",
                self.tag,
                request.source_uuid
            );
            self.state.metrics.forward_errors.inc();
            let mut echo = request;
            echo.error = Some(format!(
                "The source_uuid {} is not registered on this connection.",
                echo.source_uuid
            ));
            let text = encode_forwarded(&echo);
            self.send_text(ctx, text.into());
            return;
        }
        let text = ByteString::from(encode_forwarded(&request));
        let forward = Forward {
            session: self.id,
            request,
            text,
        };
        match self.registry.try_send(forward) {
            Ok(()) => {}
            // The registry is saturated: wait for room before reading more
            // frames, so the backlog stays in the clients' TCP buffers.
            Err(SendError::Full(forward)) => {
                let send = self.registry.send(forward);
                ctx.wait(send.into_actor(self).map(|_, _, _| ()));
            }
            Err(SendError::Closed(_)) => {
                log::error!("{} registry is gone; closing", self.tag);
                self.close(ctx, close::TRY_AGAIN_LATER, "Registry unavailable.");
            }
        }
    }

    fn register(&mut self, ctx: &mut Context<Self>, request: RelayRegistration) {
        let state = self.state.clone();
        let registry = self.registry.clone();
        let known_user = self.user.clone();
        let authorization = self.authorization.clone();
        let session = self.id;
        let work = async move {
            let user = match known_user {
                Some(user) => user,
                None => {
                    state
                        .authenticator
                        .authenticate(authorization.as_deref())
                        .await?
                }
            };
            let register = Register {
                session,
                uuid: request.uuid,
                name: request.name.clone(),
                user: user.clone(),
            };
            let answer = registry.send(register).await;
            Ok::<_, AuthError>((user, request, answer))
        };
        // `wait` holds every other event (frames included) until registration
        // completes, so frames after a registration see its result.
        ctx.wait(work.into_actor(self).map(|result, act, ctx| match result {
            Err(error) => act.refuse(ctx, error),
            Ok((user, request, answer)) => {
                act.user = Some(user);
                act.registered(ctx, request, answer);
            }
        }));
    }

    fn refuse(&mut self, ctx: &mut Context<Self>, error: AuthError) {
        log::warn!(
            "{} authentication failed from {}: {error}; closing with {}",
            self.tag,
            crate::addr::shown(self.remote),
            error.close_code()
        );
        self.state.metrics.auth_failures.inc();
        self.close(ctx, error.close_code(), error.to_string());
    }

    fn registered(
        &mut self,
        ctx: &mut Context<Self>,
        request: RelayRegistration,
        answer: Result<Result<(), RegisterError>, MailboxError>,
    ) {
        match answer {
            Ok(Ok(())) => {
                if !self.uuids.contains(&request.uuid) {
                    self.uuids.push(request.uuid);
                }
                self.name = request.name;
                let ids: Vec<String> = self.uuids.iter().map(Uuid::to_string).collect();
                self.tag = format!("[session {} {}]", self.id, ids.join(","));
                log::info!(
                    "{} registered as {:?} from {}",
                    self.tag,
                    self.name,
                    crate::addr::shown(self.remote)
                );
                let response = encode(&RelayMessage::Response(RelayResponse::default()));
                self.send_text(ctx, response.into());
            }
            Ok(Err(error @ RegisterError::OwnedByAnotherUser(_))) => {
                log::warn!("{} {error} Closing with 4002", self.tag);
                self.close(ctx, close::FORBIDDEN, format!("ForbiddenError: {error}"));
            }
            Ok(Err(RegisterError::SessionGone)) => ctx.stop(),
            Err(error) => {
                log::error!("{} registry unavailable ({error}); closing", self.tag);
                self.close(ctx, close::TRY_AGAIN_LATER, "Registry unavailable.");
            }
        }
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Deliveries wait here only briefly before the outbound queue; a
        // session that lets this fill up is a slow consumer (see Registry::tell).
        ctx.set_mailbox_capacity(
            self.state
                .settings
                .server
                .outbound_queue
                .max(crate::defaults::MIN_SESSION_QUEUE),
        );
        self.state.metrics.connections.inc();
        self.registry.do_send(Connect {
            session: self.id,
            recipient: ctx.address().recipient(),
            remote: self.remote,
        });
        ctx.spawn(Writer);
        let interval = Duration::from_millis(self.state.settings.server.heartbeat_interval_ms);
        ctx.run_interval(interval, |act, ctx| act.heartbeat(ctx));
        log::debug!(
            "{} connected from {}",
            self.tag,
            crate::addr::shown(self.remote)
        );
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.registry.do_send(Disconnect { session: self.id });
        log::info!("{} closed", self.tag);
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handler<ToSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        match msg {
            ToSession::Deliver(text) => self.send_text(ctx, text),
            ToSession::Close { code, reason } => {
                if self.closing() {
                    return;
                }
                log::info!("{} closing with {code}: {reason}", self.tag);
                // Counted here, once per session: the registry and the
                // session's own queue can both find the client too slow.
                if code == close::SLOW_CONSUMER {
                    self.state.metrics.slow_consumers.inc();
                }
                self.close(ctx, code, reason);
            }
        }
    }
}

impl StreamHandler<Result<Inbound, InboundError>> for WsSession {
    fn handle(&mut self, item: Result<Inbound, InboundError>, ctx: &mut Self::Context) {
        if let Ok(Inbound::Ended(end)) = item {
            self.ended(ctx, end);
            return;
        }
        if self.closing() {
            // The client's answer to our close frame completes the handshake:
            // stop now so the connection is shut down without waiting.
            if matches!(item, Ok(Inbound::Close(_))) {
                self.peer_closed = true;
                if self.close_sent {
                    ctx.stop();
                }
            }
            return;
        }
        self.last_seen = Instant::now();
        self.state.metrics.frames_received.inc();
        match item {
            Ok(Inbound::Text(text)) => self.handle_text(ctx, &text),
            Ok(Inbound::Binary(_)) => {
                log::warn!("{} binary frame; closing with 4000", self.tag);
                self.close(ctx, close::UNKNOWN_MESSAGE, close::REASON_UNKNOWN_MESSAGE);
            }
            Ok(Inbound::Ping(payload)) => {
                self.out.push_control(Message::Pong(payload));
            }
            Ok(Inbound::Pong(_)) => {}
            Ok(Inbound::Close(reason)) => {
                log::debug!("{} client closed ({reason:?})", self.tag);
                let code = reason.as_ref().map(|r| u16::from(r.code));
                self.state.metrics.client_closed_with(code);
                // Answer with the same code; the writer stops the actor once
                // the answer is out, which completes the handshake.
                self.peer_closed = true;
                self.send_close(ctx, code.unwrap_or(1000), "");
            }
            Ok(Inbound::Ended(_)) => {}
            Err(error) => self.refuse_frame(ctx, &error),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        log::debug!("{} socket ended", self.tag);
        self.input_done = true;
        // A close in progress ends when its frame is out (see `Writer`);
        // a finish when the queue is drained.
        if !self.closing() || self.close_sent {
            ctx.stop();
        }
    }
}

/// Waits for the session's [`Outbound`] side to be done; runs inside the actor's context.
struct Writer;

impl ActorFuture<WsSession> for Writer {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut WsSession,
        ctx: &mut Context<WsSession>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        match act.out.poll_write(task) {
            Poll::Pending => Poll::Pending,
            // The close frame is out: the actor stops when the client has
            // closed too, or when the flush period set by `close` ends.
            Poll::Ready(WriterDone::Closed) => {
                act.close_sent = true;
                if act.peer_closed || act.input_done {
                    ctx.stop();
                }
                Poll::Ready(())
            }
            Poll::Ready(WriterDone::SocketGone | WriterDone::Drained) => {
                ctx.stop();
                Poll::Ready(())
            }
        }
    }
}
