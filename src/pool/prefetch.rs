//! A hint to the CPU to start loading a value into its cache, for code that knows what it will touch a
//! little before it touches it (see `lookahead.rs`).
//!
//! One of the crate's two places with `unsafe` (the other is `huge_pages.rs`, for `madvise` and
//! `malloc_trim`): `_mm_prefetch` is an intrinsic, unsafe to call only because it is declared with a
//! target feature (SSE) that every x86_64 CPU has. A prefetch reads nothing into the program and never
//! faults, and here it is only ever given the address of a live reference.

/// Starts loading the cache line that holds `value`. Does nothing on other architectures.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch of any address is harmless.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
