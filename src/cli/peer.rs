//! `switchboard peer`: a WebRTC peer on the command line.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `switchboard peer`.
#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Relay URL (ws:// or wss://).
    #[arg(long, value_name = "URL")]
    relay: String,
}

/// Runs `switchboard peer`.
pub fn run(args: PeerArgs) -> ExitCode {
    eprintln!("switchboard peer: not built yet (relay {})", args.relay);
    ExitCode::from(2)
}
