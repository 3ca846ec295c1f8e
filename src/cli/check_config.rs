//! `switchboard check-config`: loads the settings exactly as a start of the
//! relay does (file, `SWITCHBOARD__…` environment, flags), checks what a start
//! checks without binding a port, and prints the effective settings with
//! every secret masked. Exit 0, or 2 with the key named on stderr.
//!
//! With `--agent FILE`, checks a host agent's settings file instead (what
//! `switchboard host --config FILE` loads) and prints it, secrets masked.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use switchboard::config::ConfigError;
use switchboard::tunnel::agent::host_config::HostConfig;
use switchboard::{logging, node};

/// How the effective settings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// TOML, the settings file's own format (loadable with `--config`).
    Toml,
    /// JSON (unset optional keys are `null`).
    Json,
}

/// Arguments of `switchboard check-config`: the relay's own options, then
/// what to print.
#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    start: super::StartArgs,
    /// Check a host agent's settings file (`switchboard host --config`) instead.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["config", "proxystore_config", "host", "port", "log_level", "log_dir"])]
    agent: Option<PathBuf>,
    /// Output format of the effective settings.
    #[arg(long, value_enum, default_value_t = Format::Toml)]
    format: Format,
}

/// Why the check failed, each with its exit code.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// The settings would not start: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The settings are fine but could not be printed: exit 1.
    #[error("cannot print the settings: {0}")]
    Print(String),
}

/// Runs the check; prints the settings on stdout, or the error on stderr.
pub fn run(args: CheckConfigArgs) -> ExitCode {
    let result = match &args.agent {
        Some(path) => check_agent(path, args.format),
        None => check_relay(&args),
    };
    match result {
        Ok(text) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard check-config: cannot write the settings: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("switchboard check-config: {error}");
            match error {
                CheckError::Config(_) => ExitCode::from(2),
                CheckError::Print(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// The relay's settings, loaded and checked as a start does.
fn check_relay(args: &CheckConfigArgs) -> Result<String, CheckError> {
    let (mut settings, warnings) = args.start.load()?;
    for warning in &warnings {
        eprintln!("switchboard check-config: warning: {warning}");
    }
    node::check(&settings)?;
    if let Some(dir) = &settings.log.dir {
        logging::check_log_dir(dir).map_err(|e| ConfigError::Invalid {
            key: "log.dir".into(),
            message: format!("{e} (ProxyStore: logging.log_dir; --log-dir)"),
        })?;
    }
    // The filter a start would use: `--log-level`, then RUST_LOG, then the file.
    settings.log.level =
        logging::effective_filter(args.start.log_level().as_deref(), &settings.log.level);
    render(&settings, args.format)
}

/// A host agent's file, loaded and checked as `switchboard host` does.
fn check_agent(path: &std::path::Path, format: Format) -> Result<String, CheckError> {
    let file = HostConfig::load(path)?;
    file.clone().into_agents_with_sources()?;
    render(&file, format)
}

fn render<T: Serialize>(value: &T, format: Format) -> Result<String, CheckError> {
    let print = |e: String| CheckError::Print(e);
    match format {
        Format::Toml => toml::to_string(value).map_err(|e| print(e.to_string())),
        Format::Json => serde_json::to_string_pretty(value)
            .map(|text| text + "\n")
            .map_err(|e| print(e.to_string())),
    }
}
