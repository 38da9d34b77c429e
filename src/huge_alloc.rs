//! The process's allocator: the system's, except that blocks of [`LARGE`] bytes or more start
//! on a 2 MiB boundary, are rounded up to whole 2 MiB pages and are advised to use
//! transparent huge pages.
//!
//! Why: `show` of a 5 MB runbook touches a few MB of fresh memory besides the file itself,
//! most of it in one block it does not allocate itself (pulldown-cmark's node tree, sized
//! from the text's length), and each 4 KiB page touched the first time is a page fault:
//! about a third of the run's faults, with the kernel's time for them. In a huge page the
//! first touch of 2 MiB is one fault. Aligning the block matters: advice covers only whole
//! 2 MiB pages inside it, and a block starting anywhere would leave on average 1 MiB before
//! its first boundary in small pages; rounding up lets a block of 0.5–2 MiB (the parser's
//! block list and outline for a large file) be one huge page instead of hundreds of small
//! ones. Where huge pages are off, or the kernel has none at hand, the advice does nothing
//! and the alignment and rounding cost only address space.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a transparent huge page on x86-64 (and of a PMD on most 64-bit targets).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Blocks from this size on are aligned, rounded up to whole huge pages and advised. A block
/// of 512 KiB touched page by page is 128 faults (each ≈ 3.5 µs on the VMs we measured); a
/// huge page is one fault and 2 MiB to clear (≈ 0.1 ms). The price is memory: a touched
/// block of 512 KiB occupies a whole 2 MiB page.
pub const LARGE: usize = HUGE_PAGE / 4;

pub struct HugeAdvising;

/// The layout a block of `layout` is allocated with: 2 MiB-aligned and a whole number of
/// huge pages when it is large.
fn huge(layout: Layout) -> Option<Layout> {
    if layout.size() < LARGE {
        return None;
    }
    let size = layout.size().checked_next_multiple_of(HUGE_PAGE)?;
    Layout::from_size_align(size, layout.align().max(HUGE_PAGE)).ok()
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
        if huge(layout).is_none() {
            // SAFETY: the caller's layout, under the caller's guarantees; `System` zeroes it.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Advised before it is cleared: clearing is the first touch of every page.
        // SAFETY: as in `alloc`; the block holds at least `layout.size()` bytes.
        unsafe {
            let ptr = self.alloc(layout);
            if !ptr.is_null() {
                std::ptr::write_bytes(ptr, 0, layout.size());
            }
            ptr
        }
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
            let (old_block, new_block) = (huge(layout), huge(new_layout));
            if old_block.is_none() && new_block.is_none() {
                return System.realloc(ptr, layout, new_size);
            }
            // Still within the same whole huge pages: nothing to move.
            if old_block.is_some() && old_block == new_block {
                return ptr;
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
            // Growing within the whole huge pages a block was rounded up to keeps it in place.
            let first = Layout::from_size_align(LARGE, 8).unwrap();
            let p = a.alloc(first);
            *p = 42;
            let q = a.realloc(p, first, HUGE_PAGE - 1);
            assert_eq!(q, p);
            assert_eq!(*q, 42);
            *q.add(HUGE_PAGE - 2) = 1;
            let r = a.realloc(
                q,
                Layout::from_size_align(HUGE_PAGE - 1, 8).unwrap(),
                HUGE_PAGE + 1,
            );
            assert_ne!(r, q);
            assert_eq!((*r, *r.add(HUGE_PAGE - 2)), (42, 1));
            a.dealloc(r, Layout::from_size_align(HUGE_PAGE + 1, 8).unwrap());
            let z = a.alloc_zeroed(Layout::from_size_align(LARGE, 8).unwrap());
            assert!((0..LARGE).step_by(4096).all(|i| *z.add(i) == 0));
            a.dealloc(z, Layout::from_size_align(LARGE, 8).unwrap());
        }
    }
}
