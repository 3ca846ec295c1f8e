//! `switchboard-load`: a load generator speaking the relay protocol.
//!
//! It targets any relay URL (Switchboard or ProxyStore's `proxystore-relay`)
//! and measures forwarding throughput (`flood`), one-way latency with one
//! message in flight (`latency`), and the relay's memory per idle registered
//! client (`idle`); for the TCP tunnel, connection setup time (`connrate`)
//! against its own `echo-server`, and UDP request/response round trips
//! (`udp-rr`) against its own `udp-echo-server`. Each subcommand prints human text and exactly one
//! machine-readable line starting with `RESULT`. `scripts/bench relay` runs
//! all three against both relays. `soak` (relay) and `tunnel-soak` check that
//! nothing is lost under load and print a `CHECK … PASS|FAIL` line per check;
//! `scripts/soak` runs both. For a cluster, `takeover` times a UUID taken
//! over from one node by another (the old socket's 4004) and `failover` times
//! N reconnecting clients moving off a node killed with SIGKILL;
//! `scripts/bench cluster` runs them.

mod checks;
mod client;
mod connrate;
mod failover;
mod flood;
mod idle;
mod latency;
mod soak;
mod soak_plan;
mod takeover;
mod tunnel_soak;
mod udp_rr;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator for relay (signaling) servers speaking ProxyStore's relay protocol.
#[derive(Parser, Debug)]
#[command(name = "switchboard-load", version, about)]
struct Cli {
    /// Relay URL (ws:// only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8700")]
    url: String,
    /// Runtime threads of the load generator (1 = single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Seconds allowed to connect and register one client.
    #[arg(long, global = true, default_value_t = 10.0)]
    connect_timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Plain TCP: N short connections (C at a time) to an echo service; reports setup time.
    Connrate {
        /// The echo service (direct, or a tunnel service's public address).
        #[arg(long)]
        addr: SocketAddr,
        /// Measured connections.
        #[arg(long, default_value_t = 1_000)]
        count: usize,
        /// Unmeasured connections first.
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        /// Connections in flight at once: C tasks, each opening its share
        /// sequentially; percentiles are over all of them.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Plain TCP echo server (what `connrate` measures against).
    EchoServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Plain UDP: N sequential request/response round trips; reports p50/p99.
    UdpRr {
        /// The UDP echo service (direct, or a UDP tunnel service's public address).
        #[arg(long)]
        addr: SocketAddr,
        /// Measured round trips.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Unmeasured round trips first.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Request size in bytes (at least 8).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Plain UDP echo server (what `udp-rr` measures against).
    UdpEchoServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// P pairs; A sends to B as fast as the window allows; reports forwarded msg/s.
    Flood {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 4)]
        pairs: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Warm-up seconds before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Encoded size of each peer_connection frame, in bytes.
        #[arg(long, default_value_t = 1800)]
        size: usize,
        /// Most unacknowledged messages in flight per pair (keep it below the
        /// relay's per-client outbound queue, 256 for Switchboard).
        #[arg(long, default_value_t = 64)]
        window: u64,
        /// Relay URL the receivers (B) connect to; default: --url. With
        /// another node of a cluster, every message crosses nodes.
        #[arg(long)]
        peer_url: Option<String>,
    },
    /// One pair, one message in flight; reports one-way latency percentiles.
    Latency {
        /// Measured messages.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Unmeasured messages sent first.
        #[arg(long, default_value_t = 1_000)]
        warmup: usize,
        /// Encoded size of each peer_connection frame, in bytes.
        #[arg(long, default_value_t = 1800)]
        size: usize,
        /// Longest wait for one message, in seconds.
        #[arg(long, default_value_t = 5.0)]
        message_timeout: f64,
        /// Longest whole run, in seconds.
        #[arg(long, default_value_t = 300.0)]
        max_seconds: f64,
        /// Stop measuring after this many seconds even if fewer than --count
        /// messages were measured (a probe running beside `flood`).
        #[arg(long)]
        duration: Option<f64>,
        /// Relay URL the receiver (B) connects to; default: --url. With
        /// another node of a cluster, every message crosses nodes.
        #[arg(long)]
        peer_url: Option<String>,
    },
    /// N idle registered clients; reports the relay's RSS growth per client.
    Idle {
        /// Clients to open and register.
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        /// Comma-separated local source addresses (round robin), e.g. 127.0.0.1,127.0.0.2.
        #[arg(long, value_delimiter = ',')]
        sources: Vec<IpAddr>,
        /// Process id of the relay (its VmRSS is read from /proc/PID/status).
        #[arg(long)]
        server_pid: u32,
        /// Connections opened at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to wait after the last registration before reading RSS again.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
        /// How far each client goes: `registered` is the measurement; `tcp` and
        /// `websocket` break the cost down.
        #[arg(long, value_enum, default_value_t = idle::Stage::Registered)]
        stage: idle::Stage,
        /// After the RESULT line, keep the clients open this many seconds, or
        /// until SIGTERM/SIGINT, before closing them (load runs beside them).
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
    },
    /// Takeover of a fresh UUID, N times: registered on --url, then on
    /// --peer-url; reports the time from B's registration to A's 4004.
    Takeover {
        /// Measured takeovers.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Unmeasured takeovers done first.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Longest wait for one takeover, in seconds.
        #[arg(long, default_value_t = 5.0)]
        takeover_timeout: f64,
        /// Longest whole run, in seconds.
        #[arg(long, default_value_t = 60.0)]
        max_seconds: f64,
        /// Relay URL of the second registration (B); default: --url (same-node).
        #[arg(long)]
        peer_url: Option<String>,
    },
    /// N reconnecting RelayClients on --url; SIGKILL its node; reports the
    /// time until all registered again on the fallback URLs.
    Failover(failover::FailoverCli),
    /// N registered clients, F forwards each to K random peers; checks that
    /// none is lost, duplicated or reordered and that the relay's RSS comes back.
    Soak(soak::SoakCli),
    /// N concurrent clients of a tunnelled echo service, B bytes each; checks
    /// every echo's SHA-256 and that the relay's RSS comes back.
    TunnelSoak(tunnel_soak::TunnelSoakCli),
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        anyhow::bail!("{name} must be a number of seconds in (0, 86400]");
    }
    Ok(Duration::from_secs_f64(value))
}

