//! `switchboard completions SHELL` and `switchboard man`: a shell completion
//! script and man pages generated from the clap definition of the binary, so
//! they always match its options. Each page also has EXIT STATUS and
//! ENVIRONMENT sections (man-pages(7)), written here since clap knows
//! neither.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

/// Arguments of `switchboard completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `switchboard man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write switchboard.1 and one page per subcommand
    /// (switchboard-host.1, ...) into this directory instead of printing
    /// switchboard.1 on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> ExitCode {
    let mut command = crate::Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "switchboard", &mut out);
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard completions: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the man page on stdout, or writes every page into `--out-dir`.
pub fn man(args: ManArgs) -> ExitCode {
    let command = crate::Cli::command();
    let result = match &args.out_dir {
        Some(dir) => write_pages(command, dir),
        None => {
            let mut out = std::io::stdout().lock();
            let mut command = command.disable_help_subcommand(true);
            command.build();
            render(&command, &mut out).and_then(|()| out.flush())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard man: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `switchboard.1` and a page per subcommand into `dir` (created if needed).
fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    let named = |error: std::io::Error| {
        std::io::Error::new(error.kind(), format!("{}: {error}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(named)?;
    let mut command = command.disable_help_subcommand(true);
    command.build();
    write_tree(&command, dir).map_err(named)
}

/// Writes the page of `command` and of each visible subcommand, recursively.
fn write_tree(command: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir)?;
    }
    let name = clap_mangen::Man::new(command.clone()).get_filename();
    let mut file = std::fs::File::create(dir.join(name))?;
    render(command, &mut file)?;
    file.flush()
}

/// One man page: clap_mangen's sections in its order, with EXIT STATUS and
/// ENVIRONMENT after the description of options and subcommands.
fn render(command: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    if command.get_after_long_help().is_some() || command.get_after_help().is_some() {
        man.render_extra_section(w)?;
    }
    let (exit, environment) = notes(command.get_name());
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (variable, meaning) in environment {
        roff.control("TP", [])
            .text([bold(*variable)])
            .text([roman(*meaning)]);
    }
    roff.to_writer(w)?;
    if command.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

type Entries = &'static [(&'static str, &'static str)];

const LOG: (&str, &str) = (
    "RUST_LOG",
    "Log filter (env_logger syntax) when --log-level is not given.",
);
const PROXIES: [(&str, &str); 3] = [
    (
        "HTTPS_PROXY, https_proxy",
        "HTTP proxy (CONNECT) for relay connections when no proxy is configured.",
    ),
    ("ALL_PROXY, all_proxy", "Used when HTTPS_PROXY is not set."),
    (
        "NO_PROXY, no_proxy",
        "Relays reached directly: *, host names and their subdomains, IP addresses, CIDR ranges.",
    ),
];

/// The EXIT STATUS and ENVIRONMENT entries of the command named `name`
/// (README.md describes each case).
fn notes(name: &str) -> (Entries, Entries) {
    const RELAY_EXIT: Entries = &[
        (
            "0",
            "Stopped by SIGTERM or SIGINT after closing every session.",
        ),
        (
            "1",
            "A failure while running, e.g. a listener that cannot be bound.",
        ),
        ("2", "Invalid settings; the message names the key or flag."),
    ];
    const RELAY_ENV: Entries = &[
        LOG,
        (
            "SWITCHBOARD__SECTION__KEY",
            "Overrides a setting of the file, e.g. SWITCHBOARD__SERVER__PORT=9000.",
        ),
        (
            "PROXYSTORE_GLOBUS_CLIENT_ID, PROXYSTORE_GLOBUS_CLIENT_SECRET",
            "Globus client credentials with --proxystore-config and method = \"globus\".",
        ),
    ];
    const HOST_EXIT: Entries = &[
        ("0", "Stopped by SIGTERM or SIGINT."),
        (
            "1",
            "Refused for good by the relay (wrong token, TLS setting that differs) with no service left to serve.",
        ),
        ("2", "Invalid settings; the message names the key or flag."),
    ];
    const HOST_ENV: Entries = &[LOG, PROXIES[0], PROXIES[1], PROXIES[2]];
    const PEER_EXIT: Entries = &[
        (
            "0",
            "Done: listen received its --count messages, send's message was acknowledged by the peer.",
        ),
        (
            "1",
            "A relay or connection failure, or data the peer did not acknowledge; the reason is printed.",
        ),
        ("2", "Invalid settings or flags."),
    ];
    const PEER_ENV: Entries = &[
        LOG,
        PROXIES[0],
        PROXIES[1],
        PROXIES[2],
        (
            "SWITCHBOARD_TURN_CREDENTIAL",
            "Default of --turn-credential.",
        ),
        ("SWITCHBOARD_TURN_SECRET", "Default of --turn-secret."),
    ];
    const CHECK_EXIT: Entries = &[
        ("0", "The settings would start."),
        (
            "1",
            "The settings could not be printed (stdout not writable).",
        ),
        ("2", "Invalid settings; the message names the key or flag."),
    ];
    const OUTPUT_EXIT: Entries = &[("0", "Written."), ("1", "The output could not be written.")];
    const NONE: Entries = &[("(none)", "No variable changes what is written.")];
    match name {
        "host" => (HOST_EXIT, HOST_ENV),
        "peer" | "listen" | "send" => (PEER_EXIT, PEER_ENV),
        "check-config" => (CHECK_EXIT, RELAY_ENV),
        "completions" | "man" => (OUTPUT_EXIT, NONE),
        _ => (RELAY_EXIT, RELAY_ENV),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn an_unwritable_out_dir_is_named_in_the_error() {
        let dir = std::path::Path::new("/proc/switchboard-no-such/man");
        let error = super::write_pages(crate::Cli::command(), dir).unwrap_err();
        assert!(
            error.to_string().contains("/proc/switchboard-no-such/man"),
            "{error}"
        );
    }
}
