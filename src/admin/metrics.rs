//! Every relay metric in one struct, served as Prometheus text on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set for close counts: the WebSocket close code the server sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// The close code, e.g. `4000`.
    pub code: u16,
}

/// Label set for tunnel metrics: the service name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The tunnel service's name.
    pub service: String,
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
    /// Closes sent by the server, by close code.
    pub closes: Family<CloseLabels, Counter>,
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
}

impl Metrics {
    /// Creates and registers every metric under the `switchboard_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let r = &mut registry;
        let closes = Family::<CloseLabels, Counter>::default();
        r.register(
            "closes",
            "Close frames sent by the server, by code",
            closes.clone(),
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
        Metrics {
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
            registry,
        }
    }

    /// Counts one close sent with `code`.
    pub fn closed_with(&self, code: u16) {
        self.closes.get_or_create(&CloseLabels { code }).inc();
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
