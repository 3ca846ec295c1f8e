//! The [`Connection`]'s handlers of what its own tasks and `webrtc` report:
//! channels opening and closing, whole messages, channels the peer opened,
//! connection state changes, and the relay's error echo for our offer.

use actix::prelude::*;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::types::{
    ChannelClosed, ChannelOpen, IncomingChannel, MessageIn, SendFailed, StateChanged,
};
use super::{setup, Connection, ConnectionError, ConnectionEventKind, RelayFailed};
use crate::defaults;

impl Handler<RelayFailed> for Connection {
    type Result = ();

    fn handle(&mut self, msg: RelayFailed, ctx: &mut Context<Self>) {
        self.end(Some(ConnectionError::Relay(msg.0)), ctx);
    }
}

impl Handler<ChannelOpen> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ChannelOpen, ctx: &mut Context<Self>) {
        if let Some(open) = self.open.get_mut(msg.index) {
            *open = true;
        }
        self.check_ready(ctx);
    }
}

impl Handler<ChannelClosed> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ChannelClosed, ctx: &mut Context<Self>) {
        let error = ConnectionError::Closed(format!("data channel {} closed", msg.index));
        self.end(Some(error), ctx);
    }
}

impl Handler<MessageIn> for Connection {
    type Result = ();

    fn handle(&mut self, msg: MessageIn, _ctx: &mut Context<Self>) {
        self.last_received = Some(std::time::Instant::now());
        self.emit(ConnectionEventKind::Message(msg.0));
    }
}

impl Handler<IncomingChannel> for Connection {
    type Result = ();

    fn handle(&mut self, msg: IncomingChannel, ctx: &mut Context<Self>) {
        let (index, total) = match setup::parse_label(&msg.label, defaults::PEER_MAX_CHANNELS) {
            Ok(parsed) => parsed,
            Err(error) => return self.end(Some(error), ctx),
        };
        if self.channels.is_empty() {
            self.channels = vec![None; total];
            self.open = vec![false; total];
        }
        if total != self.channels.len() || self.channels[index].is_some() {
            return self.end(Some(ConnectionError::BadLabel(msg.label)), ctx);
        }
        self.channels[index] = Some(msg.channel.clone());
        // A channel announced by the peer is open when it arrives.
        self.open[index] = true;
        self.spawn_reader(index, msg.channel, ctx);
        self.check_ready(ctx);
    }
}

impl Handler<StateChanged> for Connection {
    type Result = ();

    fn handle(&mut self, msg: StateChanged, ctx: &mut Context<Self>) {
        log::debug!("{} connection state {}", self.log, msg.0);
        match msg.0 {
            RTCPeerConnectionState::Failed => self.fail(ctx),
            RTCPeerConnectionState::Closed => self.end(
                Some(ConnectionError::Closed("peer connection closed".into())),
                ctx,
            ),
            // webrtc's agent can leave a silent connection "disconnected"
            // for much longer than its failed timeout (measured in the NAT
            // lab: 28 s after the NAT forgot the mapping). The connection
            // fails `ice_failed_timeout` after it went disconnected, unless
            // it came back meanwhile.
            RTCPeerConnectionState::Disconnected => {
                self.disconnects = self.disconnects.wrapping_add(1);
                let this_one = self.disconnects;
                let limit = self.config.ice_failed_timeout;
                log::info!("{} disconnected: the peer is silent", self.log);
                ctx.run_later(limit, move |act, ctx| {
                    if act.disconnects == this_one && act.disconnected {
                        log::warn!(
                            "{} still disconnected after {limit:?}: giving the connection up",
                            act.log
                        );
                        act.fail(ctx);
                    }
                });
                self.disconnected = true;
            }
            RTCPeerConnectionState::Connected => self.disconnected = false,
            _ => {}
        }
    }
}

impl Handler<SendFailed> for Connection {
    type Result = ();

    fn handle(&mut self, msg: SendFailed, ctx: &mut Context<Self>) {
        self.end(Some(msg.0), ctx);
    }
}
