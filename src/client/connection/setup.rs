//! Building a `webrtc` peer connection from [`ConnectionConfig`], and the
//! `{"sdp", "type"}` JSON that session descriptions travel in over the relay.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use serde::{Deserialize, Serialize};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCSdpType, RTCSessionDescription, SettingEngineBuilder,
};

use super::ConnectionError;
use crate::client::runtime::SwitchboardRuntime;
use crate::defaults;
use crate::protocol::DescriptionType;

pub use super::ice::IceServer;

/// How peer connections are made; shared by every connection of a PeerManager.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Data channels an outgoing connection opens (`p2p-{i}-{N}`); incoming
    /// connections use the number the offerer chose.
    pub channels: usize,
    /// STUN/TURN servers (none: host candidates only).
    pub ice_servers: Vec<IceServer>,
    /// Local addresses to gather host candidates on, each bound on port 0.
    /// `0.0.0.0` means every non-loopback interface; tests use `127.0.0.1`.
    pub bind_addrs: Vec<IpAddr>,
    /// Payload bytes per chunk (ProxyStore sends 32 KiB).
    pub chunk_size: usize,
    /// Largest message accepted from a peer; a bigger one is dropped with an error.
    pub max_message_bytes: usize,
    /// Per-channel bytes handed to SCTP but not yet acknowledged before sends wait.
    pub send_buffer_limit: usize,
    /// From creation until every channel is open.
    pub connect_timeout: Duration,
    /// Longest wait for ICE gathering (host, STUN and TURN candidates) before
    /// the offer or answer goes out with the candidates gathered so far, and a
    /// warning names the servers configured; above zero.
    pub gather_timeout: Duration,
    /// UDP send/receive buffer asked for per socket.
    pub udp_socket_buffer: usize,
    /// Datagrams the connection's driver reads before it flushes its output,
    /// acknowledgements included (see [`crate::client::runtime`]). 2, the
    /// default, acknowledges every second packet as RFC 4960 §6.2 asks, which
    /// senders that grow their window per acknowledgement (aiortc) need at
    /// WAN round-trip times; `usize::MAX` keeps `webrtc`'s batching (up to 65
    /// datagrams per acknowledgement). At least 1.
    pub recv_burst: usize,
    /// Tick of the ICE agent while checking: every candidate pair still being
    /// checked gets a binding request each tick. Short ticks make set-up fast
    /// (the DTLS handshake starts on the tick after ICE connects).
    pub ice_check_interval: Duration,
    /// How long each candidate pair keeps being checked before ICE gives it
    /// up, whatever the tick: `ice_check_window / ice_check_interval` binding
    /// requests per pair (at most 65 535). It must outlast the time the other
    /// side needs to start its own checks (an offer/answer round trip through
    /// the relay plus its gathering): a NAT drops our checks until the other
    /// side's have opened its mapping, and `webrtc` never checks a failed pair
    /// again, even when the peer's check arrives on it (RFC 8445 §7.3.1.4
    /// asks for a triggered check). With webrtc's default of 7 requests at the
    /// 2 ms tick used before, pairs failed after ~18 ms and aiortc peers
    /// behind a NAT were never reached.
    pub ice_check_window: Duration,
    /// Accept remote mDNS (`.local`) candidates. Off by default: it costs a
    /// multicast socket per connection and is useless with host IPs.
    pub mdns: bool,
    /// Silence from the peer after which the connection counts as disconnected.
    pub ice_disconnected_timeout: Duration,
    /// Further silence after which it has failed and is closed (a peer that
    /// vanished without closing is noticed after both timeouts).
    pub ice_failed_timeout: Duration,
    /// Interval of ICE keepalives while idle.
    pub ice_keepalive_interval: Duration,
    /// SCTP receive window (bytes the peer may have in flight towards us).
    pub sctp_receive_buffer: u32,
    /// Size budget of each outgoing SCTP DATA packet (one DTLS record, one UDP
    /// datagram), `512..=16000` bytes. `None` picks 1 500 when every bind
    /// address is loopback (the path can be nothing else, and 1 500 is the
    /// largest record ProxyStore's aiortc peers read), webrtc's 1 191
    /// otherwise (fits any path, TURN over IPv6 included). Fewer, larger
    /// packets cost less CPU per byte: 16 000 between two Switchboard peers on
    /// loopback moves ~2× the bytes per second, but aiortc peers fail with it.
    pub sctp_mtu: Option<u32>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            channels: defaults::PEER_CHANNELS,
            ice_servers: Vec::new(),
            bind_addrs: vec![IpAddr::from([0, 0, 0, 0])],
            chunk_size: defaults::CHUNK_SIZE,
            max_message_bytes: defaults::PEER_MAX_MESSAGE_BYTES,
            send_buffer_limit: defaults::PEER_SEND_BUFFER_LIMIT,
            connect_timeout: Duration::from_millis(defaults::PEER_CONNECT_TIMEOUT_MS),
            gather_timeout: Duration::from_millis(defaults::PEER_GATHER_TIMEOUT_MS),
            udp_socket_buffer: defaults::PEER_UDP_SOCKET_BUFFER,
            recv_burst: defaults::PEER_RECV_BURST,
            ice_check_interval: Duration::from_millis(defaults::PEER_ICE_CHECK_INTERVAL_MS),
            ice_check_window: Duration::from_millis(defaults::PEER_ICE_CHECK_WINDOW_MS),
            mdns: false,
            ice_disconnected_timeout: Duration::from_millis(defaults::PEER_ICE_DISCONNECTED_MS),
            ice_failed_timeout: Duration::from_millis(defaults::PEER_ICE_FAILED_MS),
            ice_keepalive_interval: Duration::from_millis(defaults::PEER_ICE_KEEPALIVE_MS),
            sctp_receive_buffer: defaults::PEER_SCTP_RECEIVE_BUFFER,
            sctp_mtu: None,
        }
    }
}

