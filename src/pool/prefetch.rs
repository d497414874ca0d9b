//! A hint to the CPU to start loading a value into its cache, for code that knows what it will touch a
//! little before it touches it (see `lookahead.rs`).
//!
//! One of the crate's two places with `unsafe` (the other is `huge_pages.rs`, for `madvise` and
//! `malloc_trim`): `_mm_prefetch` is an intrinsic, unsafe to call only because it is declared with a
//! target feature (SSE) that every x86_64 CPU has. A prefetch reads nothing into the program and never
//! faults, and here it is only ever given the address of a live reference.

/// Starts loading the cache lines of `value`'s first and last bytes: all of it, for a value of up to 64
/// bytes (which straddles two lines at most), as every value prefetched here is. Does nothing on other
/// architectures.
///
/// Both lines matter: a large buffer from the allocator starts 16 bytes into a page, so nearly every
/// 64-byte record of the pool straddles two lines, and a prefetch of its first line alone leaves the
/// read of its last bytes (the keep-alive deadline) to wait on memory after all.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = std::ptr::from_ref(value).cast::<u8>();
        // The last byte's line; the same line as the first for a value that does not straddle.
        let last = first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1));
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch of any address is harmless.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            if (first as usize) >> 6 != (last as usize) >> 6 {
                _mm_prefetch::<_MM_HINT_T0>(last.cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
