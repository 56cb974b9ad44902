//! The extension's Rust heap: the system allocator, with transparent huge pages requested
//! for large blocks.
//!
//! Gathered K-means rows, serialized partial states, model weights and their half-precision
//! copies are blocks of tens to hundreds of megabytes that are written once, right after
//! they are allocated. With 4 KiB pages that first write costs one page fault per 4 KiB
//! (measured here: about a sixth of a parallel `kmeans_fit` on 1M x 16 rows). For blocks
//! of at least [`HUGE_MIN`] bytes this allocator asks the kernel for 2 MiB pages over the
//! block (`madvise(MADV_HUGEPAGE)`, which takes effect where
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`, and is a no-op
//! otherwise). Only the whole 2 MiB pages inside the block are advised, so no memory
//! outside it is touched; the advice is a hint and its failure is ignored. Everything else
//! is `std::alloc::System` unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes get the huge-page advice.
pub const HUGE_MIN: usize = 4 << 20;

const HUGE_PAGE: usize = 2 << 20;
const MADV_HUGEPAGE: i32 = 14;

unsafe extern "C" {
    fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
}

/// The system allocator plus huge-page advice for large blocks.
pub struct HugePageAlloc;

/// Advises huge pages for the whole 2 MiB pages of a fresh block of `size` bytes at `ptr`
/// (nothing for blocks under [`HUGE_MIN`]). Also used for large `palloc`ed blocks.
#[inline]
pub fn advise(ptr: *mut u8, size: usize) {
    if size < HUGE_MIN || ptr.is_null() || !cfg!(target_os = "linux") {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + size) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside the block just allocated; MADV_HUGEPAGE changes no
        // contents and only hints how future faults in the range are served.
        unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
    }
}

// SAFETY: every call is forwarded to `System`; `advise` only hints at page sizes.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Zeroed memory of this size comes fresh from mmap: advise it, then it is faulted
        // in on first use like any other.
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size > layout.size() {
            advise(p, new_size);
        }
        p
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn large_blocks_work_and_small_ones_are_untouched() {
        let mut v: Vec<u64> = Vec::with_capacity(1);
        for i in 0..(3 << 20) {
            v.push(i); // grows through realloc past HUGE_MIN
        }
        assert_eq!(v.iter().sum::<u64>(), (3u64 << 20) * ((3u64 << 20) - 1) / 2);
        let z = vec![0u8; super::HUGE_MIN + 12345];
        assert!(z.iter().all(|&b| b == 0));
        let small = vec![7u8; 100];
        assert_eq!(small.len(), 100);
    }
}
