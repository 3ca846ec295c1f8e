//! [`Connection`]: one actor per remote peer, wrapping a `webrtc` peer connection
//! with N data channels that carry chunked messages (DESIGN.md "Data-channel
//! chunk format").
//!
//! The offerer creates channels `p2p-{i}-{N}` (unordered, reliable), gathers
//! every ICE candidate (no trickle) and reports its offer as a
//! [`ConnectionEventKind::LocalDescription`]; the owner forwards it through the
//! relay and hands the answer back with [`SetAnswer`]. The answerer starts from
//! the offer, learns N from the first label and reports its answer the same
//! way. The connection is ready once all N channels are open; it reports
//! [`ConnectionEventKind::Ready`], every reassembled message, and exactly one
//! [`ConnectionEventKind::Closed`] when it ends, whatever the cause.
//!
//! # Examples
//!
//! Applications normally let the
//! [`PeerManager`](crate::client::peer_manager::PeerManager) do all of this.
//! Driving one connection by hand, as its owner:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use actix::prelude::*;
//! use switchboard::client::connection::{
//!     Connection, ConnectionConfig, ConnectionEvent, ConnectionEventKind, Role, SendMessage,
//!     SetAnswer, WaitReady,
//! };
//! use switchboard::protocol::chunk::Payload;
//!
//! /// Receives what the connection reports.
//! struct Owner;
//! impl Actor for Owner {
//!     type Context = Context<Self>;
//! }
//! impl Handler<ConnectionEvent> for Owner {
//!     type Result = ();
//!     fn handle(&mut self, event: ConnectionEvent, _: &mut Context<Self>) {
//!         match event.kind {
//!             // Forward the offer to `event.peer` through the relay.
//!             ConnectionEventKind::LocalDescription { description, .. } => drop(description),
//!             ConnectionEventKind::Message(payload) => {
//!                 log::info!("{} sent {} bytes", event.peer, payload.len())
//!             }
//!             other => log::info!("{}: {other:?}", event.peer),
//!         }
//!     }
//! }
//!
//! # async fn example(peer: uuid::Uuid, answer: String) -> Result<(), Box<dyn std::error::Error>> {
//! let config = Arc::new(ConnectionConfig::default());
//! let owner = Owner.start().recipient();
//! let connection = Connection::new(peer, 1, Role::Offerer, config, owner).start();
//! // Once the peer's answer comes back through the relay:
//! connection.send(SetAnswer(answer)).await??;
//! connection.send(WaitReady(Duration::from_secs(10))).await??;
//! connection.send(SendMessage(Payload::Text("hello".into()))).await??;
//! # Ok(())
//! # }
//! ```

mod acks;
mod channels;
mod closing;
mod handler;
pub mod ice;
mod inbound;
mod ready;
pub mod setup;
mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;
use webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use webrtc::peer_connection::PeerConnection;

use crate::defaults;
use crate::protocol::chunk::{Reassembler, ReassemblerLimits};
use crate::protocol::DescriptionType;
use acks::Acks;
use channels::Outgoing;
pub use ice::{CandidateType, IceServer, Route};
pub use setup::ConnectionConfig;
pub use types::{
    Close, ConnectionError, ConnectionEvent, ConnectionEventKind, Flush, RelayFailed, Role,
    SendMessage, SetAnswer, WaitReady,
};

type ReadyWaiter = oneshot::Sender<Result<mpsc::Sender<Outgoing>, ConnectionError>>;

/// One WebRTC peer connection and its data channels.
pub struct Connection {
    peer: Uuid,
    id: u64,
    role: Option<Role>,
    config: Arc<ConnectionConfig>,
    events: Recipient<ConnectionEvent>,
    pc: Option<Arc<dyn PeerConnection>>,
    channels: Vec<Option<Arc<dyn DataChannel>>>,
    open: Vec<bool>,
    sender: Option<mpsc::Sender<Outgoing>>,
    waiters: Vec<ReadyWaiter>,
    /// A `Close` is flushing: no new messages, no new sender.
    closing: bool,
    ended: Option<ConnectionError>,
    closed_reported: bool,
    reassembler: channels::SharedReassembler,
    next_stream: u32,
    acks: Acks,
    /// When the last whole message arrived (see [`Close`]).
    last_received: Option<Instant>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    nudge: Option<tokio::task::JoinHandle<()>>,
    /// When the connection was created: set-up time is measured from here.
    created: std::time::Instant,
    /// Every channel is open and the selected pair is being read.
    readying: bool,
    /// The peer connection is in the disconnected state.
    disconnected: bool,
    /// Times it went disconnected: tells a timer whether its disconnect is
    /// still the current one.
    disconnects: u64,
    /// The candidate types of our description and of the peer's, for the
    /// failure message (the stack forgets its candidates once ICE failed).
    candidates: (Vec<CandidateType>, Vec<CandidateType>),
    log: String,
}

