//! Logging set-up: env_logger with a filter chosen by precedence.
//!
//! `--log-level` (CLI) wins, then `RUST_LOG`, then `log.level` from settings.
//! With `log.dir` ([`init_with_dir`]), every line also goes to
//! `<dir>/server.log` (ProxyStore's relay's file name), rotated weekly by
//! the `file-rotate` crate: one env_logger writes each formatted line to
//! stderr and to the file, so both have the same filter and format.
//!
//! The WebRTC stack reports some ordinary field conditions as an error line
//! per packet exchange, with no hint of what they mean: a TURN server that
//! refuses to relay to a peer's address repeats `TURN permission request
//! failed: … 403` for every candidate and refresh. [`Explaining`] turns each
//! such kind into one warning that says what it means, the first time it
//! happens, and logs the repeats at debug level.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use file_rotate::{compression::Compression, suffix::AppendCount, ContentLimit, FileRotate};

use log::{Level, Log, Metadata, Record};

/// Initialises env_logger once; later calls are ignored.
pub fn init(cli_level: Option<&str>, settings_level: &str) {
    install(builder(cli_level, settings_level));
}

/// Like [`init`], and with `dir` also writes every line to
/// `<dir>/`[`LOG_FILE_NAME`](crate::defaults::LOG_FILE_NAME), rotated weekly
/// (at the first line of a new ISO week, local time; ProxyStore's relay
/// rotates at midnight between Sunday and Monday too), keeping
/// [`LOG_FILES_KEPT`](crate::defaults::LOG_FILES_KEPT) old files.
///
/// Errors: [`LogFileError`] when the directory cannot be made or the file
/// cannot be opened for appending.
pub fn init_with_dir(
    cli_level: Option<&str>,
    settings_level: &str,
    dir: Option<&Path>,
) -> Result<(), LogFileError> {
    let mut builder = builder(cli_level, settings_level);
    if let Some(dir) = dir {
        let file = log_file(dir)?;
        builder.target(env_logger::Target::Pipe(Box::new(Tee { file })));
    }
    install(builder);
    Ok(())
}

/// The log file could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the log file {path}: {source}")]
pub struct LogFileError {
    /// The file (or directory) that failed.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The filter a start uses: `--log-level`, else a non-empty `RUST_LOG`,
/// else `log.level` (what `switchboard check-config` prints as `log.level`).
pub fn effective_filter(cli_level: Option<&str>, settings_level: &str) -> String {
    cli_level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| settings_level.to_owned())
}

fn builder(cli_level: Option<&str>, settings_level: &str) -> env_logger::Builder {
    let filter = effective_filter(cli_level, settings_level);
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter).format_timestamp_millis();
    builder
}

/// Checks that a start could write `dir`'s log file, without writing it:
/// an existing `server.log` must open for appending; otherwise the directory
/// (or, when it does not exist yet, its nearest existing ancestor, which a
/// start would create it in) must take a new file, probed with an unnamed
/// `O_TMPFILE` that vanishes on close.
///
/// Errors: [`LogFileError`] naming the path that failed.
pub fn check_log_dir(dir: &Path) -> Result<(), LogFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogFileError { path, source }
    };
    let file = dir.join(crate::defaults::LOG_FILE_NAME);
    if file.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .map(drop)
            .map_err(failed(&file));
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(existing)
        .map(drop)
        .map_err(failed(existing))
}

