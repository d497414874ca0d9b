//! Asking the kernel to back the pool's large arrays (records, free list, id index) with 2 MB pages.
//!
//! In a pool of millions of keys nearly every request touches a random place in those arrays. With
//! 4 KB pages such an access misses the TLB as well as the caches, and the CPU walks the page tables
//! before the load can even start: inside a virtual machine that walk is itself a chain of misses. One
//! 2 MB page covers 512 times the memory per TLB entry. On the VM the benchmarks ran on, a random load
//! from a 1 GiB buffer took 294 ns with 4 KB pages and 197 ns with 2 MB ones, and independent loads,
//! overlapped, one every 61 ns against 33 (see BENCHMARKS.md).
//!
//! Linux's transparent huge pages, in their usual `madvise` mode, only back memory that asked for them
//! with `madvise(MADV_HUGEPAGE)`, and only pages first touched after asking. So the arrays grow here:
//! [`reserve`] grows a vector as `Vec::reserve` does, into a new buffer advised before anything is
//! written to it. Arrays under [`ADVISE_FROM_BYTES`] are left alone: they hold no 2 MB
//! page anyway, or too few to matter. Where huge pages are off, or not Linux, it all costs nothing and
//! changes nothing: the advice is only advice.
//!
//! Growing by moving leaves the old buffer to free, and glibc may keep freed memory resident; each growth
//! therefore ends by handing it back ([`release_freed_memory`]).

/// Buffers smaller than this are not advised.
const ADVISE_FROM_BYTES: usize = 4 << 20;

/// `Vec::reserve`, for a buffer that may be large: once it reaches [`ADVISE_FROM_BYTES`], it grows
/// into a new buffer, advised before anything is written to it, and the elements are moved over.
///
/// Moving them costs a copy (amortized O(1) per element, as a vector's growth is anyway) where
/// `realloc` would have remapped the pages instead; but a remapped buffer mostly lands at an address
/// where its 2 MB pages no longer line up, and the kernel then splits them back into 4 KB ones.
#[inline]
pub fn reserve<T>(vec: &mut Vec<T>, additional: usize) {
    // Called before every push: the check is inline, the growth (rare) is not.
    if vec.capacity() - vec.len() < additional {
        grow(vec, additional);
    }
}

#[inline(never)]
fn grow<T>(vec: &mut Vec<T>, additional: usize) {
    let needed = vec.len().saturating_add(additional);
    let capacity = needed.max(vec.capacity().saturating_mul(2));
    if capacity.saturating_mul(std::mem::size_of::<T>()) < ADVISE_FROM_BYTES {
        vec.reserve(additional);
        return;
    }
    let mut grown = Vec::with_capacity(capacity);
    advise(&grown);
    grown.append(vec);
    let old = std::mem::replace(vec, grown);
    // A vector that had no buffer frees nothing (the id index builds each new table from an empty one).
    if old.capacity() > 0 {
        drop(old);
        release_freed_memory();
    }
}

/// Gives the memory of buffers just freed back to the kernel. glibc raises its threshold for serving
/// allocations from `mmap` each time an mmapped buffer is freed (up to 32 MB), so the old buffers of a
/// growing array end up inside its heap, where freeing them keeps them resident: at 1,000,000 keys
/// that was 10 MB, 10 bytes a key. Called only when an array has grown (the id index, which rebuilds
/// its table, calls it itself once the old table is gone), so the trim's walk of the allocator's free
/// lists costs nothing per request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory of the allocator's own to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}

/// Advises the whole buffer of `vec`, used and spare.
fn advise<T>(vec: &Vec<T>) {
    let bytes = vec.capacity().saturating_mul(std::mem::size_of::<T>());
    advise_range(vec.as_ptr().cast(), bytes);
}

#[cfg(target_os = "linux")]
fn advise_range(start: *const u8, bytes: usize) {
    const PAGE: usize = 4096;
    // madvise wants a page-aligned start; only whole pages inside the buffer are advised, so the
    // advice never reaches memory that belongs to anything else.
    let first = (start as usize).next_multiple_of(PAGE);
    let end = (start as usize + bytes) / PAGE * PAGE;
    if end <= first {
        return;
    }
    // SAFETY: the range lies inside one live allocation of ours. MADV_HUGEPAGE changes no contents
    // and no permissions, only how the kernel may back the pages. A failure (kernel without
    // transparent huge pages) leaves things as they were, so it is ignored.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: *const u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_grows_like_vec_and_keeps_the_contents() {
        let mut small: Vec<u64> = (0..1000).collect();
        reserve(&mut small, 10);
        assert!(small.capacity() >= 1010);
        // Large enough to be advised: 8 MB.
        let mut large: Vec<u64> = (0..1_000_000).collect();
        reserve(&mut large, 1);
        assert!(large.capacity() >= 1_000_001);
        assert!(large.iter().copied().eq(0..1_000_000));
        large.extend(0..1000);
        assert_eq!(large.len(), 1_001_000);
    }

    /// The `VmFlags` line of the mapping that holds `address`, from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn vm_flags_at(address: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(range, _)| range.contains('-')) {
                let (start, end) = range.split_once('-')?;
                let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
                inside = (start..end).contains(&address);
            } else if inside && line.starts_with("VmFlags:") {
                return Some(line.to_owned());
            }
        }
        None
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_large_buffer_is_advised_to_use_huge_pages() {
        // Without transparent huge pages in the kernel the advice is refused, and there is nothing to see.
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            return;
        }
        let mut large: Vec<u8> = Vec::new();
        reserve(&mut large, 16 << 20);
        let middle = large.as_ptr() as usize + (8 << 20);
        let flags = vm_flags_at(middle).expect("the buffer is mapped");
        assert!(flags.split_whitespace().any(|flag| flag == "hg"), "{flags}");
    }
}
