//! Fuzz target bodies: one function `fn(&[u8])` per decoder that reads bytes
//! from the network or from disk. Not part of the stable API (hidden from the
//! docs); it is public so that two callers share exactly one body:
//!
//! - the coverage-guided fuzzers in `fuzz/` (cargo-fuzz / libFuzzer; see
//!   `fuzz/README.md` and `scripts/fuzz`), one binary per entry of [`TARGETS`];
//! - `tests/fuzz_regressions.rs`, which replays every file under
//!   `fuzz/regressions/<target>/` through the same function on stable Rust.
//!
//! A body returns normally for every input, valid or not; it panics only when
//! the code under test breaks a rule (a decoder panics, or a checked property
//! such as `decode(encode(x)) == x` fails). That panic is the fuzzer's
//! finding.
//!
//! # Adding a target
//!
//! Write `pub fn my_target(data: &[u8])` (here or next to the decoder),
//! add one line to [`TARGETS`], one `[[bin]]` block to `fuzz/Cargo.toml`,
//! and a few seed inputs under `fuzz/regressions/my_target/`.
//! `tests/fuzz_regressions.rs` fails, naming what is missing, until all four
//! agree.

mod chunk;
mod cluster;
mod config;
mod input;
mod peer;
mod relay;
mod tunnel;
mod ws;

pub use chunk::{chunk_parse, chunk_reassembler};
pub use cluster::cluster_envelope;
pub use config::{host_config, relay_config};
pub use input::Input;
pub use peer::peer_signal;
pub use relay::{relay_decode, relay_encode, uuid_parse};
pub use tunnel::{tunnel_datagrams, tunnel_frame, tunnel_stream};
pub use ws::ws_inbound;

/// A fuzz target's body: returns for every input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every fuzz target, by the name of its binary in `fuzz/Cargo.toml` and of
/// its directory under `fuzz/regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("relay_decode", relay_decode),
    ("relay_encode", relay_encode),
    ("uuid_parse", uuid_parse),
    ("chunk_parse", chunk_parse),
    ("chunk_reassembler", chunk_reassembler),
    ("tunnel_frame", tunnel_frame),
    ("tunnel_stream", tunnel_stream),
    ("tunnel_datagrams", tunnel_datagrams),
    ("relay_config", relay_config),
    ("host_config", host_config),
    ("peer_signal", peer_signal),
    ("ws_inbound", ws_inbound),
    ("cluster_envelope", cluster_envelope),
];

/// The body of the target called `name`, if there is one.
pub fn target(name: &str) -> Option<Target> {
    TARGETS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, body)| *body)
}