impl ConnectionConfig {
    /// Checks the values a connection cannot work with.
    pub fn validate(&self) -> Result<(), ConnectionError> {
        if self.channels == 0 || self.channels > defaults::PEER_MAX_CHANNELS {
            return Err(ConnectionError::Config(format!(
                "channels must be 1..={}, not {}",
                defaults::PEER_MAX_CHANNELS,
                self.channels
            )));
        }
        if self.chunk_size < crate::protocol::chunk::MIN_CHUNK_SIZE
            || self.chunk_size > defaults::PEER_MAX_CHUNK_SIZE
        {
            return Err(ConnectionError::Config(format!(
                "chunk_size must be {}..={}, not {}",
                crate::protocol::chunk::MIN_CHUNK_SIZE,
                defaults::PEER_MAX_CHUNK_SIZE,
                self.chunk_size
            )));
        }
        super::ice::validate_ice_servers(&self.ice_servers)?;
        if self.recv_burst == 0 {
            return Err(ConnectionError::Config(
                "recv_burst must be at least 1".into(),
            ));
        }
        if self.gather_timeout.is_zero() {
            return Err(ConnectionError::Config(
                "gather_timeout must be above zero".into(),
            ));
        }
        if self.bind_addrs.is_empty() {
            return Err(ConnectionError::Config("bind_addrs is empty".into()));
        }
        if self.ice_check_interval.is_zero() || self.ice_check_window < self.ice_check_interval {
            return Err(ConnectionError::Config(format!(
                "ice_check_interval must be above zero and at most ice_check_window \
                 ({:?} and {:?})",
                self.ice_check_interval, self.ice_check_window
            )));
        }
        if let Some(mtu) = self.sctp_mtu {
            if !(512..=defaults::PEER_MAX_SCTP_MTU).contains(&mtu) {
                return Err(ConnectionError::Config(format!(
                    "sctp_mtu must be 512..={}, not {mtu}",
                    defaults::PEER_MAX_SCTP_MTU
                )));
            }
        }
        Ok(())
    }

    /// Binding requests per candidate pair: `ice_check_window / ice_check_interval`,
    /// at least webrtc's default of 7 and at most `u16::MAX`.
    pub fn ice_max_binding_requests(&self) -> u16 {
        let interval = self.ice_check_interval.as_micros().max(1);
        let count = self.ice_check_window.as_micros() / interval;
        u16::try_from(count).unwrap_or(u16::MAX).max(7)
    }

    /// The SCTP packet budget to use: `sctp_mtu`, else the loopback size when
    /// every bind address is loopback, else `None` (webrtc's default).
    pub fn effective_sctp_mtu(&self) -> Option<u32> {
        self.sctp_mtu.or_else(|| {
            self.bind_addrs
                .iter()
                .all(IpAddr::is_loopback)
                .then_some(defaults::PEER_LOOPBACK_SCTP_MTU)
        })
    }
}

