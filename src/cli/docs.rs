//! `switchboard completions SHELL` and `switchboard man`: a shell completion
//! script and man pages generated from the clap definition of the binary, so
//! they always match its options.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

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
            clap_mangen::Man::new(command)
                .render(&mut out)
                .and_then(|()| out.flush())
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
    clap_mangen::generate_to(command, dir).map_err(named)
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
