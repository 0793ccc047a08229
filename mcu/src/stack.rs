//! RAM use: the statics (`.data`, `.bss`) from the linker's symbols, and the
//! stack's peak found by painting the free RAM at boot and looking for the
//! lowest byte overwritten at the end.

const PAINT: u32 = 0xA5A5_A5A5;

extern "C" {
    static _stack_start: u32;
    static __sheap: u32;
    static __sdata: u32;
}

fn bounds() -> (usize, usize) {
    (
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Paints the RAM between the statics and the current stack pointer (less a
/// margin for this function's own frame).
pub fn paint() {
    let (low, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize - 256;
    let mut at = (low + 3) & !3;
    while at < sp {
        // SAFETY: free RAM between the end of the statics and the stack.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// Bytes of stack used at most since [`paint`].
pub fn used() -> usize {
    let (low, top) = bounds();
    let mut at = (low + 3) & !3;
    // SAFETY: reads of RAM between the statics and the stack top.
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    top - at
}

/// Bytes of statics (`.data` and `.bss`).
pub fn static_ram() -> usize {
    let (low, _) = bounds();
    low - core::ptr::addr_of!(__sdata) as usize
}
