//! ICE around the `webrtc` stack: which STUN/TURN URLs it can use, TURN REST
//! API credentials, the candidate pair a connection selected, and why ICE
//! failed, in words a user can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use rtc::ice::url::{ProtoType, SchemeType, Url};
use std::sync::Arc;

use webrtc::peer_connection::transport::IceTransport;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidate, RTCIceCandidateType};

use super::ConnectionError;

/// A STUN or TURN server offered to ICE.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN credential (empty for STUN); never logged.
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"MASKED")
            .finish()
    }
}

/// The kind of an ICE candidate (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateType {
    /// An address of a local interface.
    Host,
    /// Our address as a STUN server saw it (server reflexive).
    Srflx,
    /// Our address as the peer's connectivity check saw it (peer reflexive).
    Prflx,
    /// An address on a TURN server that relays for us.
    Relay,
    /// The stack did not say.
    Unknown,
}

impl CandidateType {
    /// The SDP name: `host`, `srflx`, `prflx`, `relay` (`unknown` otherwise).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
            CandidateType::Unknown => "unknown",
        }
    }

    fn of(typ: RTCIceCandidateType) -> Self {
        match typ {
            RTCIceCandidateType::Host => CandidateType::Host,
            RTCIceCandidateType::Srflx => CandidateType::Srflx,
            RTCIceCandidateType::Prflx => CandidateType::Prflx,
            RTCIceCandidateType::Relay => CandidateType::Relay,
            _ => CandidateType::Unknown,
        }
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The candidate pair ICE selected for a connection, and how long set-up took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Our side of the pair.
    pub local: CandidateType,
    /// The peer's side of the pair.
    pub remote: CandidateType,
    /// Our candidate's address (for `relay`, the address on the TURN server).
    pub local_addr: Option<SocketAddr>,
    /// The peer's candidate address.
    pub remote_addr: Option<SocketAddr>,
    /// From the connection's creation until every channel was open.
    pub setup: Duration,
}

impl Route {
    pub(super) fn from_pair(
        local: &RTCIceCandidate,
        remote: &RTCIceCandidate,
        setup: Duration,
    ) -> Self {
        Route {
            local: CandidateType::of(local.typ),
            remote: CandidateType::of(remote.typ),
            local_addr: address(local),
            remote_addr: address(remote),
            setup,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_owned(), |a| a.to_string());
        write!(
            f,
            "{} {} -> {} {}",
            self.local,
            addr(self.local_addr),
            self.remote,
            addr(self.remote_addr)
        )
    }
}

fn address(candidate: &RTCIceCandidate) -> Option<SocketAddr> {
    let ip = candidate.address.parse().ok()?;
    Some(SocketAddr::new(ip, candidate.port))
}

/// The ICE transport of `pc` (through its SCTP and DTLS transports), once
/// the stack has made them.
pub(super) async fn transport(pc: &Arc<dyn PeerConnection>) -> Option<Arc<dyn IceTransport>> {
    Some(pc.sctp().await?.transport().ice_transport())
}

/// Checks every URL of `servers` against what the `webrtc` stack can use,
/// so that nothing is skipped silently at gathering time.
///
/// Usable: `stun:host[:port]` (a `?transport=udp` suffix is tolerated) and
/// `turn:host[:port][?transport=udp]` with a user name and credential.
/// Refused, with the reason: anything that does not parse as RFC 7064/7065,
/// `stuns:`, `turns:` and `turn:…?transport=tcp` (webrtc 0.21's TURN client
/// speaks UDP only, so TURN over TCP or TLS, which sites blocking UDP need,
/// cannot be offered), and a TURN URL without credentials.
///
/// Errors: [`ConnectionError::Config`] naming the URL.
pub fn validate_ice_servers(servers: &[IceServer]) -> Result<(), ConnectionError> {
    for server in servers {
        if server.urls.is_empty() {
            return Err(ConnectionError::Config(
                "an ICE server has no URL".to_owned(),
            ));
        }
        for raw in &server.urls {
            validate_url(raw, server).map_err(|reason| {
                ConnectionError::Config(format!("ICE server URL {raw:?}: {reason}"))
            })?;
        }
    }
    Ok(())
}

