//! Replays every input under `fuzz/regressions/<target>/` (each input a fuzzer ever found failing, plus seeds at the edges) through the same body the fuzz target runs, on stable Rust, with the fuzzers' allocation limits; and checks that the targets, their binaries in `fuzz/src/bin/` and their input directories agree.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use switchboard::fuzzing::TARGETS;

#[path = "../fuzz/src/alloc_limit.rs"]
mod alloc_limit;

#[global_allocator]
static ALLOCATOR: alloc_limit::Limited = alloc_limit::Limited;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The names of the entries of `dir` (files without `.rs` for binaries).
fn names(dir: &Path, strip: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .map(|name| name.to_string_lossy().trim_end_matches(strip).to_owned())
        .collect()
}

#[test]
fn every_regression_input_passes_its_target() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, body) in TARGETS {
        let dir = fuzz_dir().join("regressions").join(name);
        let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} holds no input", dir.display());
        for input in inputs {
            let data = fs::read(&input).expect("readable input");
            alloc_limit::start();
            let outcome = catch_unwind(AssertUnwindSafe(|| body(&data)));
            let allocated = alloc_limit::stop();
            match outcome {
                Ok(()) => replayed += 1,
                Err(_) => failures.push(input.display().to_string()),
            }
            assert!(allocated <= alloc_limit::MAX_PER_INPUT);
        }
    }
    assert!(failures.is_empty(), "failing inputs: {failures:#?}");
    assert!(
        replayed >= TARGETS.len() * 3,
        "only {replayed} inputs replayed"
    );
}

#[test]
fn targets_binaries_and_input_directories_agree() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        targets.len(),
        TARGETS.len(),
        "a target name is listed twice"
    );
    let bins = names(&fuzz_dir().join("src/bin"), ".rs");
    assert_eq!(
        bins, targets,
        "fuzz/src/bin/*.rs vs switchboard::fuzzing::TARGETS"
    );
    let dirs = names(&fuzz_dir().join("regressions"), "");
    assert_eq!(
        dirs, targets,
        "fuzz/regressions/* vs switchboard::fuzzing::TARGETS"
    );
    for name in &targets {
        let source = fs::read_to_string(fuzz_dir().join(format!("src/bin/{name}.rs")))
            .expect("target source");
        assert!(
            source.contains(&format!("target!({name})")),
            "fuzz/src/bin/{name}.rs does not run switchboard::fuzzing::{name}"
        );
        assert!(switchboard::fuzzing::target(name).is_some());
    }
}

#[test]
fn the_allocation_limit_refuses_a_runaway_allocation() {
    alloc_limit::start();
    let refused = std::alloc::Layout::from_size_align(alloc_limit::MAX_ALLOCATION + 1, 8)
        .map(|layout| unsafe { std::alloc::alloc(layout) })
        .expect("layout");
    let counted = alloc_limit::stop();
    assert!(refused.is_null(), "an allocation above the limit succeeded");
    assert!(counted > alloc_limit::MAX_ALLOCATION);
}