/// The receivers' relay: `--peer-url` if given, else the senders' `--url`.
async fn peer_target(target: &client::Target, url: Option<&str>) -> anyhow::Result<client::Target> {
    match url {
        Some(url) => client::Target::resolve(url).await,
        None => Ok(target.clone()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Connrate {
            addr,
            count,
            warmup,
            concurrency,
        } => {
            let timeout = seconds("--connect-timeout", cli.connect_timeout)?;
            return connrate::run(addr, count, warmup, concurrency, timeout).await;
        }
        Command::EchoServer { listen } => return connrate::echo_server(listen).await,
        Command::UdpRr {
            addr,
            count,
            warmup,
            size,
        } => {
            let timeout =
                seconds("--connect-timeout", cli.connect_timeout)?.min(Duration::from_secs(1));
            return udp_rr::run(addr, count, warmup, size, timeout).await;
        }
        Command::UdpEchoServer { listen } => return udp_rr::echo_server(listen).await,
        Command::Failover(_) => return bail_failover(),
        Command::TunnelSoak(args) => return tunnel_soak::run(&args).await,
        _ => {}
    }
    let target = client::Target::resolve(&cli.url).await?;
    let connect_timeout = seconds("--connect-timeout", cli.connect_timeout)?;
    match cli.command {
        Command::Soak(args) => soak::run(&target, &args, connect_timeout).await,
        Command::Flood {
            pairs,
            seconds: secs,
            warmup,
            size,
            window,
            peer_url,
        } => {
            let peer = peer_target(&target, peer_url.as_deref()).await?;
            let args = flood::FloodArgs {
                pairs,
                seconds: secs,
                warmup,
                size,
                window,
                connect_timeout,
            };
            flood::run(&target, &peer, &args).await
        }
        Command::Latency {
            count,
            warmup,
            size,
            message_timeout,
            max_seconds,
            duration,
            peer_url,
        } => {
            let peer = peer_target(&target, peer_url.as_deref()).await?;
            let args = latency::LatencyArgs {
                count,
                warmup,
                size,
                message_timeout: seconds("--message-timeout", message_timeout)?,
                max_duration: seconds("--max-seconds", max_seconds)?,
                measure_for: duration.map(|d| seconds("--duration", d)).transpose()?,
                connect_timeout,
            };
            latency::run(&target, &peer, &args).await
        }
        Command::Idle {
            clients,
            sources,
            server_pid,
            concurrency,
            settle,
            stage,
            hold,
        } => {
            let args = idle::IdleArgs {
                clients,
                sources,
                server_pid,
                concurrency,
                connect_timeout,
                settle: seconds("--settle", settle)?,
                stage,
                hold: if hold == 0.0 {
                    None
                } else {
                    Some(seconds("--hold", hold)?)
                },
            };
            idle::run(&target, &args).await
        }
        Command::Takeover {
            count,
            warmup,
            takeover_timeout,
            max_seconds,
            peer_url,
        } => {
            let peer = peer_target(&target, peer_url.as_deref()).await?;
            let args = takeover::TakeoverArgs {
                count,
                warmup,
                takeover_timeout: seconds("--takeover-timeout", takeover_timeout)?,
                max_duration: seconds("--max-seconds", max_seconds)?,
                connect_timeout,
            };
            takeover::run(&target, &peer, &args).await
        }
        Command::Connrate { .. }
        | Command::EchoServer { .. }
        | Command::UdpRr { .. }
        | Command::UdpEchoServer { .. }
        | Command::TunnelSoak(_)
        | Command::Failover(_) => Ok(()),
    }
}

/// `failover` runs on an actix system of its own, never inside `run`.
fn bail_failover() -> anyhow::Result<()> {
    anyhow::bail!("internal error: failover must not run on the tokio runtime")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Failover(args) = &cli.command {
        return report(failover::run(&cli.url, args));
    }
    let runtime = match cli.threads {
        0 => {
            eprintln!("switchboard-load: --threads must be at least 1");
            return ExitCode::from(2);
        }
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard-load: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for tasks stuck on a dead relay.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report(result)
}
