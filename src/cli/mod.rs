//! Subcommands of the `switchboard` binary other than the relay server itself.

use std::process::ExitCode;

use clap::Subcommand;

mod check_config;
mod docs;
mod host;
mod host_reload;
mod peer;
mod start_args;

pub use start_args::StartArgs;

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
    /// Check the relay's settings (file, environment, flags) as a start
    /// would, without binding, and print them with secrets masked; exit 2
    /// naming the key on error.
    CheckConfig(check_config::CheckConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), or write all pages with --out-dir.
    Man(docs::ManArgs),
}

impl Command {
    /// Runs the subcommand to completion and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Peer(args) => peer::run(args),
            Command::Host(args) => host::run(args),
            Command::CheckConfig(args) => check_config::run(args),
            Command::Completions(args) => docs::completions(args),
            Command::Man(args) => docs::man(args),
        }
    }
}
