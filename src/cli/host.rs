//! `switchboard host`: a tunnel host agent serving a local TCP (or UDP) service through a relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use switchboard::config::ConfigError;
use switchboard::logging;
use switchboard::tunnel::agent;
use switchboard::tunnel::agent::host_config::{HostConfig, MetricsListen};
use switchboard::tunnel::agent::metrics::{AgentMetrics, MetricsServer};

use super::host_reload::{Agents, Triggers};

/// Arguments of `switchboard host` (each overrides the same key of `--config`).
#[derive(Args, Debug)]
pub struct HostArgs {
    /// TOML settings file (see config/host/agent.toml; several services as
    /// [[services]] tables, config/host/services.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// The relay's agents listener (its `tunnel.host`:`tunnel.port`); repeat
    /// it for the nodes of a cluster: the agent keeps a pool on each.
    #[arg(long, value_name = "HOST:PORT")]
    relay: Vec<String>,
    /// The service name configured on the relay.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// File whose first line is the service token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The local TCP service to expose.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "echo")]
    local: Option<String>,
    /// Serve the built-in echo service instead of --local.
    #[arg(long)]
    echo: bool,
    /// The local UDP service to expose (the relay's service has type = "udp").
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["echo", "local", "proxy_protocol"])]
    local_udp: Option<String>,
    /// Connect to the relay over TLS (the relay has tunnel.certfile/keyfile).
    #[arg(long)]
    tls: bool,
    /// PEM CA file to trust for the relay's certificate (implies --tls; default: web PKI roots).
    #[arg(long, value_name = "PATH")]
    tls_ca_file: Option<PathBuf>,
    /// Name to check the relay's certificate against (default: the host of --relay).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Reach the relay through this HTTP proxy (CONNECT):
    /// http://[user:password@]host[:port]. Default: HTTPS_PROXY, else
    /// ALL_PROXY; NO_PROXY exempts relays.
    #[arg(long, value_name = "URL")]
    http_proxy: Option<String>,
    /// Send a PROXY protocol v2 header (the client's address) to the local service.
    #[arg(long)]
    proxy_protocol: bool,
    /// Pooled data connections kept open to the relay.
    #[arg(long, value_name = "N")]
    pool: Option<usize>,
    /// Serve /metrics and /health (Prometheus text, JSON) on this IP:PORT
    /// (the file's `metrics_listen`; keep it on loopback or set `metrics_token`).
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<String>,
    /// Runtime threads: 1 = single-threaded, 0 = one per core.
    #[arg(long, value_name = "N", default_value_t = switchboard::defaults::AGENT_WORKERS)]
    workers: usize,
    /// Log filter (overrides RUST_LOG).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// The agents the file and flags stand for, each with its source, and the
/// metrics listener (loaded the same way at start and at every reload).
type Loaded = (
    Vec<(agent::AgentSettings, HostConfig)>,
    Option<MetricsListen>,
);

fn load(args: &HostArgs) -> Result<Loaded, ConfigError> {
    let file = match &args.config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let flags = HostConfig {
        relay: args.relay.first().cloned(),
        more_relays: (args.relay.len() > 1).then(|| args.relay[1..].to_vec()),
        service: args.service.clone(),
        token_file: args.token_file.clone(),
        local: args.local.clone(),
        echo: args.echo.then_some(true),
        local_udp: args.local_udp.clone(),
        pool: args.pool,
        proxy_protocol: args.proxy_protocol.then_some(true),
        tls: args.tls.then_some(true),
        tls_ca_file: args.tls_ca_file.clone(),
        tls_server_name: args.tls_server_name.clone(),
        http_proxy: args.http_proxy.clone(),
        metrics_listen: args.metrics_listen.clone(),
        ..HostConfig::default()
    };
    let given: Vec<&str> = [
        ("relay", flags.relay.is_some()),
        ("service", flags.service.is_some()),
        ("token_file", flags.token_file.is_some()),
        ("local", flags.local.is_some()),
        ("echo", flags.echo.is_some()),
        ("local_udp", flags.local_udp.is_some()),
        ("pool", flags.pool.is_some()),
        ("proxy_protocol", flags.proxy_protocol.is_some()),
        ("tls", flags.tls.is_some()),
        ("tls_ca_file", flags.tls_ca_file.is_some()),
        ("tls_server_name", flags.tls_server_name.is_some()),
        ("http_proxy", flags.http_proxy.is_some()),
        ("metrics_listen", flags.metrics_listen.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let merged = file.merge(flags);
    let named = |error| name_flag(error, &given);
    let metrics = merged.metrics().map_err(named)?;
    Ok((merged.into_agents_with_sources().map_err(named)?, metrics))
}

/// An invalid value that came from a flag names the flag (`--http-proxy`),
/// not the file key it overrides (`http_proxy`).
fn name_flag(error: ConfigError, given: &[&str]) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } if given.contains(&key.as_str()) => {
            ConfigError::Invalid {
                key: format!("--{}", key.replace('_', "-")),
                message,
            }
        }
        other => other,
    }
}