/// Builds a peer connection whose events go to `handler`.
pub(super) async fn build(
    config: &ConnectionConfig,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>, ConnectionError> {
    let mut settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(if config.mdns {
            MulticastDnsMode::QueryOnly
        } else {
            MulticastDnsMode::Disabled
        })
        .with_ice_connection_attempts(
            Some(config.ice_check_interval),
            Some(config.ice_max_binding_requests()),
        )
        .with_ice_timeouts(
            Some(config.ice_disconnected_timeout),
            Some(config.ice_failed_timeout),
            Some(config.ice_keepalive_interval),
        )
        .with_sctp_max_receive_buffer_size(config.sctp_receive_buffer);
    if let Some(mtu) = config.effective_sctp_mtu() {
        settings = settings.with_sctp_mtu(mtu);
    }
    let settings = settings.build();
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|server| RTCIceServer {
            urls: server
                .urls
                .iter()
                .map(|u| super::ice::stack_url(u))
                .collect(),
            username: server.username.clone(),
            credential: server.credential.clone(),
        })
        .collect();
    let addrs: Vec<SocketAddr> = config
        .bind_addrs
        .iter()
        .map(|ip| SocketAddr::new(*ip, 0))
        .collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_runtime(Arc::new(SwitchboardRuntime::with_recv_burst(
            config.udp_socket_buffer,
            config.recv_burst,
        )))
        .with_udp_addrs(addrs)
        .with_dedicated_reactor_pool_size(defaults::PEER_REACTOR_THREADS)
        .with_data_channel_send_buffer_limit(config.send_buffer_limit)
        .build()
        .await
        .map_err(|e| ConnectionError::WebRtc(format!("building the peer connection: {e}")))?;
    Ok(Arc::new(pc))
}

