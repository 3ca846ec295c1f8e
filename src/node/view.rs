//! The admin listener's [`View`] of this node: the relay's registry for
//! counts and clients, the tunnel's state, the metrics, the uptime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::metrics::Metrics;
use crate::admin::{Counts, View};
use crate::server::messages::ClientInfo;
use crate::server::{self, ServerState};
use crate::tunnel::relay::{TunnelState, TunnelStatus};

/// What the node hands the admin listener.
pub(super) struct NodeView {
    /// The relay server's state (its registry answers counts and clients).
    pub relay: Arc<ServerState>,
    /// The tunnel's state, when `[tunnel]` has services.
    pub tunnel: Option<Arc<TunnelState>>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// When the node started.
    pub started: Instant,
}

impl View for NodeView {
    type Client = ClientInfo;
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

    async fn clients(&self) -> Option<Vec<ClientInfo>> {
        server::clients(&self.relay).await
    }

    fn tunnels(&self) -> Option<TunnelStatus> {
        self.tunnel.as_ref().map(|t| t.status())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
