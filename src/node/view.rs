//! The admin listener's [`View`] of this node: the relay's registry for
//! counts and clients, the cluster engine for the cluster's state, clients
//! and counters, the tunnel's state, the metrics, the uptime.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::admin::metrics::Metrics;
use crate::admin::{ClusterHealth, Counts, Scope, View};
use crate::cluster::ClusterMetrics;
use crate::server::messages::ClientInfo;
use crate::server::{self, ServerState};
use crate::tunnel::relay::{TunnelState, TunnelStatus};

/// What the node hands the admin listener.
pub(super) struct NodeView {
    /// The relay server's state (its registry answers counts and clients;
    /// its cluster link, once attached, the cluster's).
    pub relay: Arc<ServerState>,
    /// The tunnel's state, when `[tunnel]` has services.
    pub tunnel: Option<Arc<TunnelState>>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// When the node started.
    pub started: Instant,
}

/// One client as `/clients` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum Listed {
    /// Registered on this node: everything the registry knows, and this
    /// node's id with the cluster on.
    Here {
        #[serde(flatten)]
        info: ClientInfo,
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Registered on another node: what Redis holds.
    Elsewhere {
        uuid: Uuid,
        name: String,
        user: Option<String>,
        node: String,
    },
}

impl View for NodeView {
    type Client = Listed;
    type Tunnels = TunnelStatus;

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    async fn counts(&self) -> Option<Counts> {
        let c = server::counts(&self.relay).await?;
        Some(Counts {
            connected: c.connected,
            registered: c.registered,
        })
    }

    async fn clients(&self, scope: Scope) -> Option<Vec<Listed>> {
        let local = server::clients(&self.relay).await?;
        let link = self.relay.cluster();
        let here = link.map(|l| l.cluster.node_id().to_owned());
        let mut listed: Vec<Listed> = local
            .into_iter()
            .map(|info| Listed::Here {
                info,
                node: here.clone(),
            })
            .collect();
        let (Some(link), Scope::Cluster) = (link, scope) else {
            return Some(listed);
        };
        match link.cluster.clients().await {
            Ok(all) => listed.extend(
                all.into_iter()
                    .filter(|c| Some(&c.node) != here.as_ref())
                    .map(|c| Listed::Elsewhere {
                        uuid: c.uuid,
                        name: c.name,
                        user: (!c.user.is_empty()).then_some(c.user),
                        node: c.node,
                    }),
            ),
            Err(e) => log::warn!("/clients lists this node only: {e}"),
        }
        Some(listed)
    }

    async fn cluster(&self) -> ClusterHealth {
        let Some(link) = self.relay.cluster() else {
            let state = if self.relay.settings.cluster.enabled {
                "degraded"
            } else {
                "off"
            };
            return ClusterHealth { state, nodes: None };
        };
        let up = link.cluster.state().borrow().is_up();
        ClusterHealth {
            state: if up { "up" } else { "degraded" },
            nodes: link.cluster.nodes().await.ok(),
        }
    }

    fn tunnels(&self) -> Option<TunnelStatus> {
        self.tunnel.as_ref().map(|t| t.status())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn extra_metrics(&self) -> String {
        match self.relay.cluster() {
            Some(link) => render_cluster(
                &link.cluster.metrics(),
                link.cluster.state().borrow().is_up(),
            ),
            None => String::new(),
        }
    }
}

/// The engine's counters in the OpenMetrics text format, named like the
/// process's other metrics (`switchboard_cluster_*`).
fn render_cluster(m: &ClusterMetrics, up: bool) -> String {
    let counters: [(&str, &str, &AtomicU64); 11] = [
        (
            "forwards_out",
            "Forwards published to another node and received there.",
            &m.forwards_out,
        ),
        (
            "forwards_out_failed",
            "Forwards to another node that could not be published.",
            &m.forwards_out_failed,
        ),
        (
            "forwards_in",
            "Forwards from other nodes handed to this node.",
            &m.forwards_in,
        ),
        (
            "inbox_dropped",
            "Deliveries from other nodes dropped because the inbox was full.",
            &m.inbox_dropped,
        ),
        (
            "decode_failures",
            "Payloads on this node's channel that did not decode.",
            &m.decode_failures,
        ),
        (
            "reconnects",
            "Times the subscription was rebuilt.",
            &m.reconnects,
        ),
        (
            "self_check_failures",
            "Subscription self-checks that did not come back in time.",
            &m.self_check_failures,
        ),
        (
            "takeovers_out",
            "Registrations here that took a UUID over from another node.",
            &m.takeovers_out,
        ),
        (
            "takeovers_in",
            "Registrations here taken over by another node.",
            &m.takeovers_in,
        ),
        (
            "reasserts",
            "Times this node re-wrote its registrations in Redis.",
            &m.reasserts,
        ),
        (
            "reaped",
            "Records of dead nodes removed from Redis by this node.",
            &m.reaped,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in counters {
        let name = format!("switchboard_cluster_{name}");
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {}\n",
            value.load(Ordering::Relaxed)
        );
    }
    let name = "switchboard_cluster_degraded_seconds";
    let _ = write!(
        out,
        "# HELP {name} Time spent degraded (Redis away, subscription or registrations not current).\n# TYPE {name} counter\n{name}_total {}\n",
        m.degraded_time().as_secs_f64()
    );
    let name = "switchboard_cluster_up";
    let _ = write!(
        out,
        "# HELP {name} 1 when the cluster link is up, 0 when degraded.\n# TYPE {name} gauge\n{name} {}\n",
        u8::from(up)
    );
    let rtt = m.rtt.snapshot();
    let name = "switchboard_cluster_redis_rtt_seconds";
    let _ = write!(
        out,
        "# HELP {name} Round-trip time of Redis commands.\n# TYPE {name} histogram\n"
    );
    let mut cumulative = 0;
    for (bound, n) in &rtt.buckets {
        cumulative += n;
        let le = if *bound == u64::MAX {
            "+Inf".to_owned()
        } else {
            format!("{}", *bound as f64 / 1e6)
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = write!(
        out,
        "{name}_sum {}\n{name}_count {}\n",
        rtt.sum_us as f64 / 1e6,
        rtt.count
    );
    out
}
