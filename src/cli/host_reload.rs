//! The agents of `switchboard host` and their live reload.
//!
//! One agent runs per service and relay node. On SIGHUP, and when the
//! settings file's bytes change (checked every
//! [`RELOAD_POLL`]; an editor's write-then-rename is seen too, as rathole
//! users expect; a change counts once the file reads the same again
//! [`RELOAD_SETTLE`] later), the settings are loaded again exactly as at start (file,
//! then the same flags, token and CA files re-read): agents of removed
//! services stop and close their connections, agents whose settings
//! changed restart, new ones start, and unchanged ones keep every
//! connection. Settings that no longer validate are refused with the key
//! named and the running agents stay as they are.
//!
//! Every agent started is entered in the process's [`AgentMetrics`] (its
//! series on the metrics listener), and removed when a reload removes its
//! service; each reload is counted there, applied or refused.
//!
//! An agent that ended for good (a wrong token, a TLS mismatch) is
//! remembered with its reason until a reload starts it again (every
//! reload does while it is still configured) or removes it: the reasons
//! the process reports when it exits are those of the agents as they
//! ended last, never one a reload has since revived.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard::config::ConfigError;
use switchboard::tunnel::agent::host_config::HostConfig;
use switchboard::tunnel::agent::metrics::AgentMetrics;
use switchboard::tunnel::agent::{self, AgentError, AgentSettings, LocalService};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the settings file is checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// A change seen by the poll counts once the file reads the same again
/// this much later: a write in progress is not loaded half done.
pub const RELOAD_SETTLE: Duration = Duration::from_millis(150);

/// An agent's identity across reloads: (service, relay).
type Key = (String, String);

/// A running agent: its generation (to tell a restarted agent's end from
/// its predecessor's), its stop switch and what its settings hash to.
struct Running {
    generation: u64,
    cancel: CancellationToken,
    fingerprint: u64,
}

