//! Subcommands of the `switchboard` binary other than the relay server itself.

use std::process::ExitCode;

use clap::Subcommand;

mod peer;

/// A subcommand; without one the binary runs the relay server.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// A WebRTC peer: receive what other peers send, or send to one peer.
    Peer(peer::PeerArgs),
}

impl Command {
    /// Runs the subcommand to completion and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Peer(args) => peer::run(args),
        }
    }
}