/// A session description as ProxyStore (aiortc's `object_to_string`) sends it.
#[derive(Debug, Serialize, Deserialize)]
struct SdpJson {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `{"sdp": ..., "type": "offer"|"answer"}`, keys sorted like aiortc's.
pub fn description_to_json(desc: &RTCSessionDescription) -> String {
    let kind = match desc.sdp_type {
        RTCSdpType::Answer => "answer",
        _ => "offer",
    };
    serde_json::to_string(&SdpJson {
        sdp: desc.sdp.clone(),
        kind: kind.to_owned(),
    })
    .unwrap_or_default()
}

/// Parses the relay's `description` text as a session description of `expected` type.
///
/// Errors: [`ConnectionError::InvalidSdp`] when the JSON, the type or the SDP
/// itself does not parse.
pub fn description_from_json(
    text: &str,
    expected: DescriptionType,
) -> Result<RTCSessionDescription, ConnectionError> {
    let parsed: SdpJson = serde_json::from_str(text)
        .map_err(|e| ConnectionError::InvalidSdp(format!("not {{\"sdp\",\"type\"}} JSON: {e}")))?;
    if parsed.kind != expected.as_str() {
        return Err(ConnectionError::InvalidSdp(format!(
            "description type {:?} where {:?} was expected",
            parsed.kind,
            expected.as_str()
        )));
    }
    let desc = match expected {
        DescriptionType::Offer => RTCSessionDescription::offer(parsed.sdp),
        DescriptionType::Answer => RTCSessionDescription::answer(parsed.sdp),
    };
    desc.map_err(|e| ConnectionError::InvalidSdp(format!("SDP does not parse: {e}")))
}

/// Parses a channel label `p2p-{i}-{N}` into `(i, N)`, checking `i < N ≤ max`.
pub fn parse_label(label: &str, max: usize) -> Result<(usize, usize), ConnectionError> {
    let bad = || ConnectionError::BadLabel(label.to_owned());
    let rest = label.strip_prefix("p2p-").ok_or_else(bad)?;
    let (index, total) = rest.split_once('-').ok_or_else(bad)?;
    let index: usize = index.parse().map_err(|_| bad())?;
    let total: usize = total.parse().map_err(|_| bad())?;
    if total == 0 || index >= total || total > max {
        return Err(bad());
    }
    Ok((index, total))
}

/// The label of channel `index` of `total`.
pub fn label(index: usize, total: usize) -> String {
    format!("p2p-{index}-{total}")
}

/// The candidate types of a `{"sdp", "type"}` description (none if it does not parse).
pub(super) fn description_candidate_types(
    description: &str,
    kind: DescriptionType,
) -> Vec<super::ice::CandidateType> {
    description_from_json(description, kind)
        .map(|desc| super::ice::sdp_candidate_types(&desc.sdp))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_bad_labels_are_refused() {
        assert_eq!(parse_label(&label(3, 4), 64), Ok((3, 4)));
        assert_eq!(parse_label("p2p-0-1", 64), Ok((0, 1)));
        for bad in [
            "",
            "p2p",
            "p2p-",
            "p2p-1",
            "p2p-1-1",
            "p2p-0-0",
            "p2p--1-2",
            "p2p-a-2",
            "x2p-0-1",
            "p2p-0-65",
            "p2p-0-1-2",
            "p2p-99999999999999999999-1",
        ] {
            assert!(
                matches!(parse_label(bad, 64), Err(ConnectionError::BadLabel(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn descriptions_are_aiortc_json_with_sorted_keys() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();
        let desc = RTCSessionDescription::offer(sdp.clone()).unwrap();
        let json = description_to_json(&desc);
        assert!(json.starts_with(r#"{"sdp":"#), "{json}");
        assert!(json.ends_with(r#","type":"offer"}"#), "{json}");
        let back = description_from_json(&json, DescriptionType::Offer).unwrap();
        assert_eq!(back.sdp, sdp);
        // The wrong type for the message is refused.
        assert!(matches!(
            description_from_json(&json, DescriptionType::Answer),
            Err(ConnectionError::InvalidSdp(_))
        ));
    }

    #[test]
    fn sctp_mtu_is_raised_only_on_an_all_loopback_path() {
        let mut config = ConnectionConfig::default();
        assert_eq!(config.effective_sctp_mtu(), None, "0.0.0.0 may be any path");
        config.bind_addrs = vec![IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()];
        assert_eq!(
            config.effective_sctp_mtu(),
            Some(defaults::PEER_LOOPBACK_SCTP_MTU)
        );
        config.bind_addrs.push(IpAddr::from([192, 0, 2, 7]));
        assert_eq!(config.effective_sctp_mtu(), None, "one real interface");
        config.sctp_mtu = Some(9000);
        assert_eq!(config.effective_sctp_mtu(), Some(9000), "explicit wins");
    }

    #[test]
    fn pairs_stay_checkable_for_the_window_whatever_the_tick() {
        let mut config = ConnectionConfig::default();
        let window = config.ice_check_window;
        assert!(window >= Duration::from_secs(3), "{window:?}");
        for tick_ms in [1, 2, 5, 50, 200] {
            config.ice_check_interval = Duration::from_millis(tick_ms);
            let checkable =
                config.ice_check_interval * u32::from(config.ice_max_binding_requests());
            assert!(
                checkable >= window.min(config.ice_check_interval * 65_535),
                "{tick_ms} ms"
            );
            assert!(config.ice_max_binding_requests() >= 7);
        }
        config.ice_check_interval = Duration::from_micros(1);
        assert_eq!(config.ice_max_binding_requests(), u16::MAX);
        config.ice_check_interval = Duration::ZERO;
        assert!(
            matches!(config.validate(), Err(ConnectionError::Config(m)) if m.contains("ice_check_interval"))
        );
    }

    #[test]
    fn config_validation_names_the_problem() {
        let mut config = ConnectionConfig::default();
        assert!(config.validate().is_ok());
        config.channels = 0;
        assert!(
            matches!(config.validate(), Err(ConnectionError::Config(m)) if m.contains("channels"))
        );
        config.channels = 1;
        config.chunk_size = 1 << 20;
        assert!(
            matches!(config.validate(), Err(ConnectionError::Config(m)) if m.contains("chunk_size"))
        );
        config.chunk_size = 1024;
        config.bind_addrs.clear();
        assert!(
            matches!(config.validate(), Err(ConnectionError::Config(m)) if m.contains("bind_addrs"))
        );
        config.bind_addrs = vec![IpAddr::from([127, 0, 0, 1])];
        for bad in [0, 511, 16_001, u32::MAX] {
            config.sctp_mtu = Some(bad);
            assert!(
                matches!(config.validate(), Err(ConnectionError::Config(m)) if m.contains("sctp_mtu")),
                "{bad}"
            );
        }
    }
}
