//! The node's handle on the engine: starting it, forwarding, re-asserting,
//! its state and counters, and stopping it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::envelope::{encode, encode_unaddressed, envelope_limit, Envelope};
use super::health::{ClusterState, Health};
use super::heartbeat::{self, Reasserted};
use super::metrics::ClusterMetrics;
use super::publisher::{self, Outgoing, Target};
use super::scripts::{Keys, Scripts};
use super::shared::{millis, Shared, Timing};
use super::{subscriber, ClusterError, Inbox, RegistrationSource, Routed};
use crate::config::{valid_key_prefix, valid_node_id, ClusterSettings};
use crate::defaults;

/// One node's handle on the cluster; clones share it. The engine's tasks
/// stop when the last clone is dropped (without cleaning up: the node's
/// liveness lapses after the TTL, as if it had died) or at [`Cluster::shutdown`].
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
    pub(crate) outgoing: mpsc::Sender<Outgoing>,
    _stop: Arc<DropGuard>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.shared.keys.node)
            .field("state", &self.shared.health.state())
            .finish()
    }
}

impl Cluster {
    /// Starts the engine of node `node_id` on the current tokio runtime:
    /// connects, writes its liveness, subscribes to its channel, and starts
    /// the heartbeat and the self-check. Forwards carry relay messages of
    /// at most `max_message_bytes`. `registrations` answers with this
    /// node's registrations whenever they must be re-written.
    ///
    /// Redis being unreachable is not an error: the engine starts degraded
    /// and keeps trying. Errors: [`ClusterError::Config`] for an invalid
    /// node id, prefix, URL or password source.
    pub async fn start(
        settings: &ClusterSettings,
        node_id: String,
        max_message_bytes: usize,
        registrations: RegistrationSource,
    ) -> Result<(Cluster, Inbox), ClusterError> {
        if !valid_node_id(&node_id) {
            return Err(ClusterError::Config(format!(
                "node id {node_id:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        if !valid_key_prefix(&settings.key_prefix) {
            return Err(ClusterError::Config(format!(
                "key prefix {:?} is invalid",
                settings.key_prefix
            )));
        }
        let timing = Timing {
            heartbeat: Duration::from_millis(settings.heartbeat_ms),
            node_ttl: Duration::from_millis(settings.node_ttl_ms),
            command: Duration::from_millis(settings.command_timeout_ms),
            connect: Duration::from_millis(settings.connect_timeout_ms),
            self_check: Duration::from_millis(settings.self_check_ms),
        };
        let client = open_client(settings)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timing.connect))
            .set_response_timeout(Some(timing.command))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(defaults::CLUSTER_RETRY_MS))
            .set_max_delay(Duration::from_millis(defaults::CLUSTER_RESUBSCRIBE_MAX_MS));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| ClusterError::Config(format!("Redis connection: {e}")))?;
        let metrics = Arc::new(ClusterMetrics::default());
        let (inbox_tx, inbox_rx) = mpsc::channel(defaults::CLUSTER_INBOX);
        let (outgoing, outgoing_rx) = mpsc::channel(defaults::CLUSTER_PUBLISH_QUEUE);
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            health: Health::new(&node_id, metrics.clone()),
            keys: Keys {
                prefix: settings.key_prefix.clone(),
                node: node_id,
            },
            client,
            conn,
            scripts: Scripts::new(),
            timing,
            limit: envelope_limit(max_message_bytes),
            metrics,
            inbox: inbox_tx,
            source: registrations,
            cancel: cancel.clone(),
            window: Mutex::new(None),
            reassert_lock: Arc::default(),
        });
        log::info!(
            "cluster node {}: joining through {}",
            shared.keys.node,
            settings.redis_url
        );
        heartbeat::beat_once(&shared).await;
        tokio::spawn(heartbeat::run(shared.clone()));
        tokio::spawn(subscriber::run(shared.clone()));
        tokio::spawn(publisher::run(shared.clone(), outgoing_rx));
        let cluster = Cluster {
            shared,
            outgoing,
            _stop: Arc::new(cancel.drop_guard()),
        };
        Ok((cluster, Inbox(inbox_rx)))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.keys.node
    }

    /// The state now and its changes.
    pub fn state(&self) -> watch::Receiver<ClusterState> {
        self.shared.health.subscribe()
    }

    /// The engine's counters.
    pub fn metrics(&self) -> Arc<ClusterMetrics> {
        self.shared.metrics.clone()
    }

    /// Stops the engine's tasks and leaves the cluster in one script: the
    /// node's liveness key, the records still naming it, its set of
    /// clients and its id in `{p}nodes` are deleted, so the others stop
    /// finding its registrations at once and nothing is left to reap.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let s = &self.shared;
        let mut invocation = s.scripts.leave.key(s.keys.nodes());
        invocation.arg(&s.keys.prefix).arg(&s.keys.node);
        let mut conn = s.conn.clone();
        let left = s
            .command("shutdown", invocation.invoke_async::<u64>(&mut conn))
            .await;
        match left {
            Ok(0) => log::info!("cluster node {}: left the cluster", s.keys.node),
            Ok(n) => log::info!(
                "cluster node {}: left the cluster, deleting {n} registrations still held",
                s.keys.node
            ),
            Err(e) => log::warn!(
                "cluster node {}: could not leave the cluster ({e}); its liveness key lapses in {} ms and the others clean up",
                s.keys.node,
                millis(s.timing.node_ttl)
            ),
        }
    }

    /// Publishes `envelope` on `node`'s channel. The envelope is queued
    /// when this is called (not when the future is first polled): calls
    /// from one task are published in call order. The future tells whether
    /// the target's subscription received it.
    ///
    /// Fails at once while Redis is unreachable ([`ClusterError::Unavailable`]),
    /// when the queue is full ([`ClusterError::Busy`]) or the envelope too
    /// large; later with [`ClusterError::NotDelivered`] when nobody
    /// listens on that channel.
    pub fn forward(
        &self,
        node: &str,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send + 'static {
        let queued = encode(node, envelope, self.shared.limit)
            .map_err(ClusterError::from)
            .and_then(|payload| self.enqueue(Target::Node(node.to_owned(), payload)));
        let outcome = self.outcome(queued);
        async move { outcome.await.map(|_| ()) }
    }

    /// Sends a forward (an [`Envelope::Forward`]) to the node holding its
    /// target, in one round trip: one script finds the target's record,
    /// checks that its node is alive and that it belongs to the envelope's
    /// user, and publishes there. Queued at the call, in order with
    /// [`Cluster::forward`]s, like them.
    ///
    /// `Ok` says what the script found ([`Routed::Sent`] only if the
    /// node's subscription received it); errors as for [`Cluster::forward`].
    pub fn route(
        &self,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<Routed, ClusterError>> + Send + 'static {
        let queued = match envelope {
            Envelope::Forward { to, user, .. } => encode_unaddressed(envelope, self.shared.limit)
                .map_err(ClusterError::from)
                .and_then(|unaddressed| {
                    self.enqueue(Target::Peer {
                        peer: *to,
                        user: user.clone(),
                        envelope: unaddressed,
                    })
                }),
            _ => Err(ClusterError::BadData("only a forward is routed".into())),
        };
        self.outcome(queued)
    }

    /// The outcome of a queued envelope, counted.
    fn outcome(
        &self,
        queued: Result<oneshot::Receiver<Result<Routed, ClusterError>>, ClusterError>,
    ) -> impl Future<Output = Result<Routed, ClusterError>> + Send + 'static {
        let metrics = self.shared.metrics.clone();
        async move {
            let result = match queued {
                Ok(done) => done.await.unwrap_or(Err(ClusterError::Stopped)),
                Err(e) => Err(e),
            };
            match &result {
                Ok(Routed::Sent { .. }) => ClusterMetrics::inc(&metrics.forwards_out),
                Ok(_) => {}
                Err(_) => ClusterMetrics::inc(&metrics.forwards_out_failed),
            }
            result
        }
    }

    fn enqueue(
        &self,
        target: Target,
    ) -> Result<oneshot::Receiver<Result<Routed, ClusterError>>, ClusterError> {
        if !self.shared.health.link_up() {
            return Err(ClusterError::Unavailable);
        }
        let (done, outcome) = oneshot::channel();
        let outgoing = Outgoing { target, done };
        self.outgoing.try_send(outgoing).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClusterError::Busy,
            mpsc::error::TrySendError::Closed(_) => ClusterError::Stopped,
        })?;
        Ok(outcome)
    }

    /// Re-writes this node's registrations now, from the source given at
    /// start (the engine does so by itself after an outage).
    pub async fn reassert(&self) -> Result<Reasserted, ClusterError> {
        heartbeat::reassert(&self.shared).await
    }
}

/// The Redis client for `settings`: the URL, a password from the
/// environment or a file, and `TCP_NODELAY` (pipelined commands must not
/// wait for Nagle).
fn open_client(settings: &ClusterSettings) -> Result<redis::Client, ClusterError> {
    let config = |e: String| ClusterError::Config(e);
    let mut info = settings
        .redis_url
        .expose()
        .into_connection_info()
        .map_err(|e| config(format!("cluster.redis_url {}: {e}", settings.redis_url)))?;
    if let Some(password) = settings
        .load_password()
        .map_err(|e| config(e.to_string()))?
    {
        let redis = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(redis);
    }
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    info = info.set_tcp_settings(tcp);
    let tls = settings.load_tls().map_err(|e| config(e.to_string()))?;
    let client = match tls {
        // `rediss://` with its own CA or a client certificate.
        Some(tls) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: tls.client.map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert,
                    client_key: key.expose().as_bytes().to_vec(),
                }),
                root_cert: tls.ca,
            },
        ),
        None => redis::Client::open(info),
    };
    client.map_err(|e| config(format!("Redis client: {e}")))
}
