//! Every relay metric in one struct, served as Prometheus text on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set for the relay's own closes: the WebSocket close code it sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// The close code, e.g. `"4000"`, from the fixed set in
    /// [`close_code_label`]; any other code is `"other"`.
    pub code: &'static str,
}

/// Label set for closes the client started, by kind of code (never the
/// client's own number: that would let clients create series at will).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientCloseLabels {
    /// `normal` (1000), `going_away` (1001), `no_status` (no code),
    /// `application` (3000–4999: registered and private codes) or `protocol`
    /// (any other; the relay refuses codes no endpoint may send before
    /// counting, see `server::inbound`).
    pub kind: &'static str,
}

/// The label for a close code the relay sends: one of a fixed set, so no
/// value from the network can add a series.
pub fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1013 => "1013",
        4000 => "4000",
        4001 => "4001",
        4002 => "4002",
        4003 => "4003",
        4004 => "4004",
        _ => "other",
    }
}

/// The kind of a close code a client sent (see [`ClientCloseLabels`]).
pub fn client_close_kind(code: Option<u16>) -> &'static str {
    match code {
        None => "no_status",
        Some(1000) => "normal",
        Some(1001) => "going_away",
        Some(3000..=4999) => "application",
        Some(_) => "protocol",
    }
}

/// Label set for tunnel metrics: the service name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The tunnel service's name.
    pub service: String,
}

/// Label set for the outcome of an operation: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Label set for tunnel rejections: the service and why the client was closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The tunnel service's name.
    pub service: String,
    /// `pool_timeout`, `max_waiting`, `max_clients`, `local_refused` or `handoff_failed`.
    pub reason: String,
}

/// Why handing a tunnel client to a pooled connection failed: a fixed set
/// of label values (`no_answer`, `not_started`, `agent_gone`, `broken`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HandoffFailure {
    /// The pooled connection did not answer the heartbeat sent with `Start`.
    NoAnswer,
    /// It answered, but `Started` did not come within the handshake timeout.
    NotStarted,
    /// The agent's control session was declared dead meanwhile.
    AgentGone,
    /// The connection closed, failed or sent something unexpected.
    Broken,
}

impl HandoffFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffFailure::NoAnswer => "no_answer",
            HandoffFailure::NotStarted => "not_started",
            HandoffFailure::AgentGone => "agent_gone",
            HandoffFailure::Broken => "broken",
        }
    }
}

impl EncodeLabelValue for HandoffFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Label set for failed tunnel hand-offs: the service and a fixed reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffLabels {
    /// The tunnel service's name (from the configuration).
    pub service: String,
    /// Why the hand-off failed.
    pub reason: HandoffFailure,
}

