//! The process's allocator: the system's, except that blocks of [`LARGE`] bytes or more start
//! on a 2 MiB boundary and are advised to use transparent huge pages.
//!
//! Why: `show` of a 5 MB runbook touches a few MB of fresh memory besides the file itself,
//! most of it in one block it does not allocate itself (pulldown-cmark's node tree, sized
//! from the text's length), and each 4 KiB page touched the first time is a page fault:
//! about a third of the run's faults, with the kernel's time for them. In a huge page the
//! first touch of 2 MiB is one fault. Aligning the block matters: advice covers only whole
//! 2 MiB pages inside it, and a block starting anywhere would leave on average 1 MiB before
//! its first boundary in small pages. Where huge pages are off, or the kernel has none at
//! hand, the advice does nothing and the alignment costs only address space.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a transparent huge page on x86-64 (and of a PMD on most 64-bit targets).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Blocks from this size on are aligned and advised: room for at least two huge pages, so
/// a block that is only partly used still gains.
pub const LARGE: usize = 2 * HUGE_PAGE;

pub struct HugeAdvising;

/// The layout a block of `layout` is allocated with: 2 MiB-aligned when it is large.
fn huge(layout: Layout) -> Option<Layout> {
    if layout.size() < LARGE {
        return None;
    }
    Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok()
}

/// Asks for huge pages under the whole 2 MiB pages of the `len` bytes at `ptr`, a block the
/// caller holds (a fresh allocation, or a buffer about to be read into).
pub(crate) fn advise(ptr: *mut u8, len: usize) {
    let start = ptr as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = (start + len) / HUGE_PAGE * HUGE_PAGE;
    if last > first {
        // SAFETY: `first..last` lies inside the block of `len` bytes at `ptr` (callers pass
        // a block they hold); MADV_HUGEPAGE changes neither the memory's contents nor whether
        // it is mapped, only the size of the pages that will back it when first touched. An
        // error (old kernel, huge pages off) leaves ordinary memory.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

// SAFETY: every block comes from `System` with the layout `huge` gives for the caller's
// layout, and goes back to it with that same layout (a pure function of the caller's
// layout, which `GlobalAlloc` hands back unchanged); the alignment it returns is at least
// the one asked for.
unsafe impl GlobalAlloc for HugeAdvising {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match huge(layout) {
            Some(aligned) => {
                // SAFETY: `aligned` has a non-zero size (at least `LARGE`).
                let ptr = unsafe { System.alloc(aligned) };
                if !ptr.is_null() {
                    advise(ptr, aligned.size());
                }
                ptr
            }
            // SAFETY: the caller's layout, under the caller's guarantees.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`; `System` zeroes the block.
        unsafe { System.alloc_zeroed(huge(layout).unwrap_or(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with exactly this layout (see above).
        unsafe { System.dealloc(ptr, huge(layout).unwrap_or(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (both branches): the caller guarantees `ptr` is a block of `layout` from this
        // allocator and that `new_size`, rounded to `layout.align()`, does not overflow.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            if huge(layout).is_none() && huge(new_layout).is_none() {
                return System.realloc(ptr, layout, new_size);
            }
            // Into, out of or within the large blocks: a new block, the contents copied.
            // (`System.realloc` could move an aligned block to an unaligned address.)
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks are aligned; contents survive growing into, within and out of the
    /// large blocks; small blocks are the system's.
    #[test]
    fn large_blocks_are_aligned_and_keep_their_contents() {
        let a = HugeAdvising;
        let small = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: layouts with non-zero sizes; every block is written within its size and
        // freed once, with the layout it has then.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let mut layout = small;
            let mut p = p;
            for size in [LARGE + 3, 3 * LARGE, LARGE, 5000, LARGE * 2] {
                p = a.realloc(p, layout, size);
                assert!(!p.is_null());
                layout = Layout::from_size_align(size, 8).unwrap();
                if size >= LARGE {
                    assert_eq!(p as usize % HUGE_PAGE, 0, "{size}");
                }
                for i in 0..1000 {
                    assert_eq!(*p.add(i), (i % 251) as u8, "{size}");
                }
                *p.add(size - 1) = 7;
            }
            a.dealloc(p, layout);
            let z = a.alloc_zeroed(Layout::from_size_align(LARGE, 8).unwrap());
            assert!((0..LARGE).step_by(4096).all(|i| *z.add(i) == 0));
            a.dealloc(z, Layout::from_size_align(LARGE, 8).unwrap());
        }
    }
}