impl Connection {
    /// A connection to `peer`, reporting to `events` with `id`.
    pub fn new(
        peer: Uuid,
        id: u64,
        role: Role,
        config: Arc<ConnectionConfig>,
        events: Recipient<ConnectionEvent>,
    ) -> Self {
        let limits = ReassemblerLimits {
            max_message_bytes: config.max_message_bytes,
            ..ReassemblerLimits::default()
        };
        let channels = match role {
            Role::Offerer => config.channels,
            Role::Answerer { .. } => 0,
        };
        Connection {
            peer,
            id,
            role: Some(role),
            config,
            events,
            pc: None,
            channels: vec![None; channels],
            open: vec![false; channels],
            sender: None,
            waiters: Vec::new(),
            closing: false,
            ended: None,
            closed_reported: false,
            reassembler: Arc::new(std::sync::Mutex::new(Reassembler::new(limits))),
            next_stream: 0,
            acks: Acks::default(),
            last_received: None,
            tasks: Vec::new(),
            nudge: None,
            created: std::time::Instant::now(),
            readying: false,
            disconnected: false,
            disconnects: 0,
            candidates: (Vec::new(), Vec::new()),
            log: format!("[peer {peer}]"),
        }
    }

    fn emit(&self, kind: ConnectionEventKind) {
        self.events.do_send(ConnectionEvent {
            peer: self.peer,
            id: self.id,
            kind,
        });
    }

    /// Ends the connection with `error` (None: closed on request, everything
    /// acknowledged). An error ending a connection with chunks the peer has
    /// not acknowledged (as far as the ledger knows) becomes
    /// [`ConnectionError::Unacknowledged`], naming the original error.
    fn end(&mut self, error: Option<ConnectionError>, ctx: &mut Context<Self>) {
        if self.ended.is_some() {
            return;
        }
        let error = match error {
            Some(error @ ConnectionError::Unacknowledged { .. }) => Some(error),
            Some(error) => Some(self.acks.unacknowledged(error.to_string()).unwrap_or(error)),
            None => None,
        };
        let reason = error
            .clone()
            .unwrap_or_else(|| ConnectionError::Closed("closed locally".into()));
        match &error {
            Some(ConnectionError::Closed(reason)) => log::info!("{} closed: {reason}", self.log),
            Some(e) => log::warn!("{} connection failed: {e}", self.log),
            None => log::info!("{} connection closed", self.log),
        }
        self.ended = Some(reason.clone());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.sender = None;
        self.closed_reported = true;
        self.emit(ConnectionEventKind::Closed(error));
        ctx.stop();
    }

    fn spawn_reader(&mut self, index: usize, channel: Arc<dyn DataChannel>, ctx: &Context<Self>) {
        let reader = channels::Reader {
            index,
            addr: ctx.address().downgrade(),
            reassembler: self.reassembler.clone(),
            acks: self.acks.clone(),
            log: self.log.clone(),
        };
        self.tasks
            .push(tokio::spawn(channels::read_channel(channel, reader)));
    }

    /// Works around a stall in `webrtc` 0.21's driver while the offerer connects.
    ///
    /// The driver flushes writes at the top of its loop, before it handles
    /// events, so a packet queued *by an event* waits for the next timer, about
    /// 200 ms: the SCTP INIT that the answerer (the DTLS client) queues on "DTLS
    /// done", and the DCEP OPEN that the offerer queues on "SCTP done". Waking
    /// the driver flushes them, so until the connection is ready a task on each
    /// side wakes it every [`defaults::PEER_SETUP_NUDGE_US`] (bounded by the
    /// connect timeout; aborted once ready or closed).
    fn start_nudging(&mut self) {
        let Some(pc) = self.pc.clone() else {
            return;
        };
        let interval = Duration::from_micros(defaults::PEER_SETUP_NUDGE_US);
        let limit = self.config.connect_timeout;
        self.nudge = Some(tokio::spawn(async move {
            // Re-applying the same configuration is a no-op that wakes the driver.
            let configuration = pc.get_configuration().await;
            let nudging = async {
                while pc.set_configuration(configuration.clone()).await.is_ok() {
                    tokio::time::sleep(interval).await;
                }
            };
            let _ = tokio::time::timeout(limit, nudging).await;
        }));
    }