/// The relay's metrics. Each field says when it changes.
pub struct Metrics {
    registry: Registry,
    /// WebSocket sessions open now (set by the registry on connect/disconnect).
    pub connected: Gauge,
    /// UUIDs registered now (set by the registry on register/unregister).
    pub registered: Gauge,
    /// WebSocket upgrades accepted, ever (incremented per new session).
    pub connections: Counter,
    /// Upgrades refused because `server.max_clients` sessions were open.
    pub rejected_max_clients: Counter,
    /// Successful registrations, ever (incremented per `relay_registration` accepted).
    pub registrations: Counter,
    /// Registrations that replaced an older socket's registration (4004 sent).
    pub takeovers: Counter,
    /// `peer_connection` messages delivered to their target.
    pub forwarded: Counter,
    /// `peer_connection` messages echoed back with `error` set.
    pub forward_errors: Counter,
    /// Frames received from clients (text, binary, ping, pong).
    pub frames_received: Counter,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumers: Counter,
    /// Sessions closed because they were silent past the heartbeat timeout.
    pub heartbeat_timeouts: Counter,
    /// Authentication failures (4001 or 4002 from the authenticator).
    pub auth_failures: Counter,
    /// Closes the relay started, by the code it sent (incremented when the
    /// relay sends its close frame; answers to a client's close are not counted here).
    pub closes: Family<CloseLabels, Counter>,
    /// Closes the client started, by kind of code (incremented when the
    /// client's close frame arrives first).
    pub client_closes: Family<ClientCloseLabels, Counter>,
    /// Connections whose TCP stream ended without a close handshake: an
    /// abnormal closure, 1006 (incremented once per such session).
    pub abnormal_closures: Counter,
    /// Tunnel clients whose bytes started flowing to an agent (incremented at `Started`).
    pub tunnel_clients_served: Family<ServiceLabels, Counter>,
    /// Bytes from tunnel clients to agents (added while a tunnelled connection runs).
    pub tunnel_bytes_to_agent: Family<ServiceLabels, Counter>,
    /// Bytes from agents to tunnel clients (added while a tunnelled connection runs).
    pub tunnel_bytes_to_client: Family<ServiceLabels, Counter>,
    /// Idle pooled data connections now (set whenever a pool changes).
    pub tunnel_pool_size: Family<ServiceLabels, Gauge>,
    /// Tunnelled client connections open now (set when one starts or ends).
    pub tunnel_active: Family<ServiceLabels, Gauge>,
    /// Clients that found the pool empty and had to wait (incremented per such client).
    pub tunnel_waits: Family<ServiceLabels, Counter>,
    /// Clients closed without being served, by reason (incremented per client).
    pub tunnel_rejections: Family<RejectLabels, Counter>,
    /// Failed hand-offs of a client to a pooled connection, by reason
    /// (incremented per failure; the client is then handed to another).
    pub tunnel_handoff_failures: Family<HandoffLabels, Counter>,
    /// Host agents' control channels connected now (set on connect and disconnect).
    pub tunnel_agents: Gauge,
    /// Agent handshakes refused: bad proof, unknown service or session (incremented per refusal).
    pub tunnel_auth_failures: Counter,
    /// UDP sessions (client addresses) of a UDP service open now (set when
    /// one opens or closes, waiting for a pooled connection included).
    pub tunnel_udp_sessions: Family<ServiceLabels, Gauge>,
    /// Datagrams from UDP clients written to agents (incremented per datagram).
    pub tunnel_udp_datagrams_in: Family<ServiceLabels, Counter>,
    /// Datagrams from agents sent to UDP clients (incremented per datagram).
    pub tunnel_udp_datagrams_out: Family<ServiceLabels, Counter>,
    /// Datagrams dropped, by reason (`max_sessions`, `queue_full`,
    /// `too_large`, `max_clients`, `session_failed`; incremented per datagram).
    pub tunnel_udp_drops: Family<RejectLabels, Counter>,
    /// Live reloads of `[[tunnel.services]]`, by result: `ok` (applied) or
    /// `error` (refused, nothing changed); incremented per reload.
    pub tunnel_reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric under the `switchboard_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let r = &mut registry;
        let closes = Family::<CloseLabels, Counter>::default();
        r.register(
            "closes",
            "Close handshakes the relay started, by the code it sent",
            closes.clone(),
        );
        let client_closes = Family::<ClientCloseLabels, Counter>::default();
        r.register(
            "client_closes",
            "Close handshakes the client started, by kind of code",
            client_closes.clone(),
        );
        let family = |r: &mut Registry, name: &str, help: &str| {
            let metric = Family::<ServiceLabels, Counter>::default();
            r.register(name, help, metric.clone());
            metric
        };
        let gauges = |r: &mut Registry, name: &str, help: &str| {
            let metric = Family::<ServiceLabels, Gauge>::default();
            r.register(name, help, metric.clone());
            metric
        };
        let tunnel_rejections = Family::<RejectLabels, Counter>::default();
        r.register(
            "tunnel_rejections",
            "Tunnel clients closed without being served, by reason",
            tunnel_rejections.clone(),
        );
        let tunnel_handoff_failures = Family::<HandoffLabels, Counter>::default();
        r.register(
            "tunnel_handoff_failures",
            "Failed hand-offs of a tunnel client to a pooled connection, by reason",
            tunnel_handoff_failures.clone(),
        );
        let tunnel_udp_drops = Family::<RejectLabels, Counter>::default();
        r.register(
            "tunnel_udp_drops",
            "Datagrams of UDP tunnel services dropped, by reason",
            tunnel_udp_drops.clone(),
        );
        let tunnel_reloads = Family::<ResultLabels, Counter>::default();
        // Both series from the start, so `increase()` sees the first reload.
        for result in ["ok", "error"] {
            let _ = tunnel_reloads.get_or_create(&ResultLabels { result });
        }
        r.register(
            "tunnel_reloads",
            "Live reloads of the tunnel services, by result (ok: applied; error: refused)",
            tunnel_reloads.clone(),
        );
        Metrics {
            tunnel_reloads,
            tunnel_udp_drops,
            tunnel_udp_sessions: gauges(r, "tunnel_udp_sessions", "UDP tunnel sessions open"),
            tunnel_udp_datagrams_in: family(
                r,
                "tunnel_udp_datagrams_in",
                "Datagrams from UDP tunnel clients carried to host agents",
            ),
            tunnel_udp_datagrams_out: family(
                r,
                "tunnel_udp_datagrams_out",
                "Datagrams from host agents sent to UDP tunnel clients",
            ),
            tunnel_handoff_failures,
            tunnel_clients_served: family(
                r,
                "tunnel_clients_served",
                "Tunnel clients connected through to an agent",
            ),
            tunnel_bytes_to_agent: family(
                r,
                "tunnel_bytes_to_agent",
                "Bytes from tunnel clients to host agents",
            ),
            tunnel_bytes_to_client: family(
                r,
                "tunnel_bytes_to_client",
                "Bytes from host agents to tunnel clients",
            ),
            tunnel_pool_size: gauges(r, "tunnel_pool_size", "Idle pooled data connections"),
            tunnel_active: gauges(r, "tunnel_active", "Tunnelled client connections open"),
            tunnel_waits: family(
                r,
                "tunnel_waits",
                "Tunnel clients that found the pool empty and waited",
            ),
            tunnel_rejections,
            tunnel_agents: gauge(r, "tunnel_agents", "Host agent control channels connected"),
            tunnel_auth_failures: counter(r, "tunnel_auth_failures", "Agent handshakes refused"),
            connected: gauge(r, "connected_clients", "WebSocket sessions open now"),
            registered: gauge(r, "registered_clients", "UUIDs registered now"),
            connections: counter(r, "connections", "WebSocket upgrades accepted"),
            rejected_max_clients: counter(
                r,
                "rejected_max_clients",
                "Upgrades refused because max_clients sessions were open",
            ),
            registrations: counter(r, "registrations", "Registrations accepted"),
            takeovers: counter(
                r,
                "takeovers",
                "Registrations that replaced an older socket (4004)",
            ),
            forwarded: counter(
                r,
                "forwarded_messages",
                "peer_connection messages delivered",
            ),
            forward_errors: counter(
                r,
                "forward_errors",
                "peer_connection messages echoed back with an error",
            ),
            frames_received: counter(r, "frames_received", "Frames received from clients"),
            slow_consumers: counter(
                r,
                "slow_consumer_disconnects",
                "Sessions closed because they did not read their messages",
            ),
            heartbeat_timeouts: counter(
                r,
                "heartbeat_timeouts",
                "Sessions closed after the heartbeat timeout",
            ),
            auth_failures: counter(
                r,
                "auth_failures",
                "Registrations refused by the authenticator",
            ),
            closes,
            client_closes,
            abnormal_closures: counter(
                r,
                "abnormal_closures",
                "Connections that ended without a close handshake (1006)",
            ),
            registry,
        }
    }

    /// Counts one close the relay started with `code`.
    pub fn closed_with(&self, code: u16) {
        let code = close_code_label(code);
        self.closes.get_or_create(&CloseLabels { code }).inc();
    }

    /// Counts one close the client started with `code` (`None`: no status).
    pub fn client_closed_with(&self, code: Option<u16>) {
        let kind = client_close_kind(code);
        self.client_closes
            .get_or_create(&ClientCloseLabels { kind })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let metric = Counter::default();
    registry.register(name, help, metric.clone());
    metric
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::default();
    registry.register(name, help, metric.clone());
    metric
}
