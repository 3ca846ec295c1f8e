//! `switchboard host`: a tunnel host agent serving a local TCP (or UDP) service through a relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use switchboard::config::ConfigError;
use switchboard::logging;
use switchboard::tunnel::agent;
use switchboard::tunnel::agent::host_config::HostConfig;

/// Arguments of `switchboard host` (each overrides the same key of `--config`).
#[derive(Args, Debug)]
pub struct HostArgs {
    /// TOML settings file (see config/host/agent.toml).
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
    /// Runtime threads: 1 = single-threaded, 0 = one per core.
    #[arg(long, value_name = "N", default_value_t = switchboard::defaults::AGENT_WORKERS)]
    workers: usize,
    /// Log filter (overrides RUST_LOG).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn settings(args: &HostArgs) -> Result<Vec<agent::AgentSettings>, ConfigError> {
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
        ..HostConfig::default()
    };
    file.merge(flags).into_agents()
}

/// Runs `switchboard host` until SIGTERM/SIGINT or a fatal refusal.
pub fn run(args: HostArgs) -> ExitCode {
    let settings = match settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("switchboard host: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(args.log_level.as_deref(), switchboard::defaults::LOG_LEVEL);
    let runtime = match switchboard::tunnel::runtime(args.workers, "switchboard-host") {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard host: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // One agent per relay node; a fatal refusal from any of them (a bad
        // token, a TLS mismatch: the same settings go to every node) stops
        // them all. A node that is down is only retried by its agent.
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut agents = tokio::task::JoinSet::new();
        for one in settings {
            let stats = std::sync::Arc::new(agent::AgentStats::default());
            agents.spawn(agent::run(one, stats, cancel.clone()));
        }
        let failure =
            |ended: Result<Result<(), agent::AgentError>, tokio::task::JoinError>| match ended {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(panicked) => Some(format!("an agent task failed: {panicked}")),
            };
        let mut first_error = None;
        tokio::select! {
            Some(ended) = agents.join_next() => first_error = failure(ended),
            signal = wait_signal() => {
                if let Ok(signal) = signal {
                    log::info!("received {signal}; stopping the agent");
                }
            }
        }
        cancel.cancel();
        while let Some(ended) = agents.join_next().await {
            if first_error.is_none() {
                first_error = failure(ended);
            }
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
