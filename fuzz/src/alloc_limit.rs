//! A global allocator that refuses what no decoder should need, so an
//! unbounded allocation is a finding even without a sanitizer (libFuzzer's
//! `-malloc_limit_mb` needs one; `-rss_limit_mb` misses memory allocated but
//! never touched). A refused allocation makes Rust report
//! `memory allocation of N bytes failed` and abort: libFuzzer saves the input.
//!
//! Shared by the fuzz binaries (fuzz/src/lib.rs) and the stable replay test
//! (tests/fuzz_regressions.rs), which include this file by path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Largest single allocation allowed while an input runs, in bytes.
pub const MAX_ALLOCATION: usize = 64 << 20;
/// Most bytes one input may allocate in all (freed or not), in bytes: far
/// above what any decoder needs for the inputs libFuzzer makes (4 KiB by
/// default), low enough to catch runaway or quadratic growth.
pub const MAX_PER_INPUT: usize = 512 << 20;

thread_local! {
    // Const-initialised and without a destructor: usable inside the allocator.
    static COUNTED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Starts counting this thread's allocations for one input.
pub fn start() {
    COUNTED.with(|c| c.set(Some(0)));
}

/// Stops counting; returns the bytes allocated since [`start`].
pub fn stop() -> usize {
    COUNTED.with(|c| c.take()).unwrap_or(0)
}

/// Whether an allocation of `size` more bytes is within the limits (always
/// outside `start`..`stop`, e.g. libFuzzer's own bookkeeping).
fn allowed(size: usize) -> bool {
    COUNTED.with(|c| match c.get() {
        None => true,
        Some(so_far) => {
            let total = so_far.saturating_add(size);
            c.set(Some(total));
            size <= MAX_ALLOCATION && total <= MAX_PER_INPUT
        }
    })
}

/// The system allocator with the limits above.
pub struct Limited;

// SAFETY: every call is forwarded unchanged to `System`, or refused with a
// null pointer, as `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let growth = new_size.saturating_sub(layout.size());
        if !allowed(growth) || new_size > MAX_ALLOCATION && growth > 0 {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}
