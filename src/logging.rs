//! Logging set-up: env_logger with a filter chosen by precedence.
//!
//! `--log-level` (CLI) wins, then `RUST_LOG`, then `log.level` from settings.

/// Initialises env_logger once; later calls are ignored.
pub fn init(cli_level: Option<&str>, settings_level: &str) {
    let filter = cli_level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| settings_level.to_owned());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_millis()
        .try_init();
}

/// A log filter for programs embedding the peer library: their own warnings,
/// but only errors from the WebRTC stack, which warns about normal events
/// (a connectivity check arriving before its candidates, a DTLS server name).
pub const WEBRTC_QUIET: &str =
    "warn,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error";