    /// A future resolving to the send queue once ready.
    fn ready_sender(
        &mut self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<mpsc::Sender<Outgoing>, ConnectionError>> {
        let (tx, rx) = oneshot::channel();
        if let Some(error) = &self.ended {
            let _ = tx.send(Err(error.clone()));
        } else if let Some(sender) = &self.sender {
            let _ = tx.send(Ok(sender.clone()));
        } else {
            self.waiters.push(tx);
        }
        async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ConnectionError::Closed("connection went away".into())),
                Err(_) => Err(ConnectionError::Timeout(timeout)),
            }
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(defaults::PEER_SEND_QUEUE);
        let timeout = self.config.connect_timeout;
        ctx.run_later(timeout, move |act, ctx| {
            if act.sender.is_none() {
                act.end(Some(ConnectionError::Timeout(timeout)), ctx);
            }
        });
        let Some(role) = self.role.take() else {
            return;
        };
        if let Role::Answerer { offer } = &role {
            self.candidates.1 = setup::description_candidate_types(offer, DescriptionType::Offer);
        }
        let (gathered_tx, gathered_rx) = watch::channel(false);
        let handler = Arc::new(handler::Events::new(ctx.address().downgrade(), gathered_tx));
        let config = self.config.clone();
        let fut = handler::negotiate(config, role, handler, gathered_rx);
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(negotiated) => {
                act.pc = Some(negotiated.pc);
                for (index, channel) in negotiated.channels.into_iter().enumerate() {
                    act.channels[index] = Some(channel.clone());
                    act.spawn_reader(index, channel, ctx);
                }
                let answerer = negotiated.description_type == DescriptionType::Answer;
                act.candidates.0 = setup::description_candidate_types(
                    &negotiated.description,
                    negotiated.description_type,
                );
                act.emit(ConnectionEventKind::LocalDescription {
                    description_type: negotiated.description_type,
                    description: negotiated.description,
                });
                if answerer {
                    // The answerer is the DTLS client and sends the SCTP INIT.
                    act.start_nudging();
                }
            }
            Err(error) => act.end(Some(error), ctx),
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for task in self.tasks.drain(..).chain(self.nudge.take()) {
            task.abort();
        }
        self.reassembler
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        if !self.closed_reported {
            self.closed_reported = true;
            self.emit(ConnectionEventKind::Closed(None));
        }
        if let Some(pc) = self.pc.take() {
            // Without a runtime (the System is being dropped) dropping `pc` is
            // the close: its driver sees the handle go and stops.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let log = self.log.clone();
                runtime.spawn(async move {
                    if let Err(e) = pc.close().await {
                        log::debug!("{log} closing the peer connection: {e}");
                    }
                });
            }
        }
    }
}

impl Handler<SetAnswer> for Connection {
    type Result = ResponseActFuture<Self, Result<(), ConnectionError>>;

    fn handle(&mut self, msg: SetAnswer, _ctx: &mut Context<Self>) -> Self::Result {
        let pc = self.pc.clone();
        self.candidates.1 = setup::description_candidate_types(&msg.0, DescriptionType::Answer);
        let fut = async move {
            let desc = setup::description_from_json(&msg.0, DescriptionType::Answer)?;
            let pc = pc.ok_or_else(|| ConnectionError::Closed("no peer connection".into()))?;
            pc.set_remote_description(desc)
                .await
                .map_err(|e| ConnectionError::InvalidSdp(format!("answer rejected: {e}")))
        };
        Box::pin(fut.into_actor(self).map(|result, act, ctx| {
            match &result {
                Ok(()) => act.start_nudging(),
                Err(error) => act.end(Some(error.clone()), ctx),
            }
            result
        }))
    }
}

impl Handler<SendMessage> for Connection {
    type Result = ResponseFuture<Result<(), ConnectionError>>;

    /// Fails with [`ConnectionError::Closed`] when the connection ended or is
    /// closing before the sender took the message on (nothing of it was
    /// sent), and with [`ConnectionError::Unacknowledged`] when it ended
    /// during the hand-over.
    fn handle(&mut self, msg: SendMessage, _ctx: &mut Context<Self>) -> Self::Result {
        let stream_id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1);
        let ready = self.ready_sender(self.config.connect_timeout);
        let acks = self.acks.clone();
        Box::pin(async move {
            let queue = ready.await?;
            let (done, result) = oneshot::channel();
            let outgoing = Outgoing::Message {
                payload: msg.0,
                stream_id,
                done,
            };
            queue
                .send(outgoing)
                .await
                .map_err(|_| ConnectionError::Closed("connection is closing".into()))?;
            result.await.unwrap_or_else(|_| {
                // The sender stopped with the connection, maybe mid-message.
                let reason = "the connection ended while sending";
                Err(acks
                    .unacknowledged(reason)
                    .unwrap_or_else(|| ConnectionError::Closed(reason.into())))
            })
        })
    }
}

impl Handler<WaitReady> for Connection {
    type Result = ResponseFuture<Result<(), ConnectionError>>;

    fn handle(&mut self, msg: WaitReady, _ctx: &mut Context<Self>) -> Self::Result {
        let ready = self.ready_sender(msg.0);
        Box::pin(async move { ready.await.map(|_| ()) })
    }
}

/// The channel options ProxyStore uses: unordered, reliable.
fn channel_init() -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: false,
        ..Default::default()
    }
}