/// `url` as the stack takes it: `stun:` URLs lose a `?transport=udp` suffix,
/// which RFC 7064 does not define and `webrtc` refuses when it builds the
/// configuration (many published STUN URLs carry it).
pub(super) fn stack_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, "transport=udp")) if base.starts_with("stun:") => base.to_owned(),
        _ => url.to_owned(),
    }
}

fn validate_url(raw: &str, server: &IceServer) -> Result<(), String> {
    let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
    let stun = base.starts_with("stun:");
    let parsed = if stun {
        if !query.is_empty() && query != "transport=udp" {
            return Err(format!(
                "a STUN URL takes no query but ?transport=udp, not ?{query}"
            ));
        }
        Url::parse_url(base)
    } else {
        Url::parse_url(raw)
    }
    .map_err(|e| format!("not a stun:/turn: URL as RFC 7064/7065 write them ({e})"))?;
    if parsed.port == 0 {
        return Err("port 0 is not a server's port".into());
    }
    match (parsed.scheme, parsed.proto) {
        (SchemeType::Stun, _) => Ok(()),
        (SchemeType::Turn, ProtoType::Udp) => {
            if server.username.is_empty() || server.credential.is_empty() {
                Err("a TURN server needs a user name and a credential (or a TURN REST secret)".into())
            } else {
                Ok(())
            }
        }
        (SchemeType::Turn, _) => Err(
            "TURN over TCP is not supported: the WebRTC stack (webrtc 0.21) allocates over UDP only; \
             use turn:HOST:PORT?transport=udp"
                .into(),
        ),
        (SchemeType::Stuns, _) | (SchemeType::Turns, _) => Err(
            "STUN/TURN over TLS is not supported: the WebRTC stack (webrtc 0.21) speaks to \
             STUN/TURN servers over UDP only"
                .into(),
        ),
        _ => Err("unknown scheme; use stun: or turn:".into()),
    }
}

/// TURN REST API credentials (draft-uberti-behave-turn-rest-00, as coturn's
/// `use-auth-secret` checks them): user name `"<expiry>:<user>"`, where
/// `expiry` is `now + ttl` in Unix seconds, and credential
/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_rest_credentials(
    secret: &str,
    user: &str,
    ttl: Duration,
    now: SystemTime,
) -> (String, String) {
    let expiry = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let username = format!("{expiry}:{user}");
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// The types of the `a=candidate:` lines of an SDP (RFC 8839 §5.1: the
/// type follows the `typ` token), in order.
pub(super) fn sdp_candidate_types(sdp: &str) -> Vec<CandidateType> {
    sdp.lines()
        .filter(|line| line.starts_with("a=candidate:"))
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.find(|t| *t == "typ")?;
            Some(match tokens.next()? {
                "host" => CandidateType::Host,
                "srflx" => CandidateType::Srflx,
                "prflx" => CandidateType::Prflx,
                "relay" => CandidateType::Relay,
                _ => CandidateType::Unknown,
            })
        })
        .collect()
}

