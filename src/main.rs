//! The `switchboard` binary: CLI → settings → logging → run until SIGTERM/SIGINT.
//!
//! Without a subcommand it runs the relay server; `switchboard peer ...` is a
//! WebRTC peer (src/cli/peer.rs) and `switchboard host ...` a tunnel host
//! agent (src/cli/host.rs).

mod cli;

/// jemalloc instead of glibc's malloc: the relay, the WebRTC stack and the
/// tunnel allocate on one thread and free on another all the time, which glibc
/// serves slowly; jemalloc keeps the same memory per idle client (BENCHMARKS.md).
/// Built with background threads (Cargo.toml): without them jemalloc purges
/// freed pages only while the process allocates, so a relay that went idle
/// after a burst kept its peak (the soak: 3.0 GB peak, 1.8 GB still resident
/// 30 s after every client left; with them, 45 MB).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchboard::config::Settings;
use switchboard::{logging, node};

/// A ProxyStore-compatible WebRTC relay (signaling) server, peer and TCP tunnel.
///
/// Without a subcommand, runs the relay server.
#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<cli::Command>,
    #[command(flatten)]
    start: cli::StartArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, None | Some(cli::Command::Host(_))) {
        hold_sighup();
    }
    if let Some(command) = cli.command {
        return command.run();
    }
    let log_level = cli.start.log_level();
    let overrides = cli.start.overrides();
    let (settings, warnings) = match cli.start.load() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("switchboard: {error}");
            return ExitCode::from(2);
        }
    };
    let dir = settings.log.dir.as_deref();
    if let Err(error) = logging::init_with_dir(log_level.as_deref(), &settings.log.level, dir) {
        eprintln!("switchboard: invalid setting `log.dir` (ProxyStore: logging.log_dir; --log-dir): {error}");
        return ExitCode::from(2);
    }
    for warning in &warnings {
        log::warn!("{warning}");
    }
    log::debug!("settings: {settings:?}");
    let reloader = cli
        .start
        .config
        .clone()
        .map(|file| node::Reloader::new(file, overrides));
    match actix_rt::System::new().block_on(run(settings, cli.start.config, reloader)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            eprintln!("switchboard: {error}");
            // A setting that only fails when used (a tokens file's format)
            // is a configuration error too: 2, as for one the loader refuses.
            match error.downcast_ref::<node::NodeError>() {
                Some(node::NodeError::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Ignores SIGHUP until the reload handler replaces this: the relay and the
/// host agent reload on SIGHUP, so one sent while they start (`systemctl
/// reload`, a script) must not kill them with the default action.
fn hold_sighup() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Runs the node until SIGTERM/SIGINT; on SIGHUP or a change of the
/// `--config` file (`file`), reloads its tunnel services.
async fn run(
    settings: Settings,
    file: Option<PathBuf>,
    mut reloader: Option<node::Reloader>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGTERM right after the "listening" line is a
    // graceful stop, never the default action's kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (public, admin) = node::bind(&settings)?;
    let mut relay = node::start(settings, public, admin)?;
    let mut triggers = cli::Triggers::new(file)?;
    let signal = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            why = triggers.next() => match reloader.as_mut() {
                Some(reloader) => reloader.reload(&mut relay, why),
                None => log::warn!("{why}: no --config file, nothing to reload"),
            },
        }
    };
    log::info!("received {signal}; shutting down");
    relay.shutdown().await;
    Ok(())
}
