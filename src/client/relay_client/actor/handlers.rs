//! The relay client's messages: send a description, shut down, report status.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{Phase, RelayClient};
use crate::client::relay_client::{
    GetStatus, RelayClientError, RelayStatus, SendPeerConnection, Shutdown,
};
use crate::defaults::RELAY_CLIENT_CLOSE_WAIT_MS;
use crate::protocol::relay::encode_peer_connection;

impl Handler<SendPeerConnection> for RelayClient {
    type Result = Result<(), RelayClientError>;

    fn handle(&mut self, msg: SendPeerConnection, _: &mut Context<Self>) -> Self::Result {
        match self.phase {
            Phase::Registered => {}
            Phase::Closing => return Err(RelayClientError::Closed),
            _ => return Err(RelayClientError::NotConnected),
        }
        let out = self
            .session
            .as_ref()
            .and_then(|s| s.out.as_ref())
            .ok_or(RelayClientError::NotConnected)?;
        match out.try_send(Message::text(encode_peer_connection(&msg.0))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(RelayClientError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RelayClientError::NotConnected),
        }
    }
}

impl Handler<Shutdown> for RelayClient {
    type Result = ResponseFuture<()>;

    /// Sends a close frame (1000) and resolves once the actor stopped: when
    /// the relay answered the close, or after [`RELAY_CLIENT_CLOSE_WAIT_MS`].
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (stopped_tx, stopped) = oneshot::channel();
        self.stop_waiters.push(stopped_tx);
        let stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        if self.phase == Phase::Closing {
            return stopped;
        }
        log::info!("relay client {}: shutting down", self.uuid);
        self.phase = Phase::Closing;
        if let Some(pending) = self.pending.take() {
            ctx.cancel_future(pending);
        }
        let Some(out) = self.session.as_mut().and_then(|s| s.out.take()) else {
            ctx.stop();
            return stopped;
        };
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "client shutdown".into(),
        };
        if out.try_send(Message::Close(Some(frame))).is_err() {
            ctx.stop();
            return stopped;
        }
        // The read side ends once the relay answers the close; stop anyway after a while.
        ctx.run_later(
            Duration::from_millis(RELAY_CLIENT_CLOSE_WAIT_MS),
            |_, ctx| ctx.stop(),
        );
        stopped
    }
}

impl Handler<GetStatus> for RelayClient {
    type Result = RelayStatus;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> RelayStatus {
        RelayStatus {
            uuid: self.uuid,
            name: self.name.clone(),
            relay: self.endpoints[self.current].url.clone(),
            connected: self.session.is_some(),
            registered: self.phase == Phase::Registered,
            attempts: self.attempts,
            registrations: self.registrations,
            retries: self.backoff.retries(),
            last_error: self.last_error.clone(),
        }
    }
}