fn install(mut builder: env_logger::Builder) {
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Explaining::new(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Makes `dir` and opens the rotating file in it (the crate panics on a
/// directory it cannot make, so that is checked here first).
fn log_file(dir: &Path) -> Result<FileRotate<AppendCount>, LogFileError> {
    let path = dir.join(crate::defaults::LOG_FILE_NAME);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogFileError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(failed(&path))?;
    Ok(FileRotate::new(
        &path,
        AppendCount::new(crate::defaults::LOG_FILES_KEPT),
        ContentLimit::Time(file_rotate::TimeFrequency::Weekly),
        Compression::None,
        None,
    ))
}

/// Writes each formatted line to stderr and to the log file; a failing
/// file never stops the stderr copy.
struct Tee {
    file: FileRotate<AppendCount>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        let _ = self.file.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        self.file.flush()
    }
}

/// A log filter for programs embedding the peer library: their own warnings,
/// but only errors from the WebRTC stack, which warns about normal events
/// (a connectivity check arriving before its candidates, a DTLS server name).
pub const WEBRTC_QUIET: &str =
    "warn,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error";

/// Target of the warnings [`Explaining`] writes in place of the stack's lines.
pub const EXPLAINED_TARGET: &str = "switchboard::ice";

/// A line of the WebRTC stack that [`Explaining`] replaces: the target it
/// comes from, how its message starts, and what to say instead.
struct Known {
    kind: &'static str,
    target: &'static str,
    starts: &'static str,
    meaning: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        kind: "turn-permission",
        target: "webrtc::peer_connection::transport::turn_relayer",
        starts: "TURN permission request failed",
        meaning: "the TURN server refused to relay to one of the peer's addresses \
                  (CreatePermission denied, usually 403 Forbidden: servers commonly deny \
                  private, loopback and other unroutable peer addresses, e.g. coturn's \
                  denied-peer-ip). Relayed pairs towards that address cannot work; ICE goes on \
                  with the other pairs. Repeats are logged at debug level.",
    },
    Known {
        kind: "turn-allocation",
        target: "webrtc::peer_connection::transport::turn_relayer",
        starts: "TURN allocation failed",
        meaning: "the TURN server gave no relay address (wrong or expired credentials: \
                  401; quota reached: 486; or unreachable), so this peer has no relay \
                  candidate and cannot be reached through TURN. Repeats are logged at debug \
                  level.",
    },
];

/// Wraps env_logger, replacing the stack's repeated, unexplained lines (see
/// the module documentation) with one explained warning each.
pub struct Explaining {
    inner: env_logger::Logger,
    seen: Mutex<HashSet<&'static str>>,
}

impl Explaining {
    /// Explains through `inner`.
    pub fn new(inner: env_logger::Logger) -> Self {
        Explaining {
            inner,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn known(record: &Record<'_>) -> Option<&'static Known> {
        if record.level() > Level::Warn {
            return None;
        }
        let target = record.target();
        if !KNOWN.iter().any(|k| target.starts_with(k.target)) {
            return None;
        }
        let message = record.args().to_string();
        KNOWN
            .iter()
            .find(|k| target.starts_with(k.target) && message.starts_with(k.starts))
    }
}

impl Log for Explaining {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let Some(known) = Explaining::known(record) else {
            return self.inner.log(record);
        };
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(known.kind);
        let (level, text) = if first {
            (
                Level::Warn,
                format!("{} — {}", record.args(), known.meaning),
            )
        } else {
            (Level::Debug, record.args().to_string())
        };
        let metadata = Metadata::builder()
            .level(level)
            .target(EXPLAINED_TARGET)
            .build();
        if self.inner.enabled(&metadata) {
            self.inner.log(
                &Record::builder()
                    .metadata(metadata)
                    .args(format_args!("{text}"))
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(filter: &str) -> Explaining {
        Explaining::new(env_logger::Builder::new().parse_filters(filter).build())
    }

    fn record<'a>(target: &'a str, level: Level, args: std::fmt::Arguments<'a>) -> Record<'a> {
        Record::builder()
            .target(target)
            .level(level)
            .args(args)
            .build()
    }

    #[test]
    fn a_known_line_is_explained_once_then_demoted() {
        let log = logger(WEBRTC_QUIET);
        let target = "webrtc::peer_connection::transport::turn_relayer";
        for _ in 0..3 {
            log.log(&record(
                target,
                Level::Error,
                format_args!("TURN permission request failed: 403 Forbidden IP"),
            ));
        }
        assert_eq!(
            log.seen.lock().unwrap().iter().copied().collect::<Vec<_>>(),
            vec!["turn-permission"]
        );
        assert!(Explaining::known(&record(
            target,
            Level::Error,
            format_args!("TURN allocation failed from a to b: 401")
        ))
        .is_some_and(|k| k.kind == "turn-allocation"));
        // Other lines of the same target, and lines of other targets, pass through.
        assert!(Explaining::known(&record(
            target,
            Level::Error,
            format_args!("TURN transaction timed out")
        ))
        .is_none());
        assert!(Explaining::known(&record(
            "switchboard::server",
            Level::Error,
            format_args!("TURN permission request failed")
        ))
        .is_none());
    }
}
