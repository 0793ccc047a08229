//! The heap the door loop allocates from (`fewshot-door` needs `alloc`): a
//! static region handed to embedded-alloc's first-fit allocator, with the
//! bytes in use and their peak counted.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// Bytes of the heap region.
pub const HEAP_BYTES: usize = 96 * 1024;

/// embedded-alloc's heap, counting.
pub struct Counted {
    heap: LlffHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

#[global_allocator]
static HEAP: Counted = Counted {
    heap: LlffHeap::empty(),
    used: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

/// Hands the static region to the allocator; call once, first thing.
pub fn init() {
    static mut REGION: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    // SAFETY: called once at boot, before any allocation; the region is
    // used by nothing else.
    unsafe {
        HEAP.heap
            .init(core::ptr::addr_of_mut!(REGION) as usize, HEAP_BYTES)
    }
}

/// The most bytes allocated at once so far.
pub fn peak() -> usize {
    HEAP.peak.load(Ordering::Relaxed)
}

// SAFETY: every call goes to LlffHeap, a correct allocator; the counters
// only observe.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let used = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(used, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.heap.dealloc(ptr, layout) };
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
