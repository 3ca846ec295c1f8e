//! Shared by every fuzz target binary in `src/bin/`: the allocation limit
//! (a global allocator, see [`alloc_limit`]) and the [`target!`] macro that
//! turns a body of `switchboard::fuzzing` into a libFuzzer entry point.

#[path = "alloc_limit.rs"]
pub mod alloc_limit;

#[global_allocator]
static ALLOCATOR: alloc_limit::Limited = alloc_limit::Limited;

#[doc(hidden)]
pub use libfuzzer_sys;

/// `target!(name)`: the libFuzzer entry point that runs
/// `switchboard::fuzzing::name` on each input.
#[macro_export]
macro_rules! target {
    ($name:ident) => {
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            $crate::alloc_limit::start();
            switchboard::fuzzing::$name(data);
            $crate::alloc_limit::stop();
        });
    };
}
