//! The `webrtc` event handler of a [`Connection`](super::Connection), and the
//! offer/answer exchange up to our complete local description.

use std::sync::Arc;

use actix::WeakAddr;
use tokio::sync::watch;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
};

use super::ice;
use super::setup::{self, ConnectionConfig};
use super::types::{IncomingChannel, StateChanged};
use super::{channel_init, Connection, ConnectionError, Role};
use crate::protocol::DescriptionType;

/// Receives `webrtc`'s callbacks (on its reactor thread) and passes them to the actor.
pub(super) struct Events {
    addr: WeakAddr<Connection>,
    gathered: watch::Sender<bool>,
}

impl Events {
    pub(super) fn new(addr: WeakAddr<Connection>, gathered: watch::Sender<bool>) -> Self {
        Events { addr, gathered }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if let Some(addr) = self.addr.upgrade() {
            addr.do_send(StateChanged(state));
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        // The label is a round trip to the driver that is calling us: ask from a task.
        let addr = self.addr.clone();
        tokio::spawn(async move {
            let Ok(label) = channel.label().await else {
                return;
            };
            if let Some(addr) = addr.upgrade() {
                addr.do_send(IncomingChannel { channel, label });
            }
        });
    }
}

/// A connection with its local description set and gathered.
pub(super) struct Negotiated {
    pub pc: Arc<dyn PeerConnection>,
    /// The offerer's channels, by index; empty for the answerer.
    pub channels: Vec<Arc<dyn DataChannel>>,
    pub description_type: DescriptionType,
    pub description: String,
}

/// Builds the peer connection and produces our offer or answer, with every candidate.
pub(super) async fn negotiate(
    config: Arc<ConnectionConfig>,
    role: Role,
    handler: Arc<Events>,
    mut gathered: watch::Receiver<bool>,
) -> Result<Negotiated, ConnectionError> {
    let offer = match &role {
        Role::Answerer { offer } => {
            Some(setup::description_from_json(offer, DescriptionType::Offer)?)
        }
        Role::Offerer => None,
    };
    let pc = setup::build(&config, handler).await?;
    let webrtc = |what: &'static str| {
        move |e: webrtc::error::Error| ConnectionError::WebRtc(format!("{what}: {e}"))
    };
    let mut channels = Vec::new();
    let description_type = match offer {
        None => {
            for index in 0..config.channels {
                let label = setup::label(index, config.channels);
                let channel = pc
                    .create_data_channel(&label, Some(channel_init()))
                    .await
                    .map_err(webrtc("creating a data channel"))?;
                channels.push(channel);
            }
            let offer = pc
                .create_offer(None)
                .await
                .map_err(webrtc("creating the offer"))?;
            pc.set_local_description(offer)
                .await
                .map_err(webrtc("setting the offer"))?;
            DescriptionType::Offer
        }
        Some(offer) => {
            pc.set_remote_description(offer)
                .await
                .map_err(|e| ConnectionError::InvalidSdp(format!("offer rejected: {e}")))?;
            let answer = pc
                .create_answer(None)
                .await
                .map_err(webrtc("creating the answer"))?;
            pc.set_local_description(answer)
                .await
                .map_err(webrtc("setting the answer"))?;
            DescriptionType::Answer
        }
    };
    let limit = config.gather_timeout.min(config.connect_timeout);
    let complete = match tokio::time::timeout(limit, gathered.wait_for(|done| *done)).await {
        Ok(Ok(_)) => true,
        Ok(Err(_)) => return Err(ConnectionError::Closed("connection went away".into())),
        Err(_) if limit == config.connect_timeout => return Err(ConnectionError::Timeout(limit)),
        Err(_) => false,
    };
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| ConnectionError::WebRtc("no local description after gathering".into()))?;
    if !complete {
        let servers: Vec<&str> = config
            .ice_servers
            .iter()
            .flat_map(|server| server.urls.iter().map(String::as_str))
            .collect();
        log::warn!(
            target: "switchboard::ice",
            "ICE gathering incomplete after {limit:?}: a STUN/TURN server did not answer \
             ({}); sending the {} with the candidates gathered so far ({})",
            servers.join(", "),
            description_type.as_str(),
            ice::count_types(&ice::sdp_candidate_types(&local.sdp)),
        );
    }
    Ok(Negotiated {
        pc,
        channels,
        description_type,
        description: setup::description_to_json(&local),
    })
}