/// Counts of candidates by type, as `host×2, srflx×1` (`none` when empty).
pub(super) fn count_types(candidates: &[CandidateType]) -> String {
    let mut counts: BTreeMap<CandidateType, usize> = BTreeMap::new();
    for typ in candidates {
        *counts.entry(*typ).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(typ, n)| format!("{typ}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why ICE failed, for a user: the candidates each side offered (from the
/// two session descriptions) and what the configured STUN/TURN servers gave.
pub(super) fn describe_failure(
    servers: &[IceServer],
    local: &[CandidateType],
    remote: &[CandidateType],
) -> String {
    let has = |typ: CandidateType| local.contains(&typ);
    let urls = |scheme: &str| -> Vec<&str> {
        servers
            .iter()
            .flat_map(|s| s.urls.iter())
            .filter(|u| u.starts_with(scheme))
            .map(String::as_str)
            .collect()
    };
    let mut servers_said = Vec::new();
    let stun = urls("stun:");
    if stun.is_empty() {
        servers_said.push("no STUN server configured".to_owned());
    } else if has(CandidateType::Srflx) {
        servers_said.push("STUN answered".to_owned());
    } else {
        servers_said.push(format!("no STUN answer from {}", stun.join(" ")));
    }
    let turn = urls("turn:");
    if turn.is_empty() {
        servers_said.push("no TURN server configured".to_owned());
    } else if has(CandidateType::Relay) {
        servers_said.push("TURN allocated a relay address".to_owned());
    } else {
        servers_said.push(format!(
            "no TURN allocation from {} (refused or unreachable; see the warnings above)",
            turn.join(" ")
        ));
    }
    format!(
        "ICE found no working candidate pair (our candidates: {}; the peer's: {}; {})",
        count_types(local),
        count_types(remote),
        servers_said.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str], user: &str, credential: &str) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: user.to_owned(),
            credential: credential.to_owned(),
        }
    }

    #[test]
    fn usable_urls_pass_and_the_rest_is_refused_with_the_reason() {
        for good in [
            server(&["stun:203.0.113.1:3478"], "", ""),
            server(&["stun:stun.example.org"], "", ""),
            server(&["stun:[2001:db8::1]:3478?transport=udp"], "", ""),
            server(
                &[
                    "turn:203.0.113.1:3478?transport=udp",
                    "turn:turn.example.org",
                ],
                "u",
                "p",
            ),
        ] {
            assert!(
                validate_ice_servers(std::slice::from_ref(&good)).is_ok(),
                "{good:?}"
            );
        }
        for (bad, why) in [
            (
                server(&["turn:203.0.113.1:3478?transport=tcp"], "u", "p"),
                "TCP",
            ),
            (server(&["turns:203.0.113.1:5349"], "u", "p"), "TLS"),
            (server(&["stuns:203.0.113.1:5349"], "", ""), "TLS"),
            (server(&["turn:203.0.113.1:3478"], "", ""), "user name"),
            (
                server(&["stun:203.0.113.1:3478?transport=tcp"], "", ""),
                "query",
            ),
            (server(&["http://203.0.113.1"], "", ""), "RFC 7064"),
            (server(&["stun203.0.113.1"], "", ""), "RFC 7064"),
            (server(&["turn:host?x=y"], "u", "p"), "RFC 7064"),
            (server(&[], "", ""), "no URL"),
            (server(&["stun:127.0.0.1:0"], "", ""), "port 0"),
        ] {
            match validate_ice_servers(std::slice::from_ref(&bad)) {
                Err(ConnectionError::Config(message)) => {
                    assert!(message.contains(why), "{bad:?}: {message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn failures_name_the_candidates_and_what_the_servers_gave() {
        let offer = "v=0\r\na=candidate:1 1 udp 2130706431 10.99.1.2 5000 typ host\r\n\
                     a=candidate:2 1 udp 1694498815 203.0.113.2 6000 typ srflx raddr 10.99.1.2 rport 5000\r\n";
        let answer = "a=candidate:1 1 udp 2130706431 10.99.2.2 5000 typ host\r\n";
        let local = sdp_candidate_types(offer);
        assert_eq!(local, vec![CandidateType::Host, CandidateType::Srflx]);
        let servers = [
            server(&["stun:203.0.113.1:3478"], "", ""),
            server(&["turn:203.0.113.1:3478"], "u", "p"),
        ];
        let why = describe_failure(&servers, &local, &sdp_candidate_types(answer));
        assert!(why.contains("our candidates: host×1, srflx×1"), "{why}");
        assert!(why.contains("the peer's: host×1"), "{why}");
        assert!(why.contains("STUN answered"), "{why}");
        assert!(
            why.contains("no TURN allocation from turn:203.0.113.1:3478"),
            "{why}"
        );
        let why = describe_failure(&[], &[], &[]);
        assert!(
            why.contains("our candidates: none") && why.contains("no STUN server configured"),
            "{why}"
        );
    }

    #[test]
    fn stun_urls_reach_the_stack_without_the_transport_query() {
        assert_eq!(
            stack_url("stun:198.51.100.1:3478?transport=udp"),
            "stun:198.51.100.1:3478"
        );
        assert_eq!(
            stack_url("stun:198.51.100.1:3478"),
            "stun:198.51.100.1:3478"
        );
        let turn = "turn:198.51.100.1:3478?transport=udp";
        assert_eq!(stack_url(turn), turn);
    }

    #[test]
    fn turn_rest_credentials_match_coturns_rule() {
        // HMAC-SHA1("secret", "1700000060:alice"), computed with
        // `printf %s 1700000060:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (user, credential) =
            turn_rest_credentials("secret", "alice", Duration::from_secs(60), now);
        assert_eq!(user, "1700000060:alice");
        assert_eq!(credential, "HyJxKP4/iHSiwvKUWqUOZ/o8aJU=");
    }
}