/// What one agent's settings come to, secrets and file contents included,
/// so that a new token or CA file counts as a change (only compared, never shown).
fn fingerprint(settings: &AgentSettings, source: &HostConfig) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{source:?}").hash(&mut hasher);
    format!("{settings:?}").hash(&mut hasher);
    settings.token.expose().hash(&mut hasher);
    if let Some(ca) = &source.tls_ca_file {
        std::fs::read(ca).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

/// The agents and what starts, stops and replaces them.
pub struct Agents {
    running: HashMap<Key, Running>,
    tasks: JoinSet<(Key, u64, Result<(), AgentError>)>,
    next_generation: u64,
    /// Reloads applied since start.
    pub reloads: u64,
    /// The last refused reload's reason, until a reload succeeds.
    pub last_error: Option<String>,
    /// Agents that ended for good and why, oldest first; an entry goes
    /// when a reload starts or removes its agent.
    ended: Vec<(Key, String)>,
    metrics: Arc<AgentMetrics>,
}

impl Agents {
    /// Starts one agent per entry of `agents`, each entered in `metrics`.
    pub fn start(agents: Vec<(AgentSettings, HostConfig)>, metrics: Arc<AgentMetrics>) -> Agents {
        let mut all = Agents {
            running: HashMap::new(),
            tasks: JoinSet::new(),
            next_generation: 0,
            reloads: 0,
            last_error: None,
            ended: Vec::new(),
            metrics,
        };
        for (settings, source) in agents {
            all.spawn(settings, &source);
        }
        all
    }

    fn spawn(&mut self, settings: AgentSettings, source: &HostConfig) {
        let key = (settings.service.clone(), settings.relay.clone());
        // Started again: why it ended before is no longer the case.
        self.ended.retain(|(k, _)| *k != key);
        let generation = self.next_generation;
        self.next_generation += 1;
        let cancel = CancellationToken::new();
        let running = Running {
            generation,
            cancel: cancel.clone(),
            fingerprint: fingerprint(&settings, source),
        };
        self.running.insert(key.clone(), running);
        let stats = Arc::new(agent::AgentStats::default());
        let udp = matches!(settings.local, LocalService::Udp(_));
        self.metrics.insert(&key.0, &key.1, stats.clone(), udp);
        self.tasks.spawn(async move {
            let result = agent::run(settings, stats, cancel).await;
            (key, generation, result)
        });
    }

    /// Applies freshly loaded settings: stop the removed, restart the
    /// changed, start the new, keep the rest.
    pub fn apply(&mut self, loaded: Vec<(AgentSettings, HostConfig)>) {
        let mut fresh: HashMap<Key, (AgentSettings, HostConfig)> = loaded
            .into_iter()
            .map(|(s, source)| ((s.service.clone(), s.relay.clone()), (s, source)))
            .collect();
        let (mut kept, mut stopped, mut restarted, mut started) = (0, 0, 0, 0);
        let old: Vec<Key> = self.running.keys().cloned().collect();
        for key in old {
            match fresh.remove(&key) {
                None => {
                    if let Some(running) = self.running.remove(&key) {
                        log::info!(
                            "reload: service {:?} on relay {} removed: stopping it",
                            key.0,
                            key.1
                        );
                        running.cancel.cancel();
                        self.metrics.remove(&key.0, &key.1);
                        stopped += 1;
                    }
                }
                Some((settings, source)) => {
                    let same = self
                        .running
                        .get(&key)
                        .is_some_and(|r| r.fingerprint == fingerprint(&settings, &source));
                    if same {
                        kept += 1;
                    } else {
                        if let Some(running) = self.running.remove(&key) {
                            running.cancel.cancel();
                        }
                        log::info!(
                            "reload: service {:?} on relay {} changed: restarting it",
                            key.0,
                            key.1
                        );
                        self.spawn(settings, &source);
                        restarted += 1;
                    }
                }
            }
        }
        // An agent that had ended and is no longer configured: forgotten.
        self.ended.retain(|(k, _)| fresh.contains_key(k));
        for ((service, relay), (settings, source)) in fresh {
            log::info!("reload: service {service:?} on relay {relay} added: starting it");
            self.spawn(settings, &source);
            started += 1;
        }
        self.reloads += 1;
        self.last_error = None;
        self.metrics.reloaded(true);
        log::info!(
            "reload {}: {kept} agent(s) kept, {restarted} restarted, {started} started, {stopped} stopped",
            self.reloads
        );
    }

    /// A refused reload: logged, remembered, nothing changed.
    pub fn refuse(&mut self, error: &ConfigError) {
        log::error!("reload refused, the running settings stay: {error}");
        self.last_error = Some(error.to_string());
        self.metrics.reloaded(false);
    }

    /// Waits for the next agent to end by itself; `None` when none is left.
    /// Ends of agents a reload replaced or stopped are passed over.
    pub async fn next_end(&mut self) -> Option<Result<(), String>> {
        loop {
            let ended = self.tasks.join_next().await?;
            let (key, generation, result) = match ended {
                Ok(ended) => ended,
                Err(panicked) => return Some(Err(format!("an agent task failed: {panicked}"))),
            };
            let current = self
                .running
                .get(&key)
                .is_some_and(|r| r.generation == generation);
            if !current {
                continue;
            }
            self.running.remove(&key);
            let result = result.map_err(|e| e.to_string());
            if let Err(reason) = &result {
                self.metrics.refused(&key.0, &key.1, reason);
                self.ended.push((key, reason.clone()));
            }
            return Some(result);
        }
    }

    /// The first reason among the agents that ended for good and were
    /// not started again or removed since (what the process exits 1 with).
    pub fn first_error(&self) -> Option<&str> {
        self.ended.first().map(|(_, reason)| reason.as_str())
    }

    /// Agents running now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Stops every agent and waits for them (bounded by each agent's own shutdown).
    pub async fn stop(mut self) {
        for running in self.running.values() {
            running.cancel.cancel();
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What asks for a reload: SIGHUP, or a change of the settings file's bytes.
pub struct Triggers {
    hangup: tokio::signal::unix::Signal,
    file: Option<(PathBuf, Option<Vec<u8>>)>,
    tick: tokio::time::Interval,
}

impl Triggers {
    /// Watches `file` (when given) and SIGHUP.
    pub fn new(file: Option<PathBuf>) -> std::io::Result<Triggers> {
        let file = file.map(|path| {
            let bytes = std::fs::read(&path).ok();
            (path, bytes)
        });
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Triggers {
            hangup: signal(SignalKind::hangup())?,
            file,
            tick,
        })
    }

    /// Resolves with what triggered the next reload.
    pub async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {
                    // The file's bytes as of this reload: no second reload for them.
                    if let Some((path, seen)) = &mut self.file {
                        *seen = std::fs::read(path).ok();
                    }
                    return "SIGHUP";
                }
                _ = self.tick.tick() => {
                    if let Some((path, seen)) = &mut self.file {
                        // An unreadable moment (mid-rename) is not a change,
                        // nor are bytes still changing (the next tick sees them).
                        if let Ok(now) = std::fs::read(&*path) {
                            if seen.as_ref() != Some(&now) {
                                tokio::time::sleep(RELOAD_SETTLE).await;
                                if std::fs::read(&*path).is_ok_and(|again| again == now) {
                                    *seen = Some(now);
                                    return "a change of the settings file";
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
