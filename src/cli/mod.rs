//! Subcommands of the `switchboard` binary other than the relay server itself.

use std::process::ExitCode;

use clap::Subcommand;

mod host;
mod host_reload;
mod peer;

/// What asks for a reload (SIGHUP, a change of the settings file): the
/// relay server uses it too.
pub use host_reload::Triggers;

/// A subcommand; without one the binary runs the relay server.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// A WebRTC peer: receive what other peers send, or send to one peer.
    Peer(peer::PeerArgs),
    /// A TCP tunnel host agent: serve a local service through a relay.
    Host(host::HostArgs),
}

impl Command {
    /// Runs the subcommand to completion and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Peer(args) => peer::run(args),
            Command::Host(args) => host::run(args),
        }
    }
}