/// Binds and starts the metrics listener, if one is set; an address that
/// cannot be bound is a settings error naming `metrics_listen` (the caller
/// names `--metrics-listen` when the address came from it).
fn start_metrics(
    listen: Option<&MetricsListen>,
    metrics: &std::sync::Arc<AgentMetrics>,
) -> Result<Option<MetricsServer>, ConfigError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let invalid = |e: std::io::Error| ConfigError::Invalid {
        key: "metrics_listen".into(),
        message: format!("cannot listen on {}: {e}", listen.addr),
    };
    let listener = std::net::TcpListener::bind(listen.addr).map_err(invalid)?;
    let bound = listener.local_addr().map_err(invalid)?;
    let server =
        MetricsServer::start(metrics.clone(), listen.token.clone(), listener).map_err(invalid)?;
    log::info!("agent metrics on http://{bound} (/metrics, /health)");
    Ok(Some(server))
}

/// Runs `switchboard host` until SIGTERM/SIGINT or a fatal refusal.
pub fn run(args: HostArgs) -> ExitCode {
    let (settings, listen) = match load(&args) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("switchboard host: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(args.log_level.as_deref(), switchboard::defaults::LOG_LEVEL);
    let metrics = AgentMetrics::new();
    let metrics_server = match start_metrics(listen.as_ref(), &metrics) {
        Ok(server) => server,
        Err(error) => {
            let given: &[&str] = match args.metrics_listen {
                Some(_) => &["metrics_listen"],
                None => &[],
            };
            let error = name_flag(error, given);
            eprintln!("switchboard host: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match switchboard::tunnel::runtime(args.workers, "switchboard-host") {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard host: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // A fatal refusal (a bad token, a TLS mismatch) ends that agent
        // only: the others keep serving, and the process exits 1 with the
        // first reason once none is left or when stopped; a reload that
        // starts the agent again (or removes it) forgets its reason. A node
        // that is down, or that does not know the service (its services may
        // be reloaded), is only retried.
        let mut triggers = match Triggers::new(args.config.clone()) {
            Ok(triggers) => triggers,
            Err(error) => return Err(format!("cannot watch for SIGHUP: {error}")),
        };
        let mut agents = Agents::start(settings, metrics);
        let stop = wait_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                ended = agents.next_end() => match ended {
                    Some(Ok(())) => {}
                    Some(Err(error)) => {
                        if agents.len() > 0 {
                            log::error!(
                                "switchboard host: {error}; {} other agent(s) keep serving",
                                agents.len()
                            );
                        }
                    }
                    None => break,
                },
                why = triggers.next() => {
                    log::info!("reloading the settings ({why})");
                    match load(&args) {
                        Ok((loaded, new_listen)) => {
                            if new_listen != listen {
                                log::warn!(
                                    "reload: metrics_listen and metrics_token are read at \
                                     start only; the metrics listener stays as it is"
                                );
                            }
                            agents.apply(loaded);
                        }
                        Err(error) => agents.refuse(&error),
                    }
                }
                signal = &mut stop => {
                    if let Ok(signal) = signal {
                        log::info!("received {signal}; stopping the agent");
                    }
                    break;
                }
            }
        }
        let first_error = agents.first_error().map(str::to_string);
        agents.stop().await;
        if let Some(server) = metrics_server {
            server.stop().await;
        }
        first_error.map_or(Ok(()), Err)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard host: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
